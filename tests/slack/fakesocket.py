"""Slack's end of Socket Mode, for tests: a WebSocket server (aiohttp, which MLflow already installs)
whose ws:// URL the fake Web API hands out from `apps.connections.open`.

Each connection is greeted with `hello`, as Slack does; `send()` delivers an envelope (a slash
command, an event, an interaction) to the newest connection and returns the app's ack, which for a
slash command carries the answer; `drop()` closes every connection, as Slack does before a
refresh or when its side fails."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from aiohttp import WSMsgType, web


class FakeSocketMode:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fakesocket", daemon=True)
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        self.connections = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link/?ticket=test"

    def start(self) -> FakeSocketMode:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Closes what is still connected first: aiohttp would wait for each client to hang up."""
        if self._runner is not None:
            self.drop()
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/link/", self._connection)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _connection(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        await socket.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0LABMATE"},
                                "debug_info": {"host": "fakesocket", "approximate_connection_time": 3600}})
        with self._changed:
            self._sockets.append(socket)
            self.connections += 1
            self._changed.notify_all()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                data = json.loads(message.data)
                if "envelope_id" in data:
                    with self._changed:
                        self._acks[data["envelope_id"]] = data
                        self._changed.notify_all()
        with self._changed:
            if socket in self._sockets:
                self._sockets.remove(socket)
            self._changed.notify_all()
        return socket

    def connected(self) -> int:
        with self._changed:
            return len(self._sockets)

    def wait_connected(self, count: int = 1, *, timeout: float = 30.0) -> None:
        """Until `count` connections have been made in all (reconnections count)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.connections >= count and self._sockets, timeout=timeout):
                raise AssertionError(f"{self.connections} Socket Mode connections after {timeout} s, wanted {count}")

    def send(self, kind: str, payload: dict[str, Any], *, timeout: float = 15.0) -> dict[str, Any]:
        """Deliver an envelope to the newest connection; the app's ack (`{"envelope_id", "payload"?}`)."""
        envelope_id = f"env-{next(self._ids)}"
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                    "accepts_response_payload": kind != "events_api", "retry_attempt": 0, "retry_reason": ""}
        with self._changed:
            socket = self._sockets[-1]
        asyncio.run_coroutine_threadsafe(socket.send_json(envelope), self._loop).result(timeout=5)
        with self._changed:
            if not self._changed.wait_for(lambda: envelope_id in self._acks, timeout=timeout):
                raise AssertionError(f"the app did not ack envelope {envelope_id} within {timeout} s")
            return self._acks[envelope_id]

    def drop(self) -> None:
        """Close every connection from Slack's side."""
        with self._changed:
            sockets = list(self._sockets)

        async def close_all() -> None:
            for socket in sockets:
                await socket.close(code=1001, message=b"going away")

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)


def command_payload(text: str, *, user: str = "U0ALICE", channel: str = "C0GENERAL", command: str = "/lab") -> dict[str, Any]:
    """A slash command as Socket Mode carries it: the same fields as the HTTP form, as JSON."""
    return {
        "token": "legacy-verification-token", "team_id": "T0LABMATE", "team_domain": "labmate-test",
        "channel_id": channel, "channel_name": "general", "user_id": user, "user_name": user.lower(),
        "command": command, "text": text, "api_app_id": "A0LABMATE", "is_enterprise_install": "false",
        "response_url": "http://127.0.0.1:9/response/commands/socket", "trigger_id": f"{next(_triggers)}.1.socket",
    }


_triggers = itertools.count(1)


def event_payload(event: dict[str, Any]) -> dict[str, Any]:
    """An Events API callback as Socket Mode carries it (an `events_api` envelope's payload)."""
    return {
        "token": "legacy-verification-token", "team_id": "T0LABMATE", "api_app_id": "A0LABMATE", "event": event,
        "type": "event_callback", "event_id": f"Ev{next(_triggers):08d}SOCKET", "event_time": int(time.time()),
        "authorizations": [{"team_id": "T0LABMATE", "user_id": "UBOT", "is_bot": True, "enterprise_id": None}],
        "is_ext_shared_channel": False,
    }


def healthz(port: int, host: str = "127.0.0.1") -> tuple[int, str]:
    """What `labmate serve --socket-mode`'s /healthz answers (0 and the error: nothing listens)."""
    where = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{where}:{port}/healthz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)
