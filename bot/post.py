"""The only way out: replies rendered once, then posted to Slack or shown in the terminal."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.messages.render import Message, render

log = logging.getLogger(__name__)

ConsoleSink = Callable[[dict[str, Any], Message], None]
FALLBACK_ERRORS = ("not_in_channel", "channel_not_found", "is_archived")


class SlackPoster:
    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(self, reply_to: dict[str, Any], message: Message) -> None:
        kwargs: dict[str, Any] = {"channel": reply_to["channel"], "text": message.text, "blocks": message.blocks}
        if reply_to.get("thread_ts"):
            kwargs["thread_ts"] = reply_to["thread_ts"]
        try:
            posted = self.client.chat_postMessage(**kwargs)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            if error in FALLBACK_ERRORS and reply_to.get("response_url"):
                WebhookClient(reply_to["response_url"]).send(
                    text=message.text, blocks=message.blocks, response_type="ephemeral"
                )
                return
            raise
        self._upload(reply_to, message, thread_ts=reply_to.get("thread_ts") or posted.get("ts"))

    def _upload(self, reply_to: dict[str, Any], message: Message, *, thread_ts: str | None) -> None:
        """Charts go in the thread of the answer they belong to (a slash command has no thread of its own)."""
        for item in message.files:
            self.client.files_upload_v2(
                channel=reply_to["channel"],
                thread_ts=thread_ts,
                file=item["path"],
                filename=Path(item["path"]).name,
                title=item.get("title", Path(item["path"]).name),
            )


class Router:
    """The delivery jobs use: shell sessions get their own console sink, Slack origins the Slack poster."""

    def __init__(self, slack: SlackPoster | None = None) -> None:
        self.slack = slack
        self._sinks: dict[str, ConsoleSink] = {}
        self._lock = threading.Lock()

    def add_console(self, session: str, sink: ConsoleSink) -> None:
        with self._lock:
            self._sinks[session] = sink

    def remove_console(self, session: str) -> None:
        with self._lock:
            self._sinks.pop(session, None)

    def deliver(self, reply_to: dict[str, Any], template: str, context: dict[str, Any]) -> None:
        message = render(template, context)
        if reply_to.get("source") == "shell":
            with self._lock:
                sink = self._sinks.get(reply_to.get("session", ""))
            if sink is None:
                log.warning("no terminal for session %r; dropped %s", reply_to.get("session"), template)
                return
            sink(reply_to, message)
            return
        if self.slack is None:
            log.warning("no Slack token configured; dropped %s for %s", template, reply_to.get("channel"))
            return
        self.slack.post(reply_to, message)


_router: Router | None = None


def router() -> Router:
    """The process's delivery, installed into `labmate.outbox` on first use."""
    global _router
    if _router is None:
        from bot.slack_client import web_client
        from labmate import outbox
        from labmate.settings import get_settings

        settings = get_settings()
        _router = Router(SlackPoster(web_client(settings)) if settings.slack_bot_token else None)
        outbox.install(_router)
    return _router


def reset_router() -> None:
    global _router
    _router = None
