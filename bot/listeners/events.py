"""Mentions answer in thread; the decision emoji logs a message; removing it changes nothing."""

from __future__ import annotations

import logging
import re
from typing import Any

from msgspec.structs import replace
from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import dispatch, grammar
from bot.listeners import logging_decisions, slack_messages
from bot.listeners.slack_origin import from_event
from bot.origin import EVENT_KEY, Origin, Reply
from bot.replies import send_reply
from labmate.errors import LabmateError
from labmate.settings import Settings

log = logging.getLogger(__name__)

LEADING_MENTIONS = re.compile(r"^(\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>\s*)+")


def _ack(ack: Ack) -> None:
    ack()


def mention_command(text: str) -> str:
    """`@labmate decisions #release` runs that command; anything else is a question."""
    question = LEADING_MENTIONS.sub("", text).strip()
    head = question.split(" ", 1)[0].lower()
    if head and grammar.lookup(head) is not None:
        return question
    return f"ask {question}" if question else "help"


def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
    origin = from_event(body, event)
    _answer(origin, dispatch.handle(mention_command(slack_messages.unescape(event.get("text", ""))), origin))


def _answer(origin: Origin, reply: Reply) -> None:
    """In the thread, except a refusal: it names who may (admins, user groups, as mentions), so it goes
    to the person alone (ephemeral, else a DM) instead of pinging them all in public."""
    if reply.outcome == "duplicate":
        return
    send_reply(replace(origin, ephemeral=True) if reply.outcome == "refused" else origin, reply)


class SlackDidNotAnswer(LabmateError):
    outcome = "error"  # ours (Slack's), not the user's


def _refuse_decision(exc: LabmateError, origin: Origin, text: str) -> None:
    """A reaction that logs nothing: one failed `decide` row and one answer (a retry is a duplicate)."""
    _answer(origin, dispatch.refuse(exc, origin, text, verb="decide"))


def on_reaction(body: dict[str, Any], event: dict[str, Any], client: WebClient, settings: Settings) -> None:
    item = event.get("item", {})
    if event.get("reaction") != settings.decision_emoji or item.get("type") != "message":
        return
    channel, ts = item.get("channel", ""), item.get("ts", "")
    origin = from_event(body, event)
    unread = f"decide (:{settings.decision_emoji}: on {channel}/{ts})"
    try:
        message = slack_messages.fetch(client, channel, ts)
    except slack_messages.SlackUnanswered:
        log.warning("Slack did not answer reading %s/%s for a decision reaction", channel, ts)
        _refuse_decision(
            SlackDidNotAnswer(
                "Slack didn't answer when I read that message, so nothing was logged.", hint="React again in a minute."
            ),
            origin,
            unread,
        )
        return
    except slack_messages.NotAMember:
        _refuse_decision(
            LabmateError("I can't read that message to log it; invite me to the channel and react again."), origin, unread
        )
        return
    if message is None:
        _refuse_decision(
            LabmateError("I can't find that message (was it deleted?), so nothing was logged."), origin, unread
        )
        return
    text = slack_messages.typed_text(message)
    try:
        args = logging_decisions.parse(text)
    except LabmateError as exc:
        _refuse_decision(exc, origin, f"decide {text}".strip())
        return
    reply = logging_decisions.store(
        args,
        origin,
        author=message.get("user") or event.get("item_user") or origin.user,
        permalink=slack_messages.permalink(client, channel, ts),
        source_ts=ts,
    )
    _answer(origin, reply)


def on_home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
    """The Home tab, rebuilt by a job each time it is opened (the Messages tab needs nothing)."""
    if event.get("tab", "home") != "home" or not event.get("user"):
        return
    from tasks.client import publish_home

    publish_home(event["user"], key=f"{EVENT_KEY}{body['event_id']}" if body.get("event_id") else None)


def register(app: App, settings: Settings) -> None:
    app.event("app_mention")(ack=_ack, lazy=[on_mention])
    app.event("app_home_opened")(ack=_ack, lazy=[on_home_opened])
    app.event("reaction_added")(
        ack=_ack,
        lazy=[lambda body, event, client: on_reaction(body, event, client, settings)],
    )

    @app.event("reaction_removed")
    def on_reaction_removed(ack: Ack) -> None:
        """Removing the emoji doesn't delete the decision: a log is only appended to."""
        ack()
