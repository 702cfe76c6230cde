"""Text -> typed Command, or a UsageError that says what would work. Pure: no I/O.

Every front (Slack, the shell, `labmate say`, tests) parses with `parse`; help is generated
from the same Verb table, so it lists exactly what parses.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from msgspec import Struct

from bot.grammar import cleanup, decisions, experiments, launches, regressions, watch
from bot.grammar.command import Command, Verb
from bot.grammar.decisions import AskArgs
from labmate.errors import TooLong, UsageError

MAX_INPUT = 4000
PREFIX = re.compile(r"^\s*/[\w-]+\s*")
ANSWERING_VERBS = frozenset({"best", "compare", "find", "regressions", "runs", "status", "summary"})
QUESTION_WORDS = frozenset(
    "what which who whom whose when where why how is are was were did do does can could should would will "
    "has have any".split()
)


class HelpArgs(Struct, frozen=True):
    verb: str | None


def _parse_help(rest: str, now: datetime) -> HelpArgs:
    name = rest.strip().lstrip("/") or None
    if name is not None and lookup(name) is None:
        raise unknown_verb(name)
    return HelpArgs(lookup(name).name if name else None)  # type: ignore[union-attr]


HELP = Verb(
    name="help",
    summary="List the commands, or explain one.",
    usage="help [<command>]",
    examples=("help", "help decide"),
    access="read",
    parse=_parse_help,
)

VERBS: tuple[Verb, ...] = (
    *decisions.VERBS,
    *experiments.VERBS,
    *launches.VERBS,
    *regressions.VERBS,
    *cleanup.VERBS,
    *watch.VERBS,
    HELP,
)
_BY_NAME = {name: verb for verb in VERBS for name in (verb.name, *verb.aliases)}


def lookup(name: str) -> Verb | None:
    return _BY_NAME.get(name.lower())


def verb_named(text: str) -> str:
    """The verb a command starts with (after `/lab`), or "": the audit row of a command that didn't parse
    still says which verb was tried."""
    words = text[:200].split(None, 2)
    if words and words[0].startswith("/"):
        words = words[1:]
    verb = lookup(words[0]) if words else None
    return verb.name if verb is not None else ""


def unknown_verb(name: str) -> UsageError:
    import difflib  # only a mistyped verb needs it (as in settings): not every process start

    close = difflib.get_close_matches(name.lower(), list(_BY_NAME), n=2, cutoff=0.6)
    shown = name if len(name) <= 40 else name[:40] + "…"
    suggestion = " Did you mean " + " or ".join(f"`{c}`" for c in close) + "?" if close else ""
    return UsageError(
        f"I don't know the command `{shown}`.{suggestion}",
        hint="`help` lists every command; a question (ending in `?`) is answered as `ask` would.",
    )


def is_question(text: str) -> bool:
    """A line that asks rather than commands: it starts with a question word or ends with `?`."""
    stripped = text.strip()
    first = stripped.split(None, 1)[0].lower().strip(",") if stripped else ""
    return stripped.endswith(("?", "？")) or first in QUESTION_WORDS


def strip_prefix(text: str, command: str = "/lab") -> str:
    """`/lab decide x` and `decide x` are the same in the shell and in `labmate say`."""
    stripped = text.strip()
    if stripped.startswith(command + " ") or stripped == command:
        return stripped[len(command) :].strip()
    return stripped


def parse(text: str, *, now: datetime | None = None) -> Command:
    if len(text) > MAX_INPUT:
        raise TooLong(
            f"That command is {len(text):,} characters long; the most I take is {MAX_INPUT:,}. "
            "Shorten it, or put the details in a thread and log a summary."
        )
    if "\x00" in text:
        raise UsageError(
            "Your command contains a NUL character (\\x00), which can't be stored. "
            "Remove it (it usually comes from a paste) and send the command again."
        )
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise UsageError(
            "Your command contains bytes that aren't valid UTF-8 (a terminal or a paste in another encoding), "
            "shown here as �. Retype those characters and send the command again."
        )
    stripped = text.strip()
    if not stripped:
        return Command("help", HelpArgs(None), text)
    head, _, rest = stripped.partition(" ")
    if head.startswith("/"):
        stripped = rest.strip()
        head, _, rest = stripped.partition(" ")
        if not head:
            return Command("help", HelpArgs(None), text)
    verb = lookup(head)
    if verb is None:
        if is_question(stripped):
            return Command("ask", AskArgs(stripped), text)
        raise unknown_verb(head)
    asked = verb.name in ANSWERING_VERBS and stripped.endswith(("?", "？"))
    try:
        # `best sales-agent?` is `best sales-agent`: the mark isn't part of the experiment's name
        return Command(verb.name, verb.parse(rest.rstrip("?？ ") if asked else rest, now or datetime.now(UTC)), text)
    except UsageError:
        # "best run in sales-agent?" starts with a verb but is a question: a command that only reads is
        # answered as one, while an acting verb's mistake keeps its own message.
        if asked:
            return Command("ask", AskArgs(stripped), text)
        raise
