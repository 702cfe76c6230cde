"""Ranked full-text search over decisions: FTS5 (BM25) on SQLite, tsvector + GIN on PostgreSQL.

User text never reaches the query language as syntax: on SQLite every word becomes a quoted
FTS5 string, on PostgreSQL it goes through `websearch_to_tsquery`, which accepts any input.
All words must match; when that finds nothing, any word may (still ranked). Every match is
ranked: the answer is the top ten of the whole log (docs/perf/search.md has the figures). Setting
CANDIDATES ranks only the newest that-many matches instead (cheaper for very common words).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from msgspec import Struct, structs
from sqlalchemy import DateTime, TextClause, bindparam, select, text
from sqlalchemy.orm import Session

from models.decision import Decision, DecisionLink, DecisionTag, get_many

WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 16
CANDIDATES: int | None = None
"""None: rank every match. A number: rank only the newest this-many matches (filters still apply first)."""


class Filters(Struct, frozen=True):
    tags: tuple[str, ...] = ()
    author: str | None = None
    since: datetime | None = None
    links: tuple[str, ...] = ()
    """Link kinds (`model`, `run`, `experiment`) a decision must each have."""


class Hit(Struct, frozen=True):
    decision: Decision
    score: float
    replacement: Decision | None = None


def _words(query: str) -> list[str]:
    return WORD.findall(query)[:MAX_WORDS]


def _utc(value: datetime) -> datetime:
    """SQLite stores wall-clock UTC text: compare instants, whatever zone `since` came in."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _statement(sql: str, params: dict[str, object]) -> TextClause:
    stmt = text(sql)
    if "since" in params:
        stmt = stmt.bindparams(bindparam("since", type_=DateTime(timezone=True)))
    return stmt


def _filter_sql(filters: Filters, params: dict[str, object]) -> str:
    clauses = []
    if filters.author:
        clauses.append("d.author = :author")
        params["author"] = filters.author
    if filters.since:
        clauses.append("d.created_at >= :since")
        params["since"] = _utc(filters.since)
    for i, tag in enumerate(filters.tags):
        clauses.append(f"EXISTS (SELECT 1 FROM decision_tags t{i} WHERE t{i}.decision_id = d.id AND t{i}.tag = :tag{i})")
        params[f"tag{i}"] = tag
    for i, kind in enumerate(filters.links):
        clauses.append(f"EXISTS (SELECT 1 FROM decision_links l{i} WHERE l{i}.decision_id = d.id AND l{i}.kind = :link{i})")
        params[f"link{i}"] = kind
    return "".join(f" AND {c}" for c in clauses)


def _sqlite_ids(session: Session, words: list[str], filters: Filters, limit: int, any_word: bool) -> list[tuple[int, float]]:
    joiner = " OR " if any_word else " "
    match = joiner.join('"' + w.replace('"', '""') + '"' for w in words)
    params: dict[str, object] = {"match": match, "limit": limit}
    cap = ""
    if CANDIDATES is not None:
        params["candidates"] = max(CANDIDATES, limit)
        cap = " ORDER BY decisions_fts.rowid DESC LIMIT :candidates"
    # FTS5 walks a term's postings in rowid order, so "the newest N matches" stops early and
    # bm25() runs on N rows, not on every row that contains a common word.
    sql = (
        "SELECT c.id, c.score FROM ("
        "SELECT d.id AS id, d.created_at AS created_at, bm25(decisions_fts) AS score FROM decisions_fts "
        "JOIN decisions d ON d.id = decisions_fts.rowid "
        "WHERE decisions_fts MATCH :match" + _filter_sql(filters, params) + cap +
        ") AS c ORDER BY c.score, c.created_at DESC, c.id DESC LIMIT :limit"
    )
    return [(int(r[0]), -float(r[1])) for r in session.execute(_statement(sql, params), params)]


def _postgres_ids(session: Session, query: str, filters: Filters, limit: int, any_word: bool) -> list[tuple[int, float]]:
    params: dict[str, object] = {"q": query, "limit": limit}
    cap = ""
    if CANDIDATES is not None:
        params["candidates"] = max(CANDIDATES, limit)
        cap = " ORDER BY d.id DESC LIMIT :candidates"
    tsquery = "websearch_to_tsquery('english', :q)"
    if any_word:
        # A cast can't stand as a FROM item on its own; it goes in a subselect below.
        tsquery = f"CAST(replace({tsquery}::text, '&', '|') AS tsquery)"
    # Rare words: the GIN index finds the few rows. Common words: walking the primary key
    # backwards finds the newest N matches early. Either way ts_rank_cd runs on at most N rows.
    sql = (
        "SELECT c.id, ts_rank_cd(c.search, c.q) AS score FROM ("
        f"SELECT d.id, d.created_at, d.search, query.q FROM decisions d, (SELECT {tsquery} AS q) AS query "
        "WHERE d.search @@ query.q" + _filter_sql(filters, params) + cap +
        ") AS c ORDER BY score DESC, c.created_at DESC, c.id DESC LIMIT :limit"
    )
    return [(int(r[0]), float(r[1])) for r in session.execute(_statement(sql, params), params)]


