"""Logging a Slack message as a decision: shared by the reaction and the modal."""

from __future__ import annotations

from datetime import UTC, datetime

from bot import dispatch
from bot.grammar.decisions import DecideArgs, parse_decide
from bot.handlers.decisions import log_message
from bot.origin import Origin, Reply


def parse(text: str) -> DecideArgs:
    """A NUL can't be stored (PostgreSQL refuses it in text) and never carries meaning in a message."""
    return parse_decide(text.replace("\x00", ""), datetime.now(UTC))


def store(
    args: DecideArgs, origin: Origin, *, author: str, permalink: str | None, source_ts: str | None, edited: bool = False
) -> Reply:
    """Access is checked for whoever logs it; the decision is credited to the message's author."""
    return dispatch.run(
        "decide",
        args,
        origin,
        args.text,
        handler=lambda a, o, session: log_message(
            session, a, o, permalink=permalink, source_ts=source_ts, author=author, edited=edited
        ),
    )
