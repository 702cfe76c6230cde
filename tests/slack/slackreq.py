"""Requests as Slack sends them (signed), over two transports: the Bolt app in process, or HTTP.

Signatures are computed as Slack computes them: `v0=` + HMAC-SHA256(signing secret,
`v0:{timestamp}:{raw body}`), via slack_sdk's SignatureVerifier.generate_signature.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from tests.ports import free_port  # noqa: F401  (the fault tests and benchmarks import it from here)

if TYPE_CHECKING:
    from fakeslack import FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test"
TEAM_ID = "T0LABMATE"
APP_ID = "A0LABMATE"
FORM = "application/x-www-form-urlencoded"

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    """An id no other test uses (channels, users, words): shared servers never cross-talk."""
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}"


def message_ts() -> str:
    return f"{int(time.time())}.{next(_counter):06d}"


def sign(body: str, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return signature


def signed_headers(body: str, *, content_type: str, timestamp: str | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    return {
        "content-type": content_type,
        "x-slack-request-timestamp": ts,
        "x-slack-signature": sign(body, ts, secret),
    }


@dataclass
class Response:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return json.loads(self.body) if self.body else {}


class Transport(Protocol):
    name: str

    def post(self, body: str, headers: dict[str, str]) -> Response: ...


class InProcess:
    """`app.dispatch(BoltRequest(...))`: the real Bolt app, no HTTP server."""

    name = "inprocess"

    def __init__(self, app: Any) -> None:
        self.app = app

    def post(self, body: str, headers: dict[str, str]) -> Response:
        from slack_bolt import BoltRequest

        response = self.app.dispatch(BoltRequest(body=body, headers=headers))
        return Response(response.status, response.body, {k: v[0] for k, v in response.headers.items() if v})


class OverHTTP:
    """POST /slack/events on a running `labmate serve`."""

    name = "served"

    def __init__(self, port: int, path: str = "/slack/events") -> None:
        self.port = port
        self.path = path

    def post(self, body: str, headers: dict[str, str]) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", self.path, body=body.encode("utf-8"), headers=headers)
            answer = connection.getresponse()
            return Response(answer.status, answer.read().decode("utf-8"), {k.lower(): v for k, v in answer.getheaders()})
        finally:
            connection.close()


@dataclass
class Slack:
    """What Slack would send to labmate, signed, through one transport."""

    transport: Transport
    db_url: str
    command_name: str = "/lab"
    secret: str = SIGNING_SECRET
    response_base: str = "http://127.0.0.1:9/response/"
    """Where response_url points: the fake Slack's /response/ (never the real hooks.slack.com)."""

    def send(self, body: str, content_type: str, *, extra: dict[str, str] | None = None, **kw: Any) -> Response:
        headers = signed_headers(body, content_type=content_type, secret=self.secret, **kw)
        headers.update(extra or {})
        return self.transport.post(body, headers)

    def command_body(self, text: str, *, user: str = "U0ALICE", channel: str = "C0GENERAL", channel_name: str = "general") -> str:
        return urlencode(
            {
                "token": "legacy-verification-token",
                "team_id": TEAM_ID,
                "team_domain": "labmate-test",
                "channel_id": channel,
                "channel_name": channel_name,
                "user_id": user,
                "user_name": user.lower(),
                "command": self.command_name,
                "text": text,
                "api_app_id": APP_ID,
                "is_enterprise_install": "false",
                "response_url": f"{self.response_base}commands/{TEAM_ID}/{uuid.uuid4().hex}",
                "trigger_id": f"{next(_counter)}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
            }
        )

    def command(self, text: str, *, user: str = "U0ALICE", channel: str = "C0GENERAL", channel_name: str = "general") -> Response:
        """`text` exactly as Slack puts it in the payload (already entity-escaped)."""
        return self.send(self.command_body(text, user=user, channel=channel, channel_name=channel_name), FORM)

    def event(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None
    ) -> tuple[Response, str]:
        event_id = event_id or unique("Ev")
        body = json.dumps(
            {
                "token": "legacy-verification-token",
                "team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "event": event,
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "authorizations": [{"team_id": TEAM_ID, "user_id": "UBOT", "is_bot": True, "enterprise_id": None}],
                "is_ext_shared_channel": False,
                "event_context": uuid.uuid4().hex,
            }
        )
        extra = {}
        if retry_num is not None:
            extra = {"x-slack-retry-num": str(retry_num), "x-slack-retry-reason": "http_timeout"}
        return self.send(body, "application/json", extra=extra), event_id

    def mention(self, text: str, *, user: str, channel: str, ts: str | None = None, **kw: Any) -> tuple[Response, str, str]:
        ts = ts or message_ts()
        event = {
            "type": "app_mention",
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": TEAM_ID,
        }
        response, event_id = self.event(event, **kw)
        return response, event_id, ts

    def reaction(
        self, kind: str, *, reaction: str, user: str, channel: str, ts: str, item_user: str, **kw: Any
    ) -> tuple[Response, str]:
        event = {
            "type": kind,
            "user": user,
            "reaction": reaction,
            "item_user": item_user,
            "item": {"type": "message", "channel": channel, "ts": ts},
            "event_ts": message_ts(),
        }
        return self.event(event, **kw)

    def interaction(self, payload: dict[str, Any]) -> Response:
        return self.send(urlencode({"payload": json.dumps(payload)}), FORM)

    def block_action(
        self, *, action_id: str, value: str, user: str, channel: str, message: dict[str, Any] | None = None
    ) -> Response:
        """A click on a button of a message the bot posted."""
        message = message or {"type": "message", "ts": message_ts(), "text": "card", "user": "UBOT"}
        return self.interaction(
            {
                "type": "block_actions",
                "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
                "api_app_id": APP_ID,
                "token": "legacy-verification-token",
                "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel, "is_ephemeral": False},
                "trigger_id": f"{next(_counter)}.{uuid.uuid4().hex}",
                "team": {"id": TEAM_ID, "domain": "labmate-test"},
                "channel": {"id": channel, "name": "general"},
                "message": message,
                "response_url": f"{self.response_base}actions/{TEAM_ID}/{uuid.uuid4().hex}",
                "actions": [
                    {
                        "action_id": action_id,
                        "block_id": "actions",
                        "text": {"type": "plain_text", "text": "button"},
                        "value": value,
                        "type": "button",
                        "action_ts": message_ts(),
                    }
                ],
            }
        )

    def message_shortcut(self, *, callback_id: str, user: str, channel: str, message: dict[str, Any]) -> Response:
        return self.interaction(
            {
                "type": "message_action",
                "token": "legacy-verification-token",
                "action_ts": message_ts(),
                "team": {"id": TEAM_ID, "domain": "labmate-test"},
                "user": {"id": user, "name": user.lower(), "team_id": TEAM_ID},
                "channel": {"id": channel, "name": "general"},
                "is_enterprise_install": False,
                "callback_id": callback_id,
                "trigger_id": f"{next(_counter)}.{uuid.uuid4().hex}",
                "response_url": f"{self.response_base}app/{TEAM_ID}/{uuid.uuid4().hex}",
                "message_ts": message["ts"],
                "message": message,
            }
        )

    def view_submission(self, view: dict[str, Any], *, user: str, values: dict[str, str | None]) -> Response:
        """Submit a view Slack opened (as recorded by views.open), with these plain-text input values."""
        state = {
            block: {"value": {"type": "plain_text_input", "value": value}} for block, value in values.items()
        }
        submitted = {**view, "state": {"values": state}}
        return self.interaction(
            {
                "type": "view_submission",
                "team": {"id": TEAM_ID, "domain": "labmate-test"},
                "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
                "api_app_id": APP_ID,
                "token": "legacy-verification-token",
                "trigger_id": f"{next(_counter)}.{uuid.uuid4().hex}",
                "view": submitted,
                "response_urls": [],
                "is_enterprise_install": False,
            }
        )