def latest(session: Session, *, filters: Filters = Filters(), limit: int = 10) -> list[Decision]:
    stmt = select(Decision).order_by(Decision.created_at.desc(), Decision.id.desc()).limit(limit)
    if filters.author:
        stmt = stmt.where(Decision.author == filters.author)
    if filters.since:
        stmt = stmt.where(Decision.created_at >= _utc(filters.since))
    for tag in filters.tags:
        stmt = stmt.where(Decision.tags.any(DecisionTag.tag == tag))
    for kind in filters.links:
        stmt = stmt.where(Decision.links.any(DecisionLink.kind == kind))
    return list(session.scalars(stmt))


def known_tags(session: Session, words: list[str]) -> list[str]:
    """The query words that are tags of some decision (`decisions release` finds `#release`)."""
    lowered = list(dict.fromkeys(w.lower() for w in words))
    if not lowered:
        return []
    found = set(session.scalars(select(DecisionTag.tag).where(DecisionTag.tag.in_(lowered)).distinct()))
    return [w for w in lowered if w in found]


def search(
    session: Session, *, query: str, filters: Filters = Filters(), limit: int = 10, any_word: bool = True
) -> list[Hit]:
    """Best matches first, newest first on ties; a superseded hit carries its replacement.

    A query word that is a tag also matches the decisions with that tag: those that have the tag
    and match the other words come first, then the text matches."""
    words = _words(query)
    if not words:
        return [Hit(d, 0.0) for d in latest(session, filters=filters, limit=limit)]
    tagged = [t for t in known_tags(session, words) if t not in filters.tags]
    if tagged:
        rest = [w for w in words if w.lower() not in tagged]
        by_tag = structs.replace(filters, tags=(*filters.tags, *tagged))
        hits = _search(session, " ".join(rest), by_tag, limit, any_word) if rest else [
            Hit(d, 0.0) for d in latest(session, filters=by_tag, limit=limit)
        ]
        seen = {h.decision.id for h in hits}
        text_hits = _search(session, query, filters, limit, any_word and not hits)
        hits += [h for h in text_hits if h.decision.id not in seen]
        return _with_replacements(session, [h.decision for h in hits[:limit]], {h.decision.id: h.score for h in hits})
    return _search(session, query, filters, limit, any_word)


def _search(session: Session, query: str, filters: Filters, limit: int, any_word_fallback: bool = True) -> list[Hit]:
    words = _words(query)
    if not words:
        return []
    postgres = session.get_bind().dialect.name == "postgresql"
    ranked: list[tuple[int, float]] = []
    for any_word in (False, True):
        if any_word and (len(words) < 2 or not any_word_fallback):
            break
        if postgres:
            ranked = _postgres_ids(session, " ".join(words), filters, limit, any_word)
        else:
            ranked = _sqlite_ids(session, words, filters, limit, any_word)
        if ranked:
            break
    return _with_replacements(session, get_many(session, ids=[i for i, _ in ranked]), dict(ranked))


def mentioning_any(session: Session, *, query: str, filters: Filters = Filters(), limit: int = 50) -> list[Hit]:
    """The decisions that mention any word of `query`, in their text (ranked) or as a tag (then, newest
    first): a wider net than `search`, whose tagged decisions must match the other words, for an
    answer that ranks them by how many of the words they mention (`words_matched`)."""
    words = _words(query)
    if not words:
        return []
    if session.get_bind().dialect.name == "postgresql":
        ranked = _postgres_ids(session, " ".join(words), filters, limit, True)
    else:
        ranked = _sqlite_ids(session, words, filters, limit, True)
    scores = dict(ranked)
    for tag in known_tags(session, words):
        for decision in latest(session, filters=structs.replace(filters, tags=(*filters.tags, tag)), limit=limit):
            scores.setdefault(decision.id, 0.0)
    ids = list(scores)[:limit]
    return _with_replacements(session, get_many(session, ids=ids), scores)


def words_matched(session: Session, *, words: list[str], ids: list[int]) -> dict[int, list[str]]:
    """Which of `words` each of these decisions matches the way `search` matches a word: in its
    text as the full-text index reads it (stemmed), or as one of its tags."""
    matched: dict[int, list[str]] = {i: [] for i in ids}
    if not ids:
        return matched
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        sql = "SELECT d.id FROM decisions d WHERE d.search @@ websearch_to_tsquery('english', :word) AND d.id IN :ids"
    else:
        sql = "SELECT rowid FROM decisions_fts WHERE decisions_fts MATCH :word AND rowid IN :ids"
    stmt = text(sql).bindparams(bindparam("ids", expanding=True))
    unique: dict[str, str] = {}
    for word in (w for q in words for w in _words(q)):
        unique.setdefault(word.lower(), word)
    for word in list(unique.values())[:MAX_WORDS]:
        query = word if postgres else '"' + word.replace('"', '""') + '"'
        found = {int(r[0]) for r in session.execute(stmt, {"word": query, "ids": ids})}
        tag = select(DecisionTag.decision_id).where(DecisionTag.tag == word.lower(), DecisionTag.decision_id.in_(ids))
        found.update(session.scalars(tag))
        for i in ids:
            if i in found:
                matched[i].append(word)
    return matched


def _with_replacements(session: Session, decisions: list[Decision], scores: dict[int, float]) -> list[Hit]:
    replacement_ids = [d.superseded_by for d in decisions if d.superseded_by]
    replacements = {d.id: d for d in get_many(session, ids=[i for i in replacement_ids if i is not None])}
    return [
        Hit(d, scores[d.id], replacements.get(d.superseded_by) if d.superseded_by else None) for d in decisions
    ]
