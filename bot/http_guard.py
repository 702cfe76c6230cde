"""The HTTP endpoint's first line: size, signature and shape are checked on the raw bytes before
anything parses them, so a hostile body costs microseconds and never reaches Bolt.

- `/healthz` answers 200 (it touches nothing: a probe must not wait on the database).
- Only `POST /slack/events`; anything else is 404/405.
- A body over MAX_BODY_BYTES is refused with 413 before it is read. Slack's largest requests are
  view submissions and interactivity payloads: a modal holds at most 100 blocks and inputs of at
  most 3,000 characters each, well under 1 MiB once form-encoded; a slash command is at most a few
  kilobytes.
- The signature is verified on the raw bytes (HMAC-SHA256 of `v0:{timestamp}:{body}`, timestamp
  within five minutes): 401 when it is missing or wrong. slack_sdk's SignatureVerifier decodes the
  body and the timestamp first, so a non-UTF-8 body or a non-numeric timestamp would raise inside
  it; this check is the same computation on bytes, and it cannot raise.
- A signed body that is not what Slack sends (not UTF-8, a form without fields, a `payload` that is
  not a JSON object or lacks what every payload of its type has, a slash command without its user or
  channel, JSON that is not an object) is a 400.
Refusals are logged at debug level: a flood of garbage must not flood the log.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_SKEW_S = 300
EVENTS_PATH = "/slack/events"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def signature_ok(secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float | None = None) -> bool:
    if not timestamp.isdigit() or not signature.startswith("v0="):
        return False
    if abs((now or time.time()) - int(timestamp)) > MAX_SKEW_S:
        return False
    expected = hmac.new(secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("v0=" + expected, signature)


def shape_error(body: bytes, content_type: str) -> str | None:
    """Why a signed body is not a Slack request, or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        try:
            return None if isinstance(json.loads(text), dict) else "the JSON body is not an object"
        except ValueError:
            return "the body is not JSON"
    if kind == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(text, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return "the form body is malformed"
        if "payload" in fields:
            try:
                payload = json.loads(fields["payload"][-1])
            except ValueError:
                return "`payload` is not JSON"
            return _payload_error(payload) if isinstance(payload, dict) else "`payload` is not a JSON object"
        if "command" in fields and not all((fields.get(name) or [""])[-1] for name in ("user_id", "channel_id")):
            return "the slash command has no `user_id` or `channel_id`"
        return None if fields else "the form has no fields"
    return f"unsupported content type {kind or '(none)'}"


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _json_object_or_empty(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return not text or isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _payload_error(payload: dict[str, Any]) -> str | None:
    """What an interactivity payload lacks that Slack always sends and Bolt reads without looking first
    (`actions[0]`, `view["type"]`): it raised inside Bolt, a 500 after a traceback, and no answer."""
    kind = payload.get("type")
    if not _text(kind):
        return "`payload` has no `type`"
    user = payload.get("user")
    if not (isinstance(user, dict) and _text(user.get("id"))):
        return "`payload` has no `user.id`"
    if kind == "block_actions":
        actions = payload.get("actions")
        if not (isinstance(actions, list) and actions
                and all(isinstance(a, dict) and _text(a.get("action_id")) for a in actions)):
            return "`payload.actions` is not a list of actions, each with an `action_id`"
    if kind in ("view_submission", "view_closed"):
        view = payload.get("view")
        if not (isinstance(view, dict) and _text(view.get("id")) and _text(view.get("type"))
                and isinstance(view.get("callback_id"), str)):
            return "`payload.view` has no `id`, `type` or `callback_id`"
        if not _json_object_or_empty(view.get("private_metadata", "")):
            return "`payload.view.private_metadata` is not the JSON object labmate's modals carry"
    if kind in ("shortcut", "message_action") and not isinstance(payload.get("callback_id"), str):
        return "`payload` has no `callback_id`"
    return None


def _answer(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
    data = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def _read(environ: dict[str, Any], length: int) -> bytes:
    stream = environ["wsgi.input"]
    chunks, left = [], length
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def guard(app: WSGIApp, signing_secret: str) -> WSGIApp:
    secret = signing_secret.encode()

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _answer(start_response, "200 OK", "ok")
        if path != EVENTS_PATH:
            return _answer(start_response, "404 Not Found", "not found")
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start_response, "405 Method Not Allowed", "POST only")
        raw_length = environ.get("CONTENT_LENGTH") or ""
        if not raw_length.isdigit():
            return _answer(start_response, "411 Length Required", "a Content-Length is required")
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            log.debug("refused a %d-byte body", length)
            return _answer(start_response, "413 Payload Too Large", f"bodies over {MAX_BODY_BYTES} bytes are refused")
        body = _read(environ, length)
        if len(body) != length:
            return _answer(start_response, "400 Bad Request", "the body is shorter than its Content-Length")
        timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
        signature = environ.get("HTTP_X_SLACK_SIGNATURE", "")
        if not signature_ok(secret, timestamp, body, signature):
            log.debug("refused an unsigned request from %s", environ.get("REMOTE_ADDR"))
            return _answer(start_response, "401 Unauthorized", "invalid request signature")
        problem = shape_error(body, environ.get("CONTENT_TYPE", ""))
        if problem:
            log.debug("refused a signed request: %s", problem)
            return _answer(start_response, "400 Bad Request", problem)
        environ["wsgi.input"] = io.BytesIO(body)
        return app(environ, start_response)

    return application
