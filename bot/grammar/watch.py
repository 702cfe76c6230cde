"""Verbs of run watch: watch, unwatch. Pure: the experiment is checked against MLflow by the job."""

from __future__ import annotations

import re
from datetime import datetime

from msgspec import Struct

from bot.grammar import tokens
from bot.grammar.command import Verb
from labmate.errors import UsageError

CHANNEL = re.compile(r"^(?:<#(?P<id>[CGD][A-Z0-9]{2,30})(?:\|(?P<label>[^>]*))?>|#(?P<name>[a-z0-9][a-z0-9_.-]{0,79})|#?(?P<bare>[CG][A-Z0-9]{8,30}))$")
WATCH_EXAMPLE = "watch sales-agent"
MAX_NAME = 500


class WatchArgs(Struct, frozen=True):
    experiment: str | None
    """None: list what this channel watches."""
    channel: str | None = None
    """Another channel's id (or `#name`) for the notices; None: this one."""


class UnwatchArgs(Struct, frozen=True):
    experiment: str
    channel: str | None = None


def channel_ref(word: str) -> str | None:
    """`<#C123|name>`, `<#C123>`, `C0123ABCD`, `#C0123ABCD` (typed in a terminal, as the usage's `#channel`
    reads; channel names are lower case) -> the id; `#name` -> `#name` (Slack posts to a name too)."""
    match = CHANNEL.match(word)
    if not match:
        return None
    return match.group("id") or match.group("bare") or f"#{match.group('name')}"


def _split(rest: str, verb: str) -> tuple[str | None, str | None]:
    found = tokens.words(rest)
    channel = None
    if len(found) >= 2 and not found[-1].quoted and channel_ref(found[-1].text) is not None:
        channel = channel_ref(found.pop().text)
    if len(found) > 1:
        stray = next((w for w in found[1:] if w.quoted or channel_ref(w.text) is None), None)
        if stray is None:
            raise UsageError(f"`{verb}` takes one channel: name just the one for the notices.",
                             hint=f"e.g. `{verb} sales-agent #ml-runs`")
        extra = stray.text
        if extra.startswith(("#", "<#")):
            raise UsageError(
                f"`{extra[:40]}` is not a channel I can post to: pick it from Slack's list (`#` then its name) "
                "or give its id (`C0123ABCD`).",
                hint=f"e.g. `{verb} sales-agent #ml-runs`",
            )
        raise UsageError(
            f"I read `{extra[:40]}` as an extra word: `{verb}` takes one experiment (quote a name with spaces) "
            "and, optionally, a channel.",
            hint=f'e.g. `{verb} sales-agent`, `{verb} "wine quality" #ml-runs`',
        )
    if not found:
        return None, None
    first = found[0]
    if not first.quoted and first.text.startswith(("#", "<#")):
        raise UsageError("Name the experiment first, then the channel.", hint=f"e.g. `{verb} sales-agent #ml-runs`")
    if len(first.text) > MAX_NAME:
        raise UsageError(f"`{first.text[:40]}…` is longer than any experiment name ({MAX_NAME} characters at most).")
    return first.text, channel


def parse_watch(rest: str, now: datetime) -> WatchArgs:
    experiment, channel = _split(rest, "watch")
    return WatchArgs(experiment, channel)


def parse_unwatch(rest: str, now: datetime) -> UnwatchArgs:
    experiment, channel = _split(rest, "unwatch")
    if experiment is None:
        raise UsageError("Which experiment should I stop watching?", hint="e.g. `unwatch sales-agent`; `watch` lists what this channel watches.")
    return UnwatchArgs(experiment, channel)


VERBS = (
    Verb(
        name="watch",
        summary="Post a notice here when a run of the experiment finishes, fails or is killed, and when one is a new best.",
        usage="watch [<experiment> [#channel]]",
        examples=(WATCH_EXAMPLE, 'watch "wine quality" #ml-runs', "watch"),
        access="write",
        parse=parse_watch,
        details="One short notice per run (key metrics, duration, link; the last lines of the error for a failure), "
        "checked every minute; a burst of runs ending together is one grouped message. With no experiment: what "
        "this channel watches. Nothing changes in the training code: labmate reads MLflow.",
    ),
    Verb(
        name="unwatch",
        summary="Stop the notices of an experiment in this channel (or the channel named).",
        usage="unwatch <experiment> [#channel]",
        examples=("unwatch sales-agent",),
        access="write",
        parse=parse_unwatch,
        details="Anyone in a channel may stop its notices there; from another channel (or the terminal), only "
        "whoever started the watch and the admins.",
    ),
)