def healthy(port: int) -> bool:
    """`GET /healthz` of a labmate serve on this port answers 200."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/healthz")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def poll(check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Lab:
    """One labmate under test: how to reach it, the fake Slack it talks to, its database."""

    mode: str
    slack: Slack
    fake: FakeSlack
    db_url: str
    drain: Callable[[], None]
    """Wait until every lazy listener started so far has finished (exact in process only)."""

    def decisions(self, **where: Any) -> list[Any]:
        from sqlalchemy import select

        from models.db import session_scope
        from models.decision import Decision

        with session_scope(self.db_url) as session:
            query = select(Decision).order_by(Decision.id)
            for key, value in where.items():
                query = query.where(getattr(Decision, key) == value)
            return list(session.scalars(query))

    def audit(self, **where: Any) -> list[Any]:
        from sqlalchemy import select

        from models.audit import AUDIT_EVENTS
        from models.db import session_scope

        with session_scope(self.db_url) as session:
            query = select(AUDIT_EVENTS).order_by(AUDIT_EVENTS.c.id)
            for key, value in where.items():
                query = query.where(AUDIT_EVENTS.c[key] == value)
            return list(session.execute(query))


def forget_keys(redis_url: str, prefix: str) -> None:
    """Delete what a run put in Redis under its own key prefix, and nothing else (runs share Redis)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()
