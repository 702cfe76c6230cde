"""The "Log as decision" modal's submission: validate, store with the permalink, confirm in thread."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import dispatch
from bot.listeners import logging_decisions, slack_messages
from bot.listeners.shortcuts import MODAL_ID
from bot.origin import Origin
from bot.replies import send_reply
from labmate.errors import LabmateError
from labmate.settings import Settings


def _value(values: dict[str, Any], block: str) -> str:
    return (values.get(block, {}).get("value", {}).get("value") or "").strip()


def submitted_text(values: dict[str, Any]) -> str:
    tags = " ".join("#" + t.lstrip("#") for t in _value(values, "tags").replace(",", " ").split())
    return " ".join(part for part in (_value(values, "text"), tags, _value(values, "links")) if part)


def submission_key(view: dict[str, Any], text: str) -> str:
    """A submission refused with a field error keeps its view's id and hash when corrected and sent
    again: the text tells that new submission from Slack's repeat of the same one."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return f"view:{view['id']}:{view.get('hash', '')}:{digest}"


def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
    metadata = json.loads(view.get("private_metadata") or "{}")
    channel, ts = metadata.get("channel", ""), metadata.get("ts", "")
    text = submitted_text(view["state"]["values"])
    origin = Origin(
        user=body["user"]["id"],
        channel=channel,
        source="slack",
        thread_ts=ts or None,
        idempotency_key=submission_key(view, text),
    )
    try:
        args = logging_decisions.parse(text)
    except LabmateError as exc:
        dispatch.refuse(exc, origin, f"decide {text}".strip(), verb="decide")  # Saved again: refused and audited again
        block = "links" if any(k in exc.message for k in ("run:", "model:", "exp:")) else "text"
        ack(response_action="errors", errors={block: exc.message[:150]})
        return
    reply = logging_decisions.store(
        args,
        origin,
        author=metadata.get("author") or origin.user,
        permalink=slack_messages.permalink(client, channel, ts) if ts else None,
        source_ts=ts or None,
    )
    if reply.failed:
        ack(response_action="errors", errors={"text": str(reply.context.get("message", ""))[:150]})
        return
    ack()
    if reply.outcome != "duplicate" and channel:
        send_reply(origin, reply)


def register(app: App, settings: Settings) -> None:
    app.view(MODAL_ID)(on_submit)
