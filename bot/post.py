"""The only way out: replies rendered once, then posted (or edited) in Slack or shown in the terminal."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.messages.render import Message, render

if TYPE_CHECKING:
    from bot.slack_delivery import SlackPoster

log = logging.getLogger(__name__)

ConsoleSink = Callable[[dict[str, Any], Message], None]


def digest(message: Message) -> str:
    """What a message says (text, blocks, files): equal digests need no second post or edit."""
    body = json.dumps([message.text, message.blocks, message.files], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


class Router:
    """The delivery jobs use: shell sessions get their own console sink, Slack origins the Slack poster."""

    def __init__(self, slack: SlackPoster | None = None) -> None:
        self.slack = slack
        self._sinks: dict[str, ConsoleSink] = {}
        self._shown: dict[str, dict[str, str]] = {}
        self._final: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    @property
    def reaches_slack(self) -> bool:
        return self.slack is not None

    def add_console(self, session: str, sink: ConsoleSink) -> None:
        with self._lock:
            self._sinks[session] = sink
            self._shown[session] = {}
            self._final[session] = set()

    def remove_console(self, session: str) -> None:
        with self._lock:
            self._sinks.pop(session, None)
            self._shown.pop(session, None)
            self._final.pop(session, None)

    def deliver(
        self,
        reply_to: dict[str, Any],
        template: str,
        context: dict[str, Any],
        *,
        key: str | None = None,
        final: bool = True,
    ) -> str | None:
        from bot.replies import unpacked

        message = render(template, unpacked(context))
        if reply_to.get("source") == "shell":
            return self._show(reply_to, message, key, final)
        if self.slack is None:
            log.warning("no Slack token configured; dropped %s for %s", template, reply_to.get("channel"))
            return None
        if reply_to.get("home"):
            return self.slack.publish_home(str(reply_to["home"]), message)
        return self.slack.deliver(reply_to, message, key=key, final=final, digest=digest(message))

    def _show(self, reply_to: dict[str, Any], message: Message, key: str | None, final: bool = True) -> str | None:
        """The terminal session that asked shows it; a keyed message shown before is shown again only
        when it changed (a refreshed card), never twice the same, and never back in an intermediate
        state once its final one was shown."""
        session = reply_to.get("session", "")
        with self._lock:
            sink = self._sinks.get(session)
            shown = self._shown.get(session)
            finals = self._final.get(session)
            if sink is not None and shown is not None and finals is not None and key is not None:
                if key in finals and not final:
                    return key
                if final:
                    finals.add(key)
                seen = digest(message)
                if shown.get(key) == seen:
                    return key
                shown[key] = seen
        if sink is None:
            log.warning("no terminal for session %r; dropped %s", session, message.template)
            return None
        sink(reply_to, message)
        return key


_router: Router | None = None


def router() -> Router:
    """The process's delivery, installed into `labmate.outbox` on first use."""
    global _router
    if _router is None:
        from labmate import outbox
        from labmate.settings import get_settings

        settings = get_settings()
        slack = None
        if settings.slack_bot_token:  # the terminal never needs the Slack SDK: it isn't imported there
            from bot.slack_client import web_client
            from bot.slack_delivery import SlackPoster

            slack = SlackPoster(web_client(settings))
        _router = Router(slack)
        outbox.install(_router)
    return _router


def reset_router() -> None:
    global _router
    _router = None
