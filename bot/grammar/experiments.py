"""Verbs that answer from MLflow: summary, compare, find, best, runs. Pure: names are checked
against MLflow by the jobs; here only the shape of the command is."""

from __future__ import annotations

import re
from datetime import datetime

from msgspec import Struct

from bot.grammar import tokens
from bot.grammar.command import Verb
from labmate.errors import UsageError

MAX_TOP = 20
MAX_LIMIT = 50
MAX_COMPARE = 6
MAX_NAME = 500
DIRECTIONS = {"asc": True, "ascending": True, "desc": False, "descending": False}
STATUSES = ("running", "scheduled", "finished", "failed", "killed")
OPS = ("!=", ">=", "<=", "=", ">", "<")
COND_EXAMPLE = "`where val_f1 > 0.8 and alpha < 0.01`"
FIND_EXAMPLE = "find sales-agent where val_f1 > 0.8 and alpha < 0.01 order by val_f1 desc limit 5"
NUMBER = re.compile(r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")
CONDITION = re.compile(
    r"^(?P<name>[A-Za-z_`][\w.\-`/ ]*?)\s*(?P<op>!=|>=|<=|==|=|>|<|\s(?:like|LIKE)\s)\s*(?P<value>.+)$"
)


class SummaryArgs(Struct, frozen=True):
    experiment: str
    metric: str | None = None
    top: int = 5
    ascending: bool | None = None
    """From `asc`/`desc` in the command; None: the declared or inferred direction."""


class CompareArgs(Struct, frozen=True):
    runs: tuple[str, ...]
    experiment: str | None = None
    """`compare a b in <experiment>`: run names are looked up in that experiment only."""


class Condition(Struct, frozen=True):
    name: str
    op: str
    value: str
    numeric: bool


class FindArgs(Struct, frozen=True):
    experiment: str
    conditions: tuple[Condition, ...] = ()
    order_by: str | None = None
    ascending: bool | None = None
    limit: int = 10


class BestArgs(Struct, frozen=True):
    experiment: str
    metric: str | None = None
    since: datetime | None = None
    ascending: bool | None = None


class RunsArgs(Struct, frozen=True):
    experiment: str
    status: str | None = None
    since: datetime | None = None
    user: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


def _experiment(word: str | None, usage: str) -> str:
    if not word:
        raise UsageError("Which experiment? Name it first.", hint=f"e.g. `{usage}`")
    if len(word) > MAX_NAME:
        raise UsageError(f"`{word[:40]}…` is longer than any experiment name ({MAX_NAME} characters at most).")
    return word


def _metric_and_direction(parts: tokens.Split, usage: str) -> tuple[str | None, bool | None]:
    """The words after the experiment: an optional metric and an optional `asc`/`desc`."""
    metric: str | None = None
    ascending: bool | None = None
    for index, word in enumerate(parts.words[1:], 1):
        direction = None if index in parts.quoted else DIRECTIONS.get(word.lower())
        if direction is not None and ascending is None:
            ascending = direction
        elif metric is None and direction is None:
            metric = word
        else:
            raise UsageError(f"I read `{word}` as an extra word.", hint=f"Usage: `{usage}`")
    return metric, ascending


def _count(syntax: str, value: str, most: int) -> int:
    """A count typed as `syntax` (`top:{}` or `limit {}`): the message shows it the way it is typed."""
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= most:
        raise UsageError(f"`{syntax.format(value)}` needs a whole number from 1 to {most}, e.g. `{syntax.format(5)}`.")
    return int(value)


SUMMARY_USAGE = "summary <experiment> [metric] [asc|desc] [top:N]"


def parse_summary(rest: str, now: datetime) -> SummaryArgs:
    parts = tokens.split(rest, ("top",))
    experiment = _experiment(parts.words[0] if parts.words else None, "summary sales-agent")
    metric, ascending = _metric_and_direction(parts, f"{SUMMARY_USAGE}`, e.g. `summary sales-agent val_f1 top:3")
    top = 5
    for _key, value in parts.options:
        top = _count("top:{}", value, MAX_TOP)
    return SummaryArgs(experiment, metric, top, ascending)


def parse_compare(rest: str, now: datetime) -> CompareArgs:
    parts = tokens.split(rest.replace(",", " "), ("exp",))
    experiment = next((value for _key, value in parts.options), None)
    words = [(w, i in parts.quoted) for i, w in enumerate(parts.words)]
    if len(words) >= 3 and words[-2][0].lower() == "in" and not words[-2][1]:
        experiment = words[-1][0]
        words = words[:-2]
    named = [w.removeprefix("run:") for w, quoted in words if quoted or w.lower() != "and"]
    refs = tuple(dict.fromkeys(named))
    if len(refs) == 1 and len(named) > 1:
        raise UsageError(f"You named `{refs[0][:80]}` {len(named)} times; compare needs two different runs.",
                         hint='e.g. `compare 3f9a2c1d 7be04a11` or `compare demo-baseline "demo unigram v2" in sales-agent`')
    if len(refs) < 2:
        raise UsageError(
            "Compare needs at least two runs: full run ids, unique id prefixes (8 characters or more) or run names.",
            hint='e.g. `compare 3f9a2c1d 7be04a11` or `compare demo-baseline "demo unigram v2" in sales-agent`',
        )
    if len(refs) > MAX_COMPARE:
        raise UsageError(f"I compare at most {MAX_COMPARE} runs at once; you named {len(refs)}.")
    return CompareArgs(refs, experiment)


def parse_condition(text: str) -> Condition:
    """`val_f1 > 0.8`, `alpha<0.01`, `status = 'FAILED'`, `run_name like 'demo-%'`."""
    text = text.strip()
    match = CONDITION.match(text)
    if not match:
        bad = next((tok for tok in re.findall(r"[^\w\s.'\"`%\-/]+", text) if tok not in OPS), None)
        if bad:
            why = f"`{bad}` is not a comparison; use one of {', '.join(f'`{o}`' for o in OPS)} or `like`"
        else:
            why = "it needs a name, a comparison and a value"
        raise UsageError(f"I can't read the condition `{text}`: {why}.", hint=f"e.g. {COND_EXAMPLE}")
    name, op, value = match.group("name").strip().strip("`"), match.group("op").strip().lower(), match.group("value")
    value = value.strip()
    if re.match(r"^[!<>=]", value):
        bad = op + value.split()[0][: len(value.split()[0]) - len(value.split()[0].lstrip("!<>="))]
        raise UsageError(
            f"I can't read the condition `{text}`: `{bad}` is not a comparison; "
            f"use one of {', '.join(f'`{o}`' for o in OPS)} or `like`.",
            hint=f"e.g. {COND_EXAMPLE}",
        )
    op = "=" if op == "==" else op.upper() if op == "like" else op
    quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
    if quoted:
        value = value[1:-1]
    elif " " in value:
        raise UsageError(
            f"I can't read the condition `{text}`: the value `{value}` has spaces; quote it, "
            "or join conditions with `and`.",
            hint=f"e.g. {COND_EXAMPLE}",
        )
    if "'" in value:
        raise UsageError(f"The value in `{text}` can't contain a quote `'`.")
    return Condition(name, op, value, bool(NUMBER.match(value)) and not quoted)


def _unquoted(text: str) -> str:
    """`text`, lower-cased, with what is inside quotes blanked out at the same positions: a keyword
    found in it (`and`, `order by`, `limit`) is one the user typed, not part of a value such as
    `run_name = 'speed limit 5'`."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", lambda m: m.group(0)[0] + "_" * (len(m.group(0)) - 2) + m.group(0)[0],
                  text.lower())


def _split_clauses(text: str) -> tuple[str, str, str]:
    """-> (conditions, order by, limit) parts of the text after the experiment name."""
    lowered = _unquoted(text)
    limit = ""
    match = re.search(r"(?:^|\s)limit\s+(\S+)\s*$", lowered)
    if match:
        limit = text[match.start(1) : match.end(1)]
        text, lowered = text[: match.start()], lowered[: match.start()]
    order = ""
    match = re.search(r"(?:^|\s)order\s+by(?:\s+|$)", lowered)
    if match:
        order = text[match.end() :].strip() or "(nothing)"
        text = text[: match.start()]
    return text.strip(), order, limit


def _conditions(body: str) -> list[str]:
    """`body` split at each `and` outside quotes."""
    parts, start = [], 0
    for match in re.finditer(r"\s+and\s+", _unquoted(body)):
        parts.append(body[start : match.start()])
        start = match.end()
    return [*parts, body[start:]]


def parse_find(rest: str, now: datetime) -> FindArgs:
    head, tail = tokens.head(rest)
    experiment = _experiment(head.text if head else None, FIND_EXAMPLE)
    where, order, limit_text = _split_clauses(tail)
    conditions: tuple[Condition, ...] = ()
    if where:
        first, _, body = where.partition(" ")
        if first.lower() != "where":
            raise UsageError(
                f"After the experiment I expected `where`, `order by` or `limit`, not `{first}`.",
                hint=f"e.g. `{FIND_EXAMPLE}`",
            )
        if not body.strip():
            raise UsageError("`where` needs at least one condition.", hint=f"e.g. {COND_EXAMPLE}")
        if re.search(r"(?:^|\s)and$", body.strip(), flags=re.IGNORECASE):
            raise UsageError("The conditions end with `and`: say the condition after it, or leave the `and` out.",
                             hint=f"e.g. `{FIND_EXAMPLE}`")
        if re.search(r"\s(?:limit|order\s+by)\s", f" {_unquoted(body)} "):
            raise UsageError("`limit` and `order by` come once each, after the conditions (`order by` first).",
                             hint=f"e.g. `{FIND_EXAMPLE}`")
        conditions = tuple(parse_condition(c) for c in _conditions(body.strip()))
    order_by: str | None = None
    ascending: bool | None = None
    if order:
        words = order.split()
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")) or words[0] == "(nothing)":
            raise UsageError(
                f"I can't read `order by {order}`: say a metric, then `asc` or `desc`.",
                hint="e.g. `order by val_f1 desc`",
            )
        order_by = words[0]
        ascending = None if len(words) == 1 else words[1].lower() == "asc"
    limit = _count("limit {}", limit_text, MAX_LIMIT) if limit_text else 10
    return FindArgs(experiment, conditions, order_by, ascending, limit)


BEST_USAGE = "best <experiment> [metric] [asc|desc] [since:7d]"


def parse_best(rest: str, now: datetime) -> BestArgs:
    parts = tokens.split(rest, ("since",))
    experiment = _experiment(parts.words[0] if parts.words else None, "best sales-agent val_f1")
    metric, ascending = _metric_and_direction(parts, f"{BEST_USAGE}`, e.g. `best sales-agent val_f1")
    since = None
    for _key, value in parts.options:
        since = tokens.since(value, now)
    return BestArgs(experiment, metric, since, ascending)


def parse_runs(rest: str, now: datetime) -> RunsArgs:
    parts = tokens.split(rest, ("status", "since", "by", "tag"))
    if len(parts.words) != 1:
        extra = f"I read `{parts.words[1][:40]}` as an extra word: `runs` takes one experiment (quote a name with spaces). " \
            if len(parts.words) > 1 else ""
        raise UsageError(
            f"{extra}Usage: `runs <experiment> [status:failed] [since:7d] [by:@user] [tag:key=value]`.",
            hint="e.g. `runs sales-agent status:failed since:monday`",
        )
    experiment = _experiment(parts.words[0], "runs sales-agent status:failed")
    status = user = None
    since = None
    tags: list[tuple[str, str]] = []
    for key, value in parts.options:
        if key == "status":
            if value.lower() not in STATUSES:
                raise UsageError(f"`status:{value}` is not a run status. Use one of: {', '.join(STATUSES)}.")
            status = value.upper()
        elif key == "since":
            since = tokens.since(value, now)
        elif key == "by":
            user = tokens.user_ref(value)
        else:
            tag_key, sep, tag_value = value.partition("=")
            if not sep or not tag_key:
                raise UsageError(f"`tag:{value}` needs a key and a value, e.g. `tag:team=nlp`.")
            tags.append((tag_key, tag_value))
    return RunsArgs(experiment, status, since, user, tuple(tags))


VERBS = (
    Verb(
        name="summary",
        summary="How an experiment is going: run counts, the top runs, the best run's gain, a chart.",
        usage=SUMMARY_USAGE,
        examples=("summary sales-agent", 'summary "/Users/dana@example.com/wine quality" rmse asc top:3'),
        access="read",
        parse=parse_summary,
        details="An experiment is its name (quote it when it has spaces), its id, or an unambiguous start of "
        "its name. Ranks by the experiment's primary metric (labmate.toml `[primary_metrics]`, or the "
        "experiment's MLflow tag `labmate.primary_metric`), else the metric most of its runs logged. The "
        "direction is `asc`/`desc` when given, else the experiment's tag `labmate.direction.<metric>`, "
        "labmate.toml `[metric_directions]`, or the metric's name (`loss`, `error`, `rank`, … are lower-is-"
        "better); the answer says which. Nested runs are ranked with their parent shown as their group.",
    ),
    Verb(
        name="compare",
        summary="Compare runs: params that differ, metrics with deltas, overlaid metric histories.",
        usage="compare <run> <run> [<run> …] [in <experiment>]",
        examples=("compare 3f9a2c1d 7be04a11", "compare demo-baseline demo-unigram-v2 in sales-agent"),
        access="read",
        parse=parse_compare,
        details="A run is a full id, a unique id prefix of 8 characters or more, or a run name (quoted when it "
        "has spaces; `in <experiment>` looks names up in that experiment only).",
    ),
    Verb(
        name="find",
        summary="Find runs by metrics, params, tags and attributes.",
        usage="find <experiment> [where <condition> [and …]] [order by <metric> [asc|desc]] [limit N]",
        examples=(FIND_EXAMPLE, "find sales-agent where status = FAILED"),
        access="read",
        parse=parse_find,
        details="Names are checked against the experiment; `metrics.`, `params.`, `tags.` or `attributes.` "
        "prefixes settle a name used twice. Quote a value that has spaces (`run_name = 'speed limit 5'`); "
        "`start_time` and `end_time` take a date or a date and time in UTC (`start_time > 2026-11-01`).",
    ),
    Verb(
        name="best",
        summary="The best run of an experiment by a metric.",
        usage=BEST_USAGE,
        examples=("best sales-agent", "best sales-agent val_f1 since:7d", "best grid-search rank_test_score asc"),
        access="read",
        parse=parse_best,
    ),
    Verb(
        name="runs",
        summary="List an experiment's runs, newest first.",
        usage="runs <experiment> [status:failed] [since:7d] [by:@user] [tag:key=value]",
        examples=("runs sales-agent status:failed", "runs sales-agent by:@dana since:monday"),
        access="read",
        parse=parse_runs,
        details=f"Time windows: {tokens.SINCE_HELP}.",
    ),
)
