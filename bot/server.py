"""Serving the Slack app: one WSGI endpoint (/slack/events) under gunicorn, /healthz, or Socket Mode."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt.adapter.wsgi import SlackRequestHandler

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def wsgi_app() -> Callable[..., Iterable[bytes]]:
    from bot.post import router
    from bot.slack_app import build_app

    router()
    handler = SlackRequestHandler(build_app(), path=EVENTS_PATH)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        return handler(environ, start_response)

    return application


def run_http(*, host: str, port: int, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                "timeout": 30,
                "keepalive": 5,
                "accesslog": None,
                "backlog": 2048,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Callable[..., Iterable[bytes]]:
            return wsgi_app()

    Server().run()


def run_socket_mode() -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.post import router
    from bot.slack_app import build_app
    from labmate.settings import get_settings

    settings = get_settings()
    if not settings.slack_app_token:
        raise SystemExit("Socket Mode needs SLACK_APP_TOKEN (xapp-…): App settings → Basic Information → App-Level Tokens.")
    router()
    SocketModeHandler(build_app(), settings.slack_app_token.get_secret_value()).start()
