"""Serving the Slack app: one WSGI endpoint (/slack/events) under uWSGI, /healthz, or Socket Mode
(with its own /healthz)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from threading import Event

from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def warm() -> None:
    """Load before the first request what the first requests would otherwise load: the job
    client (Celery's producer machinery and the broker transport), every verb's handler, the ORM
    mappers and the compiled templates. No connection is opened here."""
    from sqlalchemy.orm import configure_mappers

    from bot.dispatch import preload_handlers
    from bot.messages.render import TEMPLATES, environment
    from tasks.app import celery_app

    app = celery_app()
    app.amqp.producer_pool  # noqa: B018  (builds the producer machinery; connects lazily)
    with app.connection_for_write() as connection:
        connection.transport  # noqa: B018  (imports and builds the transport; connects lazily)
    preload_handlers()
    configure_mappers()
    for template in TEMPLATES.glob("*.j2"):
        environment().get_template(template.name)


def wsgi_app() -> Callable[..., Iterable[bytes]]:
    from bot.post import router
    from bot.slack_app import build_app
    from models.db import fail_fast

    fail_fast()
    router()
    warm()
    app = build_app(token_verification=False)  # `labmate serve` checked the token before starting us
    from bot.http_guard import guard
    from labmate.settings import get_settings

    secret = get_settings().slack_signing_secret
    assert secret is not None  # build_app refused to start without it
    return guard(SlackRequestHandler(app, path=EVENTS_PATH), secret.get_secret_value())


AUTH_ERRORS = ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "not_allowed_token_type")


def preflight(*, socket_mode: bool = False) -> None:
    """Before serving: refuse in one line what can't work (no credentials, a token Slack rejects);
    serve anyway, with one warning line, when Slack's Web API can't be reached yet (its calls are
    retried with backoff as they happen). Imports only the Slack client: this process execs uWSGI
    next, whose workers load the app themselves."""
    from bot.slack_client import missing_credentials, web_client
    from labmate.settings import get_settings

    settings = get_settings()
    missing = missing_credentials(settings, socket_mode=socket_mode)
    if missing:
        raise SystemExit(missing)
    assert settings.slack_bot_token is not None
    try:
        web_client(settings).auth_test()
    except SlackApiError as exc:
        error = _refusal_or_error(exc, "SLACK_BOT_TOKEN", "copy the Bot User OAuth Token (xoxb-…) from your app's "
                                  "OAuth & Permissions page, or reinstall the app.")
        log.warning("Slack's Web API answered auth.test with %s; serving anyway", error)
    except Exception as exc:
        log.warning(
            "Slack's Web API at %s can't be reached (%s); serving anyway: replies wait and are retried until it answers",
            settings.slack_api_url, exc,
        )


def uwsgi_argv(*, host: str, port: int, workers: int, threads: int) -> list[str]:
    """uWSGI (pyuwsgi's wheel) behind its own HTTP router: the router (C, event-driven) holds every
    client's keep-alive connection and hands each request to a free worker thread over a local
    socket, so an idle connection never occupies a thread. Workers load the app after the fork
    (--lazy-apps): the master holds no Python app state. No harakiri: with threads it kills the
    whole worker, in-flight requests included; every wait on the request path is bounded instead
    (database, broker and Slack timeouts)."""
    binary = shutil.which("uwsgi") or str(Path(sys.executable).with_name("uwsgi"))
    return [
        binary,
        f"--http={host}:{port}",
        "--http-keepalive=1",
        "--http-auto-chunked",
        "--http-timeout=30",
        "--module=bot.wsgi:application",
        "--master",
        f"--processes={workers}",
        f"--threads={threads}",
        "--lazy-apps",
        "--need-app",
        "--die-on-term",
        "--single-interpreter",
        "--enable-threads",
        "--buffer-size=32768",
        "--disable-logging",
        "--log-5xx",
        "--ignore-sigpipe",
        "--ignore-write-errors",
        "--disable-write-exception",
        "--auto-procname",
        "--procname-prefix-spaced=labmate",
    ]


def run_http(*, host: str, port: int, workers: int, threads: int) -> None:
    """Replace this process with uWSGI: the CLI's own memory (typer, migrations) goes with it."""
    preflight()
    argv = uwsgi_argv(host=host, port=port, workers=workers, threads=threads)
    os.environ["LABMATE_SERVE_PORT"] = str(port)  # `labmate health` reads it: uWSGI renames its processes
    sys.stdout.flush()
    os.execv(argv[0], argv)


def run_socket_mode(*, host: str, port: int) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.post import router
    from bot.slack_app import build_app
    from bot.slack_client import missing_credentials
    from labmate.settings import get_settings

    settings = get_settings()
    from labmate.bootstrap import long_lived

    missing = missing_credentials(settings, socket_mode=True)
    if missing:
        raise SystemExit(missing)
    health = HealthServer.open(host, port)  # a taken port stops the start here, not after the warm-up
    preflight(socket_mode=True)
    assert settings.slack_app_token is not None  # preflight stopped without it
    with long_lived():
        router()
        warm()
        app = build_app(token_verification=False, socket_mode=True)
        handler = SocketModeHandler(app, settings.slack_app_token.get_secret_value())
    socket = handler.client  # Socket Mode's client; the Web API client is app.client
    health.connected = socket.is_connected
    connect_with_backoff(handler.connect, settings.slack_api_url)
    if socket.is_connected():
        log.info("connected to Slack over Socket Mode; serving (/healthz on %s:%s)", host, port)
    else:  # slack_sdk gives up a failed WebSocket handshake quietly; its monitor tries again
        log.warning("Socket Mode's first connection to Slack failed; slack_sdk tries again every 10 s "
                    "(/healthz on %s:%s says 503 until then)", host, port)
    Event().wait()  # what SocketModeHandler.start() does after connecting: its client reconnects by itself


class HealthServer:
    """Socket Mode's /healthz, for compose's health check and `labmate health bot` as over HTTP: 200
    while the connection to Slack is open, 503 while it connects or reconnects. Slack's requests come
    over the socket, so nothing else is served."""

    def __init__(self) -> None:
        self.connected: Callable[[], bool] = lambda: False
        self.close: Callable[[], None] = lambda: None

    @classmethod
    def open(cls, host: str, port: int) -> HealthServer:
        import socket
        import socketserver
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        state = cls()

        class Health(BaseHTTPRequestHandler):
            timeout = 5  # a client that sends nothing doesn't hold its thread

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/healthz":
                    self._answer(404, "not found")
                elif state.connected():
                    self._answer(200, "ok")
                else:
                    self._answer(503, "not connected to Slack: Socket Mode is connecting")

            def _answer(self, status: int, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # a probe every few seconds: not logged
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

            def server_bind(self) -> None:  # HTTPServer's also looks up the host's name, which can stall
                if self.address_family == socket.AF_INET6 and host == "::":  # IPv4 too, whatever the OS's default
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

        try:
            server = Server((host, port), Health)
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise SystemExit(f"can't serve /healthz on {where} ({exc.strerror or exc}): "
                             "give a free port with --port, or the interface's address with --host") from None
        Thread(target=server.serve_forever, name="socket-mode-healthz", daemon=True).start()

        def close() -> None:
            server.shutdown()
            server.server_close()

        state.close = close
        return state


def _refusal_or_error(exc: SlackApiError, token: str, fix: str) -> str:
    """Slack's error code; a token it refuses stops the process in one line that says how to fix it."""
    error = exc.response.get("error") if exc.response is not None else ""
    if error in AUTH_ERRORS:
        raise SystemExit(f"Slack refused {token} ({error}): {fix}") from None
    return str(error or "")


def connect_with_backoff(connect: Callable[[], None], api_url: str, *, longest: float = 60.0) -> None:
    """Socket Mode's first connection, tried until Slack answers: its client reconnects by itself
    once connected, but the first `apps.connections.open` raises. A refused app token stops here in
    one line; an unreachable Slack is tried again with slack_sdk's backoff, up to a minute apart."""
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator

    intervals = BackoffRetryIntervalCalculator(backoff_factor=1.0)
    attempt = 0
    while True:
        try:
            connect()
            return
        except SlackApiError as exc:
            error = _refusal_or_error(exc, "SLACK_APP_TOKEN", "create an App-Level Token with connections:write "
                                      "under Basic Information → App-Level Tokens.")
            reason = f"it answered {error or exc.response.status_code}"
        except OSError as exc:  # URLError, refused, reset, DNS: the network, not the token
            reason = str(getattr(exc, "reason", exc))
        wait = min(longest, intervals.calculate_sleep_duration(attempt))
        log.warning("Socket Mode can't connect to Slack at %s (%s); trying again in %.1f s", api_url, reason, wait)
        time.sleep(wait)
        attempt += 1
