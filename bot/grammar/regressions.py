"""Verbs of regression runs from chat: regress, regressions, promote. Pure: the shape of the command is
checked here; the suite (its folder, its file, its targets) by the handler."""

from __future__ import annotations

import re
import shlex
from datetime import datetime

from msgspec import Struct

from bot.grammar import tokens
from bot.grammar.command import Verb
from labmate.errors import UsageError

REGRESS_EXAMPLE = "regress sales-agent candidate:models:/sales-agent@candidate tag:p0"
OPTIONS = ("candidate", "baseline", "tag", "workers")
RUN_ID = re.compile(r"^#?[Rr]?(?P<id>[0-9]{1,12})$")
SLACK_LINK = re.compile(r"^<(?P<url>[^|>]+)(?:\|[^>]*)?>$")


class RegressArgs(Struct, frozen=True):
    suite: str
    candidate: str | None = None
    baseline: str | None = None
    tags: tuple[str, ...] = ()
    workers: int | None = None


class RegressionsArgs(Struct, frozen=True):
    suite: str | None = None
    since: datetime | None = None


class PromoteArgs(Struct, frozen=True):
    run_id: int


def _unlinked(value: str) -> str:
    """Slack turns a URL typed in a command into `<http://x|x>`: the target is the URL itself."""
    match = SLACK_LINK.match(value)
    return match.group("url") if match else value


def parse_regress(rest: str, now: datetime) -> RegressArgs:
    if re.search(r"[\r\n]", rest):
        raise UsageError("`regress` takes one line; I found a line break.", hint=f"e.g. `{REGRESS_EXAMPLE}`")
    try:
        words = shlex.split(rest, posix=True)
    except ValueError:
        raise UsageError("A quote in your command isn't closed.", hint=f"e.g. `{REGRESS_EXAMPLE}`") from None
    suite: str | None = None
    found: dict[str, str] = {}
    tags: list[str] = []
    workers: int | None = None
    for word in words:
        key, sep, value = word.partition(":")
        key = key.lower()
        if sep and key in OPTIONS:
            if not value:
                raise UsageError(f"`{key}:` needs a value right after the colon.", hint=f"e.g. `{REGRESS_EXAMPLE}`")
            if key == "tag":
                named = [t for t in value.split(",") if t]
                if not named:
                    raise UsageError(f"`tag:{value[:20]}` names no tag: write one right after the colon, e.g. "
                                     "`tag:p0` (several: `tag:p0,p1`).", hint=f"e.g. `{REGRESS_EXAMPLE}`")
                tags.extend(named)
            elif key == "workers":
                if not re.fullmatch(r"[0-9]+", value):
                    raise UsageError(f"`workers:{value[:20]}` needs a whole number of workers, e.g. `workers:2`.")
                if int(value) < 1:
                    raise UsageError(f"`workers:{value[:20]}` must be at least 1, e.g. `workers:2`.")
                if workers is not None:
                    raise UsageError(f"`workers:` is given twice (`workers:{workers}`, `workers:{value[:20]}`): give it once.")
                workers = int(value)
            else:
                if key in found:
                    raise UsageError(f"`{key}:` is given twice; name one {key} target.")
                found[key] = _unlinked(value)
            continue
        if suite is None:
            suite = _unlinked(word)
            continue
        shown = word if len(word) <= 60 else word[:60] + "…"
        raise UsageError(
            f"I don't understand `{shown}`: after the suite, write `candidate:<uri>`, `baseline:<uri>`, "
            "`tag:<tag>` or `workers:N`.",
            hint=f"e.g. `{REGRESS_EXAMPLE}`",
        )
    if suite is None:
        raise UsageError("Which suite? Name it first: `regress <suite> …`.", hint=f"e.g. `{REGRESS_EXAMPLE}`")
    return RegressArgs(suite, found.get("candidate"), found.get("baseline"), tuple(dict.fromkeys(tags)), workers)


def parse_regressions(rest: str, now: datetime) -> RegressionsArgs:
    split = tokens.split(rest, ("since",))
    since = None
    for key, value in split.options:
        if key == "since":
            since = tokens.since(value, now)
    if len(split.words) > 1 or split.tags:
        raise UsageError("`regressions` takes one suite name and `since:`.", hint="e.g. `regressions sales-agent since:7d`")
    return RegressionsArgs(split.words[0] if split.words else None, since)


def parse_promote(rest: str, now: datetime) -> PromoteArgs:
    words = rest.split()
    hint = "e.g. `promote R12`; `regressions` lists the runs."
    if len(words) > 1:
        raise UsageError(f"`promote` takes one regression run; you named {len(words)}. Promote them one at a time.",
                         hint=hint)
    match = RUN_ID.match(words[0]) if words else None
    if match is None:
        said = f" (`{words[0][:40]}` is not one)" if words else ""
        raise UsageError(f"Say which regression run to promote: its id (`R12`, on its card){said}.", hint=hint)
    return PromoteArgs(int(match.group("id")))


VERBS = (
    Verb(
        name="regress",
        summary="Run a regression suite's conversations against a candidate (and a baseline) on the workers.",
        usage="regress <suite> [candidate:<uri>] [baseline:<uri>] [tag:<tag> …] [workers:N]",
        examples=(REGRESS_EXAMPLE, "regress sales-agent tag:pricing workers:2"),
        access="write",
        parse=parse_regress,
        details="The suite is a name or a file in the configured suites folder (`conversations/`). Targets "
        "default to the suite's own; from chat they are MLflow models (`models:/name@alias`, `models:/name/3`, "
        "`runs:/<run id>/model`) unless labmate.toml allows more for the suite. One card shows the progress "
        "and then the verdict, new failures and fixes first; the report is logged to MLflow "
        "(experiment `labmate-regressions`). When the gate passes, Promote moves the model alias to the candidate.",
    ),
    Verb(
        name="regressions",
        summary="Past regression runs and their verdicts (of one suite, since a time).",
        usage="regressions [<suite>] [since:<when>]",
        examples=("regressions", "regressions sales-agent since:7d"),
        access="read",
        parse=parse_regressions,
    ),
    Verb(
        name="promote",
        summary="Move the model alias to a passed regression run's candidate (the card's Promote button).",
        usage="promote <regression run id>",
        examples=("promote R12",),
        access="write",
        parse=parse_promote,
        details="Only when the run passed its gate, its candidate is a registered model version and no newer "
        "run of the suite failed or was promoted. Who may promote is set in labmate.toml (`[regress] promoters`; admins always). "
        "Logs a decision linked to both model versions and the run.",
    ),
)
