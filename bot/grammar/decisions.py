"""Verbs of the decision log: decide, decisions, supersede, ask."""

from __future__ import annotations

import re
from datetime import datetime

from msgspec import Struct

from bot.grammar import tokens
from bot.grammar.command import Verb
from bot.messages.mrkdwn import code_text
from labmate.errors import UsageError
from labmate.quoting import MAX_MODEL_VERSION

MAX_DECISION = 3000
HEX = re.compile(r"^[0-9a-fA-F]+$")
WORD = re.compile(r"\w", re.UNICODE)
"""What the search looks for (models/search.py reads `\\w+` words; the rest is punctuation)."""
MIN_PREFIX = 8
MODEL_REF = re.compile(r"^(?P<name>[\w.\-]+?)(?:/(?P<version>[0-9]+)|/?@(?P<alias>[\w\-]+))$")
MAX_REF = 256
LINK_KEYS = ("run", "exp", "model")


class DecideArgs(Struct, frozen=True):
    text: str
    tags: tuple[str, ...]
    links: tuple[tuple[str, str], ...]


class SearchArgs(Struct, frozen=True):
    query: str
    tags: tuple[str, ...]
    author: str | None
    since: datetime | None


class SupersedeArgs(Struct, frozen=True):
    old_id: int
    decision: DecideArgs


class AskArgs(Struct, frozen=True):
    question: str


def link_ref(key: str, value: str) -> tuple[str, str]:
    if len(value) > MAX_REF:
        raise UsageError(f"`{key}:{value[:40]}…` is too long to be an MLflow reference.")
    if key == "run":
        # A full id, a unique id prefix (8+) or a run name: the link job resolves it against
        # MLflow and stores the full id.
        if HEX.match(value) and len(value) >= MIN_PREFIX:
            return ("run", value.lower())
        return ("run", value)
    if key == "model":
        match = MODEL_REF.match(value)
        if not match:
            raise UsageError(
                f"`model:{value}` is not a registered model version. "
                "Use `model:<name>/<version>` or `model:<name>@<alias>`, e.g. `model:sales-agent/3` "
                "or `model:sales-agent@production`."
            )
        name, version, alias = match.group("name", "version", "alias")
        if version and int(version) > MAX_MODEL_VERSION:
            raise UsageError(
                f"`model:{value[:120]}` names version {version[:40]}, and no model has that many: MLflow counts versions "
                f"from 1. Use a version that exists, or an alias: `model:{name}@production`."
            )
        return ("model", f"{name}/{version}" if version else f"{name}@{alias}")
    return ("experiment", value)


def parse_decide(rest: str, now: datetime) -> DecideArgs:
    parts = tokens.split(rest, LINK_KEYS, unquote=False)
    text = " ".join(parts.words).strip()
    if not text:
        raise UsageError(
            "A decision needs some text saying what was decided.",
            hint="e.g. `decide ship the candidate: better val_f1 and no new failures #release`",
        )
    if len(text) > MAX_DECISION:
        raise UsageError(
            f"That decision is {len(text):,} characters; the most a decision can hold is {MAX_DECISION:,}. "
            "Shorten it, or link to a document."
        )
    links = tuple(dict.fromkeys(link_ref(key, value) for key, value in parts.options))
    return DecideArgs(text=text, tags=tuple(dict.fromkeys(parts.tags)), links=links)


def parse_search(rest: str, now: datetime) -> SearchArgs:
    parts = tokens.split(rest, ("by", "since"), unquote=False)
    author: str | None = None
    since: datetime | None = None
    for key, value in parts.options:
        if key == "by":
            author = tokens.user_ref(value)
        else:
            since = tokens.since(value, now)
    query = " ".join(parts.words)
    if query and not WORD.search(query):
        raise UsageError(
            f"{code_text(query[:40])} has no words to search for: the decision log is searched by words, "
            "not punctuation.",
            hint="`decisions` alone lists the latest ten; or search for a word (`decisions bigram`), "
            "a tag (`decisions #release`) or a person (`decisions by:@dana`).",
        )
    return SearchArgs(query, tuple(parts.tags), author, since)


def parse_supersede(rest: str, now: datetime) -> SupersedeArgs:
    head, _, tail = rest.strip().partition(" ")
    if not re.fullmatch(r"#?[0-9]{1,12}", head):
        raise UsageError(
            f"`{head or '(nothing)'}` is not a decision id. Say which decision is replaced, then the new text.",
            hint="e.g. `supersede 12 ship the candidate after all: the p0 failure was a flaky test`",
        )
    if not tail.strip():
        raise UsageError(
            f"Superseding decision #{head.lstrip('#')} needs the new decision's text after its id.",
            hint=f"e.g. `supersede {head.lstrip('#')} ship the candidate after all: the p0 failure was a flaky test`",
        )
    return SupersedeArgs(int(head.lstrip("#")), parse_decide(tail, now))


def parse_ask(rest: str, now: datetime) -> AskArgs:
    question = rest.strip()
    if not question:
        raise UsageError("Ask me something, e.g. `ask why did we pick the candidate model?`")
    return AskArgs(question)


VERBS = (
    Verb(
        name="decide",
        summary="Log a team decision, with tags and links to MLflow runs, experiments and models.",
        usage="decide <text> [#tag …] [run:<run>] [exp:<experiment>] [model:<name>/<version> | model:<name>@<alias>]",
        examples=(
            "decide ship sales-agent v3: +4 pts val_f1, no new p0 failures #release model:sales-agent/3",
            "decide drop the bigram features, they overfit #features run:0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        ),
        access="write",
        parse=parse_decide,
        details="Stored at once and answered with its id. A run is a full id, a unique id prefix (8 characters "
        "or more) or a run name (within `exp:` when given); quote names with spaces (`exp:\"wine quality\"`). "
        "Runs and model versions are checked against MLflow in the background and a run is stored by its "
        "full id; a missing one is reported in the thread and the decision is kept. Tags are `#words` in "
        "any script (`#リリース`).",
    ),
    Verb(
        name="decisions",
        summary="Search the decision log (no query: the latest ten).",
        usage="decisions [<query>] [#tag] [by:@user] [since:7d]",
        examples=("decisions bigram features", "decisions #release since:30d", "decisions by:@dana"),
        access="read",
        parse=parse_search,
        details="Best matches first, newest first on ties. A replaced decision is marked and shown "
        f"with its replacement. Time windows: {tokens.SINCE_HELP}.",
    ),
    Verb(
        name="supersede",
        summary="Record a new decision that replaces an old one.",
        usage="supersede <id> <text> [#tag …] [run:…] [exp:…] [model:…]",
        examples=("supersede 12 keep the bigram features after all: the overfit was a leak #features",),
        access="author_or_admin",
        parse=parse_supersede,
        details="Allowed for the old decision's author, the admins, and whoever labmate.toml names for `supersede`.",
    ),
    Verb(
        name="ask",
        summary="Ask in plain words about runs (best, failed, by whom, since when) or past decisions.",
        usage="ask <question>",
        examples=(
            "ask which run had the best val_f1 in sales-agent last week?",
            "ask show failed runs in sales-agent since monday",
            "ask why did we drop bigrams?",
        ),
        access="read",
        parse=parse_ask,
        details="The answer says how the question was understood, so you can correct it; a question about runs "
        "becomes `best`, `runs` or `summary`, anything else searches the decision log. Mentioning the bot "
        "(`@labmate why did we drop bigrams?`) does the same and answers in thread.",
    ),
)
