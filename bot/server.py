"""Serving the Slack app: one WSGI endpoint (/slack/events) under uWSGI, /healthz, or Socket Mode
(with its own /healthz)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from threading import Event, Lock, Thread
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.errors import SlackApiError

if TYPE_CHECKING:
    from types import FrameType

    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk.socket_mode.builtin import SocketModeClient
    from slack_sdk.socket_mode.builtin.connection import Connection

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"

PING_INTERVAL = 5.0
"""Seconds between Socket Mode's pings (Bolt's default is 10). slack_sdk closes a connection after four
intervals without a pong, and its monitor, on the same beat, reconnects."""
STALE_AFTER = 12.0
"""Socket Mode's /healthz says 503 once Slack hasn't answered a ping sent this long ago: a frozen network
shows within this long, while a healthy connection's last answered ping is about one interval old."""
STOP_GRACE = 8.0
"""How long a stopped Socket Mode process waits for the requests it already acked: inside docker's default
10 s stop timeout, after which the process would be killed."""

P = ParamSpec("P")
T = TypeVar("T")


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
    listeners = ListenerPool()
    with long_lived():
        router()
        warm()
        app = build_app(token_verification=False, socket_mode=True, listener_executor=listeners)
        handler = SocketModeHandler(app, settings.slack_app_token.get_secret_value(), ping_interval=PING_INTERVAL)
    socket = handler.client  # Socket Mode's client; the Web API client is app.client
    health.connected = Liveness(socket)
    try:
        with StopOnSignals():
            connect_with_backoff(handler.connect, settings.slack_api_url)
            if socket.is_connected():
                log.info("connected to Slack over Socket Mode; serving (/healthz on %s:%s)", host, port)
            else:  # slack_sdk gives up a failed WebSocket handshake quietly; its monitor tries again
                log.warning("Socket Mode's first connection to Slack failed; slack_sdk tries again every %g s "
                            "(/healthz on %s:%s says 503 until then)", PING_INTERVAL, host, port)
            Event().wait()  # what SocketModeHandler.start() does after connecting: its client reconnects by itself
    except Stopped as stop:
        finished = stop_socket_mode(handler, listeners, stop.signame)
        health.close()
        if not finished:  # a thread still runs: the interpreter's exit would wait for it
            logging.shutdown()
            sys.stdout.flush()
            os._exit(1)


class Stopped(BaseException):
    """SIGTERM or SIGINT reached the main thread (a BaseException: no `except Exception` on the way
    swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signame = signal.Signals(signum).name


class StopOnSignals:
    """SIGTERM (docker stop) and SIGINT raise Stopped in the main thread, wherever it waits; a second one
    while stopping leaves at once."""

    def __enter__(self) -> None:
        self._before = {sig: signal.signal(sig, self._first) for sig in (signal.SIGTERM, signal.SIGINT)}

    def __exit__(self, *exc: object) -> None:
        for sig in self._before:
            signal.signal(sig, self._again)

    @staticmethod
    def _first(signum: int, _frame: FrameType | None) -> None:
        raise Stopped(signum)

    @staticmethod
    def _again(signum: int, _frame: FrameType | None) -> None:
        os.write(2, f"{signal.Signals(signum).name} again: stopping now, without waiting\n".encode())
        os._exit(128 + signum)


class ListenerPool(ThreadPoolExecutor):
    """Bolt's lazy listeners (an event's work, after its ack), counted: a stop says how many it waits for."""

    def __init__(self, max_workers: int = 5) -> None:  # Bolt's own pool's size
        super().__init__(max_workers=max_workers, thread_name_prefix="bolt-lazy")
        self._count_lock = Lock()
        self.pending = 0

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        with self._count_lock:
            self.pending += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future[T] | None) -> None:
        with self._count_lock:
            self.pending -= 1


def stop_socket_mode(handler: SocketModeHandler, listeners: ListenerPool, signame: str, *,
                     grace: float = STOP_GRACE) -> bool:
    """Take no new request, then finish, within `grace` seconds in all, those already taken: what Bolt
    is handling is acked over the still-open connection, the connection is closed, and the lazy listeners
    (the work after an ack) run to their end. An envelope received but not yet handed to Bolt is never
    acked, so Slack sends it again. True if all of it finished."""
    deadline = time.monotonic() + grace
    client = handler.client
    waited_for = listeners.pending
    if waited_for:
        log.info("%s: taking no new requests from Slack, closing the connection; waiting up to %g s for %d acked "
                 "request(s) still being worked on", signame, grace, waited_for)
    else:
        log.info("%s: taking no new requests from Slack, closing the connection; nothing in progress", signame)

    def take_nothing_new() -> None:
        client.auto_reconnect_enabled = False
        client.closed = True  # what SocketModeClient.close() sets first: its processor hands Bolt nothing more
        client.message_processor.shutdown()  # within a second (its queue's timeout)
        client.message_workers.shutdown(wait=True)  # their acks still go out
        handler.close()  # within slack_sdk's 3 s read timeout: its reader holds the socket until then

    closed = _within(deadline, take_nothing_new)
    finished = _within(deadline, lambda: listeners.shutdown(wait=True)) and closed
    if not finished:
        log.warning("%s: stopped waiting after %g s with %d acked request(s) unfinished (Slack won't send "
                    "them again)%s", signame, grace, listeners.pending,
                    "" if closed else "; the connection to Slack didn't close in time")
    return finished


def _within(deadline: float, work: Callable[[], None]) -> bool:
    """`work` in a thread of its own: False if it is still running at `deadline`."""
    def run() -> None:
        try:
            work()
        except Exception as exc:
            log.warning("while stopping: %s: %s", type(exc).__name__, exc)

    thread = Thread(target=run, name="socket-mode-stop", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    return not thread.is_alive()


class Liveness:
    """Socket Mode's health: the connection is open and Slack answered a ping sent at most `stale_after`
    seconds ago. Over a frozen network (nothing passes, nobody closes) the socket stays open until
    slack_sdk calls it stale, four ping intervals on; the age of the last answered ping tells sooner.
    slack_sdk records it as the time the ping was sent (its pong echoes that), by the wall clock."""

    def __init__(self, client: SocketModeClient, *, stale_after: float = STALE_AFTER) -> None:
        self.client = client
        self.stale_after = stale_after
        self._session: Connection | None = None
        self._since = 0.0

    def __call__(self) -> bool:
        session = self.client.current_session
        if session is None or not session.is_active():
            return False
        if session is not self._session:  # a new connection: no pong yet is no staleness yet
            self._session, self._since = session, time.time()
        answered = session.last_ping_pong_time
        return time.time() - (answered if answered is not None else self._since) <= self.stale_after


class HealthServer:
    """Socket Mode's /healthz, for compose's health check and `labmate health bot` as over HTTP: 200
    while the connection to Slack is open and answers pings, 503 while it connects or reconnects. Slack's requests come
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
