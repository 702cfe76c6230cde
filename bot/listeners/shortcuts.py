"""Message shortcut "Log as decision": opens a modal pre-filled with the message."""

from __future__ import annotations

import json
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import access, dispatch, grammar
from bot.grammar.decisions import MAX_DECISION
from bot.listeners import slack_messages
from bot.origin import Origin
from bot.replies import send_reply
from labmate.settings import Settings, get_settings

SHORTCUT_ID = "log_decision"
MODAL_ID = "log_decision_modal"


def modal(message_text: str, metadata: dict[str, str]) -> dict[str, Any]:
    text_block: dict[str, Any] = {
        "type": "input",
        "block_id": "text",
        "label": {"type": "plain_text", "text": "What was decided"},
        "element": {
            "type": "plain_text_input",
            "action_id": "value",
            "multiline": True,
            "max_length": MAX_DECISION,
            "initial_value": message_text[:MAX_DECISION],
        },
    }
    if len(message_text) > MAX_DECISION:
        text_block["hint"] = {
            "type": "plain_text",
            "text": f"The message is {len(message_text):,} characters and a decision holds {MAX_DECISION:,}: "
            "only its beginning is here. Shorten it, or link to a document.",
        }
    return {
        "type": "modal",
        "callback_id": MODAL_ID,
        "private_metadata": json.dumps(metadata),
        "title": {"type": "plain_text", "text": "Log as decision"},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            text_block,
            {
                "type": "input",
                "block_id": "tags",
                "optional": True,
                "label": {"type": "plain_text", "text": "Tags"},
                "hint": {"type": "plain_text", "text": "Words separated by spaces, e.g. release features"},
                "element": {"type": "plain_text_input", "action_id": "value"},
            },
            {
                "type": "input",
                "block_id": "links",
                "optional": True,
                "label": {"type": "plain_text", "text": "MLflow links"},
                "hint": {
                    "type": "plain_text",
                    "text": "e.g. run:<run id> exp:sales-agent model:sales-agent/3 model:sales-agent@production",
                },
                "element": {"type": "plain_text_input", "action_id": "value"},
            },
        ],
    }


def refuse_logged_again(channel: str, ts: str) -> None:
    """The form isn't opened for a message logged already: saving it would change nothing."""
    from bot.handlers.decisions import already_logged
    from models import decision as decisions
    from models.db import session_scope

    with session_scope() as session:
        found = decisions.find_by_source(session, channel=channel, source_ts=ts)
        if found is not None:
            raise already_logged(found.id)


def _ack(ack: Ack) -> None:
    ack()


def open_modal(body: dict[str, Any], client: WebClient) -> None:
    message = body.get("message", {})
    channel = body.get("channel", {}).get("id", "")
    metadata = {"channel": channel, "ts": message.get("ts", ""), "author": message.get("user", "")}
    origin = Origin(
        user=(body.get("user") or {}).get("id", ""),
        channel=channel,
        source="slack",
        thread_ts=message.get("ts") or None,
        response_url=body.get("response_url"),
        ephemeral=True,
        idempotency_key=f"sc:{body['trigger_id']}",
    )

    def opener() -> None:
        """Refused before the form opens: not allowed to `decide`, or the message is logged already."""
        spec = grammar.lookup("decide")
        assert spec is not None
        access.check(spec, origin, get_settings().access)
        if metadata["ts"]:
            refuse_logged_again(channel, metadata["ts"])
        client.views_open(trigger_id=body["trigger_id"], view=modal(slack_messages.typed_text(message), metadata))

    reply = dispatch.open_form(origin, "decide", "decide (form opened)", opener)
    if reply.failed:
        send_reply(origin, reply)


def register(app: App, settings: Settings) -> None:
    app.shortcut(SHORTCUT_ID)(ack=_ack, lazy=[open_modal])
