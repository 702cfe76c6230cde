from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App

from bot import dispatch
from bot.listeners.slack_origin import from_command
from bot.messages.mrkdwn import unescape
from bot.messages.render import render_reply
from labmate.settings import Settings


def register(app: App, settings: Settings) -> None:
    @app.command(settings.command)
    def on_command(ack: Ack, body: dict[str, Any]) -> None:
        # Slack sends `&`, `<`, `>` in the command text as `&amp;`, `&lt;`, `&gt;` (the manifest sets
        # should_escape: false, so these are the only entities): parse and store what the user typed.
        reply = dispatch.handle(unescape(body.get("text", "")), from_command(body))
        if reply.outcome == "duplicate":
            ack()
            return
        message = render_reply(reply)
        ack(text=message.text, blocks=message.blocks, response_type="in_channel" if reply.public else "ephemeral")
