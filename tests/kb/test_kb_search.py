"""Full-text search: filters, ranking, ties, and hostile query text on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import decision as decisions
from models import search
from models.db import session_scope
from models.decision import NewDecision
from models.search import Filters

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _create(url: str, text: str, *, author: str = "U1", tags: tuple[str, ...] = (), created_at: datetime = T0) -> int:
    with session_scope(url) as s:
        return decisions.create(s, new=NewDecision(text=text, author=author, tags=tags, created_at=created_at)).id


def _ids(url: str, query: str, filters: Filters = Filters(), limit: int = 10) -> list[int]:
    with session_scope(url) as s:
        return [h.decision.id for h in search.search(s, query=query, filters=filters, limit=limit)]


@pytest.fixture
def team_log(kb_url):
    """A small log with known authors, tags and times."""
    ids = {
        "bigram": _create(kb_url, "drop the bigram features, they overfit", author="U1", tags=("features",),
                          created_at=T0),
        "ship": _create(kb_url, "ship the candidate model to production", author="U2", tags=("release",),
                        created_at=T0 + timedelta(days=2, hours=3)),
        "tfidf": _create(kb_url, "keep tfidf features for the ranker", author="U2", tags=("features", "ranking"),
                         created_at=T0 + timedelta(days=5)),
        "rollback": _create(kb_url, "roll back the candidate: latency regressed", author="U3", tags=("release",),
                            created_at=T0 + timedelta(days=5, hours=1)),
    }
    return kb_url, ids


def test_words_must_all_match_before_any_word_may(team_log):
    url, ids = team_log
    assert _ids(url, "bigram overfit") == [ids["bigram"]]
    # "candidate production": only "ship" has both words, so it alone is returned.
    assert _ids(url, "candidate production") == [ids["ship"]]
    # No decision has both words: any word may match, still ranked.
    assert set(_ids(url, "bigram latency")) == {ids["bigram"], ids["rollback"]}
    assert _ids(url, "nonexistentword") == []


def test_stemming_matches_word_forms(team_log):
    url, ids = team_log
    assert _ids(url, "overfitting") == [ids["bigram"]]
    assert _ids(url, "regress") == [ids["rollback"]]
    assert _ids(url, "features") == _ids(url, "feature")


def test_tag_author_and_since_filters(team_log):
    url, ids = team_log
    assert set(_ids(url, "features")) == {ids["bigram"], ids["tfidf"]}
    assert _ids(url, "features", Filters(tags=("ranking",))) == [ids["tfidf"]]
    assert _ids(url, "features", Filters(tags=("features", "ranking"))) == [ids["tfidf"]]
    assert _ids(url, "features", Filters(tags=("release",))) == []
    assert _ids(url, "candidate", Filters(author="U3")) == [ids["rollback"]]
    assert _ids(url, "candidate", Filters(author="nobody")) == []
    # `since` within the same day as a decision: 2 days 2 hours in keeps "ship" (2 days 3 hours in).
    assert set(_ids(url, "candidate", Filters(since=T0 + timedelta(days=2, hours=2)))) == {ids["ship"], ids["rollback"]}
    assert _ids(url, "candidate", Filters(since=T0 + timedelta(days=2, hours=4))) == [ids["rollback"]]
    assert _ids(url, "candidate", Filters(since=T0 + timedelta(days=30))) == []
    combined = Filters(tags=("release",), author="U2", since=T0 + timedelta(days=1))
    assert _ids(url, "candidate", combined) == [ids["ship"]]


def test_since_filter_compares_instants_not_text(kb_url):
    """A decision created at 14:00 UTC is after a `since` of 13:00 UTC given in another time zone."""
    made = _create(kb_url, "calibrate the scores", created_at=T0 + timedelta(hours=2))
    plus_two = datetime(2026, 6, 1, 15, 0, tzinfo=timezone(timedelta(hours=2)))  # == 13:00 UTC
    assert _ids(kb_url, "calibrate", Filters(since=plus_two)) == [made]
    assert _ids(kb_url, "calibrate", Filters(since=T0 + timedelta(hours=3))) == []


def test_empty_query_lists_latest_with_filters(team_log):
    url, ids = team_log
    assert _ids(url, "") == [ids["rollback"], ids["tfidf"], ids["ship"], ids["bigram"]]
    assert _ids(url, "  ", limit=2) == [ids["rollback"], ids["tfidf"]]
    assert _ids(url, "", Filters(tags=("release",))) == [ids["rollback"], ids["ship"]]
    assert _ids(url, "", Filters(author="U2", since=T0 + timedelta(days=3))) == [ids["tfidf"]]


def test_more_relevant_first(kb_url):
    weak = _create(kb_url, "the drift dashboard moved to the new cluster, plus assorted cleanups of old jobs",
                   created_at=T0 + timedelta(days=3))
    strong = _create(kb_url, "drift drift drift: retrain weekly on drift alerts", created_at=T0)
    assert _ids(kb_url, "drift") == [strong, weak]


def test_newest_first_on_equal_scores(kb_url):
    same_text = "freeze the tokenizer vocabulary"
    middle = _create(kb_url, same_text, created_at=T0 + timedelta(days=1))
    oldest = _create(kb_url, same_text, created_at=T0)
    newest = _create(kb_url, same_text, created_at=T0 + timedelta(days=2))
    with session_scope(kb_url) as s:
        hits = search.search(s, query="tokenizer vocabulary")
    assert len({h.score for h in hits}) == 1, "identical texts must score the same"
    assert [h.decision.id for h in hits] == [newest, middle, oldest]


def test_limit_is_respected(kb_url):
    for i in range(15):
        _create(kb_url, f"sweep learning rate round {i}", created_at=T0 + timedelta(minutes=i))
    assert len(_ids(kb_url, "sweep", limit=10)) == 10
    assert len(_ids(kb_url, "sweep", limit=3)) == 3


HOSTILE = [
    '"',
    '"unbalanced',
    "*",
    "feat*",
    "NEAR(",
    "NEAR(bigram features, 2)",
    "((",
    "))",
    "(bigram",
    "'; DROP TABLE decisions; --",
    "OR",
    "bigram OR features",
    "AND NOT",
    "bigram AND NOT features",
    "-",
    "-bigram",
    "bigram -features",
    "^bigram",
    "text:bigram",
    "decisions_fts:bigram",
    "{text}: bigram",
    "\\",
    "%",
    "_",
    "ümlaut café naïve",
    "日本語のテキスト",
    "🚀🔥",
    "ship 🚀 it",
    "\x00bigram",
    "a\u200bb",
    "bigram\n\tfeatures\r",
    "::",
    "!@#$%^&*()",
    "& | ! <->",
    "'quoted'",
    "the",
    " ".join(["bigram"] * 100),
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_query_text_returns_results_or_nothing(team_log, query):
    url, ids = team_log
    with session_scope(url) as s:
        hits = search.search(s, query=query)
    assert all(h.decision.id in ids.values() for h in hits)
    with session_scope(url) as s:  # the table is still there
        assert len(search.latest(s)) == len(ids)


def test_operator_words_are_plain_words(team_log):
    url, ids = team_log
    # Operators in user text must not work as operators: `-features` is not "without features".
    assert set(_ids(url, "-features")) == {ids["bigram"], ids["tfidf"]}
    assert ids["bigram"] in _ids(url, "bigram AND NOT features")
    # `*` is not a prefix operator: "feat" is not a word of any decision.
    assert _ids(url, "feat*") == []
    assert _ids(url, "NEAR(bigram overfit)") == [ids["bigram"]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=200))
def test_any_text_never_raises_on_sqlite(migrated, query):
    with session_scope(migrated) as s:
        if not search.latest(s, limit=1):
            decisions.create(s, new=NewDecision(text="drop the bigram features, they overfit", author="U1"))
    with session_scope(migrated) as s:
        search.search(s, query=query)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=120))
def test_any_text_never_raises_on_postgres(postgres_url, query):
    with session_scope(postgres_url) as s:
        if not search.latest(s, limit=1):
            decisions.create(s, new=NewDecision(text="drop the bigram features, they overfit", author="U1"))
    with session_scope(postgres_url) as s:
        search.search(s, query=query)


def test_ranking_looks_at_the_newest_candidates_after_filters(kb_url, monkeypatch):
    """With a cap of 2 candidates: filters apply before the cap, and the newest matches are the ones ranked."""
    monkeypatch.setattr(search, "CANDIDATES", 2)
    tagged_old = _create(kb_url, "quantize quantize quantize the encoder", tags=("serving",), created_at=T0)
    newer = [_create(kb_url, f"quantize the decoder, round {i}", created_at=T0 + timedelta(days=i + 1)) for i in range(4)]
    assert _ids(kb_url, "quantize", Filters(tags=("serving",))) == [tagged_old]
    assert _ids(kb_url, "quantize", limit=2) == [newer[3], newer[2]]
    assert len(_ids(kb_url, "quantize", limit=10)) == 5  # never fewer candidates than asked for
    monkeypatch.setattr(search, "CANDIDATES", None)
    assert _ids(kb_url, "quantize", limit=2) == [tagged_old, newer[3]]  # uncapped, the best match wins


def test_the_default_ranks_the_whole_log(kb_url):
    """The best match is found however many newer decisions also match."""
    assert search.CANDIDATES is None
    best = _create(kb_url, "quantize quantize quantize the encoder", created_at=T0)
    for i in range(30):
        _create(kb_url, f"quantize the decoder, round {i}, and more words to make it longer", created_at=T0 + timedelta(hours=i + 1))
    assert _ids(kb_url, "quantize", limit=1) == [best]


def test_a_tag_is_found_as_a_word_with_tagged_decisions_first(kb_url):
    tagged = _create(kb_url, "ship the candidate", tags=("release",), created_at=T0)
    mentioned = _create(kb_url, "the release train leaves on friday", created_at=T0 + timedelta(days=1))
    _create(kb_url, "unrelated note", created_at=T0 + timedelta(days=2))
    assert _ids(kb_url, "release") == [tagged, mentioned]
    assert _ids(kb_url, "", Filters(tags=("release",))) == [tagged]
    assert _ids(kb_url, "candidate release") == [tagged]


def test_unicode_tags_and_words(kb_url):
    tagged = _create(kb_url, "候補モデルを出荷する", tags=("リリース",), created_at=T0)
    assert _ids(kb_url, "リリース") == [tagged]
    assert _ids(kb_url, "", Filters(tags=("リリース",))) == [tagged]


def test_asking_without_the_any_word_fallback_lists_nothing_unrelated(kb_url):
    _create(kb_url, "drop the bigram features, they overfit", created_at=T0)
    with session_scope(kb_url) as s:
        assert search.search(s, query="weather bigram", any_word=False) == []
        assert len(search.search(s, query="weather bigram")) == 1
