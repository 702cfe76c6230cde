"""The "Log as decision" modal's submission: each field checked on its own (a mistake is shown under
its field), the decision stored and acked; the permalink is looked up after the ack, so a slow Slack
API never holds the modal past Slack's 3 seconds."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import dispatch
from bot.grammar import tokens
from bot.grammar.decisions import LINK_KEYS, DecideArgs, link_ref
from bot.listeners import logging_decisions, slack_messages
from bot.listeners.shortcuts import MODAL_ID
from bot.messages.mrkdwn import unescape
from bot.origin import Origin
from bot.replies import send_reply
from labmate.errors import LabmateError, UsageError
from labmate.settings import Settings

FIELD_ERROR_CHARS = 150
RUN_URL = re.compile(r"^https?://\S+/runs/(?P<id>[0-9a-fA-F]{8,64})(?:[/?#]\S*)?$")
"""An MLflow run page, pasted as a link: `…/#/experiments/1/runs/3f9a…`."""


class FieldError(Exception):
    def __init__(self, block: str, message: str) -> None:
        super().__init__(message)
        self.block, self.message = block, message


def _value(values: dict[str, Any], block: str) -> str:
    return (values.get(block, {}).get("value", {}).get("value") or "").strip()


def submitted_text(values: dict[str, Any]) -> str:
    """The three fields as one `decide` command: what the audit row shows."""
    tags = " ".join("#" + t.lstrip("#") for t in _value(values, "tags").replace(",", " ").split())
    return " ".join(part for part in (_value(values, "text"), tags, _value(values, "links")) if part)


def submitted_args(values: dict[str, Any]) -> DecideArgs:
    """The decision: its text (with any #tags and links typed in it), plus the Tags and Links fields, each
    read as what its label says, so a word typed in one field never lands in another."""
    try:
        args = logging_decisions.parse(_value(values, "text"))
    except LabmateError as exc:
        raise FieldError("text", exc.message) from None
    tags = [_tag(word) for word in _value(values, "tags").replace(",", " ").split()]
    links = [_link(word) for word in _value(values, "links").split()]
    return DecideArgs(
        text=args.text,
        tags=tuple(dict.fromkeys([*args.tags, *tags])),
        links=tuple(dict.fromkeys([*args.links, *links])),
    )


def _tag(word: str) -> str:
    try:
        found = tokens.tag("#" + word.lstrip("#"))
    except LabmateError as exc:
        raise FieldError("tags", exc.message) from None
    if found is None:
        raise FieldError("tags", f"`{word[:40]}` isn't a tag: a tag is letters, digits, `_`, `.` and `-`, e.g. release.")
    return found


def _link(word: str) -> tuple[str, str]:
    run_page = RUN_URL.match(word)
    if run_page:
        return link_ref("run", run_page.group("id"))
    key, sep, value = word.partition(":")
    if not sep or key.lower() not in LINK_KEYS or not value or "//" in value[:2]:
        raise FieldError(
            "links",
            f"`{word[:60]}` isn't an MLflow link. Use run:<run id>, exp:<experiment> or model:<name>/<version>, "
            "or paste a run's MLflow page.",
        )
    try:
        return link_ref(key.lower(), value)
    except LabmateError as exc:
        raise FieldError("links", exc.message) from None


MENTION = re.compile(r"<([@#!])([^>|]+)(?:\|([^>]*))?>")
"""Only Slack's mentions: our messages also hold `<placeholders>`, which stay as they are (so this is
not slack_messages.readable, which reads every `<…>` of a message someone typed)."""


def field_text(message: str) -> str:
    """A message as a modal's field error shows it: plain text (Slack formats nothing there), short, cut
    at a sentence rather than in the middle of an example."""
    plain = MENTION.sub(lambda m: m.group(3) or ("#" if m.group(1) == "#" else "@") + m.group(2).removeprefix("subteam^"),
                        message)
    plain = unescape(plain.replace("`", ""))
    if len(plain) <= FIELD_ERROR_CHARS:
        return plain
    cut = plain[:FIELD_ERROR_CHARS]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > 0 else cut.rsplit(" ", 1)[0] + "…"


def submission_key(view: dict[str, Any], text: str) -> str:
    """A submission refused with a field error keeps its view's id and hash when corrected and sent
    again: the text tells that new submission from Slack's repeat of the same one."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return f"view:{view['id']}:{view.get('hash', '')}:{digest}"


def _metadata(view: dict[str, Any]) -> tuple[str, str, str]:
    metadata = json.loads(view.get("private_metadata") or "{}")
    return metadata.get("channel", ""), metadata.get("ts", ""), metadata.get("author", "")


def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
    channel, ts, author = _metadata(view)
    values = view["state"]["values"]
    text = submitted_text(values)
    origin = Origin(
        user=body["user"]["id"],
        channel=channel,
        source="slack",
        thread_ts=ts or None,
        idempotency_key=submission_key(view, text),
    )
    try:
        args = submitted_args(values)
    except FieldError as exc:
        dispatch.refuse(UsageError(exc.message), origin, f"decide {text}".strip(), verb="decide")  # audited each time
        ack(response_action="errors", errors={exc.block: field_text(exc.message)})
        return
    reply = logging_decisions.store(
        args, origin, author=author or origin.user, permalink=None, source_ts=ts or None, edited=True
    )
    if reply.failed:
        ack(response_action="errors", errors={"text": field_text(str(reply.context.get("message", "")))})
        return
    ack()
    if reply.outcome != "duplicate" and channel:
        send_reply(origin, reply)


def add_permalink(body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
    """After the ack: the logged message's permalink, for the decision lists' "message" link."""
    channel, ts, _ = _metadata(view)
    if not channel or not ts:
        return
    from models import decision as decisions
    from models.db import session_scope

    with session_scope() as session:
        decision = decisions.find_by_source(session, channel=channel, source_ts=ts)
        if decision is None or decision.permalink:
            return
    permalink = slack_messages.permalink(client, channel, ts)
    if permalink:
        with session_scope() as session:
            decisions.set_permalink(session, channel=channel, source_ts=ts, permalink=permalink)


def register(app: App, settings: Settings) -> None:
    app.view(MODAL_ID)(ack=on_submit, lazy=[add_permalink])
