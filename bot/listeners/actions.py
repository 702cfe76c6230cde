"""Buttons (Slack block actions). Every labmate button is a typed command in disguise: its action id
is `lab:<verb>:<n>` and its value the rest of the command, so a click runs exactly what typing
`<verb> <value>` runs, through the same grammar, access check, audit row and job path, and the
terminal offers the same choice as a command. Acked at once; the answer (or a refusal) is shown to
the person who clicked, and whatever the command changes (a card) is edited by its job."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt import Ack, App

from bot import dispatch
from bot.origin import Origin
from bot.replies import left_to_its_job, send_reply
from labmate.settings import Settings

ACTION = re.compile(r"^lab:(?!choose:)([a-z]+)(?::.*)?$")
"""Every labmate button but a clean-up proposal's "Choose per run", which opens a modal (cleanup_modal.py)."""


def command_of(action: dict[str, Any]) -> str:
    """The command a button stands for: `lab:cancel:0` with value `L12` -> `cancel L12`."""
    match = ACTION.match(action.get("action_id", ""))
    verb = match.group(1) if match else ""
    return f"{verb} {action.get('value', '')}".strip()


def origin_of(body: dict[str, Any], action: dict[str, Any]) -> Origin:
    container = body.get("container") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id", "")
    message = body.get("message") or {}
    user = (body.get("user") or {}).get("id", "")
    # A button on the Home tab has no channel and no response_url: answer the clicker in a DM.
    in_a_channel = bool(channel or body.get("response_url"))
    return Origin(
        user=user,
        channel=channel if in_a_channel else user,
        source="slack",
        thread_ts=message.get("thread_ts") or container.get("message_ts"),
        response_url=body.get("response_url"),
        ephemeral=in_a_channel,
        idempotency_key=f"act:{action.get('action_ts', '')}:{action.get('action_id', '')}:{(body.get('user') or {}).get('id', '')}",
    )


def _ack(ack: Ack) -> None:
    ack()


def on_action(body: dict[str, Any], action: dict[str, Any]) -> None:
    """After the ack (a lazy listener): run the command; its answer goes to the clicker only."""
    origin = origin_of(body, action)
    reply = dispatch.handle(command_of(action), origin)
    if reply.outcome == "duplicate" or left_to_its_job(reply):
        return  # its job answers (and edits the card)
    send_reply(origin, reply)


def register(app: App, settings: Settings) -> None:
    app.action(ACTION)(ack=_ack, lazy=[on_action])
