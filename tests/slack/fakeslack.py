"""A local fake of the Slack Web API, owned by the project's tests and benchmarks.

A real HTTP server on 127.0.0.1 (ephemeral port, one thread per connection) that answers the
Web API methods labmate uses, the way Slack answers them, and records every call:

    with FakeSlack() as slack:
        env["LABMATE_SLACK_API_URL"] = slack.api_url      # http://127.0.0.1:PORT/api/
        ...
        [post] = slack.wait_for("chat.postMessage")
        assert post.params["thread_ts"] == "1700000000.000100"

- Methods: auth.test, chat.postMessage, chat.update, chat.postEphemeral, chat.getPermalink, conversations.history,
  conversations.replies, views.open, views.publish, files.getUploadURLExternal + the upload URL +
  files.completeUploadExternal (what `files_upload_v2` calls), usergroups.users.list.
  Anything else answers `{"ok": false, "error": "unknown_method"}` (recorded too).
- Auth: a call without `Authorization: Bearer <token>` answers `not_authed`, another token
  `invalid_auth` (the token is fixed at construction, default `xoxb-test`).
- `rate_limit(method, times)`: the next `times` calls of `method` answer HTTP 429 with
  `Retry-After` (seconds) and `{"ok": false, "error": "ratelimited"}`.
- `fail(method, times, status=500, after=False)`: the next `times` calls answer that HTTP status;
  with `after=True` the call is carried out first (Slack acted, then its answer was lost).
- `stall(method, seconds, times, carried_out=True)`: the next `times` calls are carried out (or, with
  `carried_out=False`, not), then answered only after `seconds` (slower than the client's timeout).
  `wait_in_flight(method)` blocks until such a call has arrived and is being held.
- chat.postMessage and chat.update keep `metadata`; conversations.history/replies return it only
  with `include_all_metadata`, as Slack does.
- `refuse_posts(channel)`: chat.postMessage and chat.postEphemeral there answer `not_in_channel`; `home(user)`: the last
  views.publish of that user's Home tab.
- `add_message(channel, message)`: canned messages served by conversations.history/replies;
  chat.postMessage adds what the bot posts to the channel too, as Slack does.
- `/response/...` stands in for response_url (recorded as method `response_url`): like Slack's, each
  takes five messages, then answers 404 `used_url`; `expire_response_urls()`: all answer 404
  `expired_url`, as Slack's do 30 minutes after their command.
- `calls(method)`, `posted()`, `wait_for(method, count, timeout, where=...)`: what arrived;
  waiting polls with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

TEAM_ID = "T0LABMATE"
BOT_USER_ID = "UBOT"
BOT_ID = "B0LABMATE"
RESPONSE_URL_USES = 5
WORKSPACE_URL = "https://labmate-test.slack.com/"
JSON_PARAMS = ("blocks", "attachments", "view", "files", "metadata")


@dataclass
class Call:
    """One request as the fake received it, and what it answered."""

    method: str
    http_method: str
    params: dict[str, Any]
    headers: dict[str, str]
    body: bytes
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    @property
    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))


@dataclass
class _RateLimit:
    method: str
    left: int
    where: Callable[[dict[str, Any]], bool] | None


@dataclass
class _Fault:
    method: str
    left: int
    status: int = 500
    after: bool = False
    stall_s: float = 0.0


class FakeSlack:
    def __init__(self, *, token: str = "xoxb-test", retry_after: int = 1, app_token: str | None = None) -> None:
        self.token = token
        self.app_token = app_token
        self.socket_url: str | None = None
        """What apps.connections.open hands out (a FakeSocketMode's url) to the app token."""
        self.retry_after = retry_after
        self._lock = threading.Condition()
        self._calls: list[Call] = []
        self._rate_limits: list[_RateLimit] = []
        self._faults: list[_Fault] = []
        self._held: dict[str, int] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._not_member: set[str] = set()
        self._no_posts: set[str] = set()
        self._homes: dict[str, dict[str, Any]] = {}
        self._response_uses: dict[str, int] = {}
        self._response_urls_expired = False
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeslack", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        """What LABMATE_SLACK_API_URL is set to."""
        return f"{self.base_url}api/"

    # -- configuring answers --------------------------------------------------------------

    def rate_limit(self, method: str, times: int = 1, *, where: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Answer the next `times` calls of `method` (whose params match `where`) with 429 + Retry-After."""
        with self._lock:
            self._rate_limits.append(_RateLimit(method, times, where))

    def fail(self, method: str, times: int = 1, *, status: int = 500, after: bool = False) -> None:
        """The next `times` calls of `method` answer HTTP `status`; `after`: carry them out first."""
        with self._lock:
            self._faults.append(_Fault(method, times, status=status, after=after))

    def heal(self, method: str) -> None:
        """Slack answers `method` again: the failures still pending for it are dropped."""
        with self._lock:
            for fault in self._faults:
                if fault.method == method:
                    fault.left = 0

    def stall(self, method: str, seconds: float, times: int = 1, *, carried_out: bool = True) -> None:
        """The next `times` calls of `method` are carried out (or not), then answered after `seconds`."""
        status = 200 if carried_out else 504
        with self._lock:
            self._faults.append(_Fault(method, times, status=status, after=carried_out, stall_s=seconds))

    def wait_in_flight(self, method: str, *, timeout: float = 30.0) -> None:
        """Block until a stalled call of `method` is being held."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._held.get(method, 0) == 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {method} call arrived within {timeout}s")
                self._lock.wait(remaining)

    def _hold(self, method: str, delta: int) -> None:
        with self._lock:
            self._held[method] = self._held.get(method, 0) + delta
            self._lock.notify_all()

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.left > 0:
                    fault.left -= 1
                    return fault
            return None

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """What the channel holds now (posts and edits applied), oldest first."""
        return sorted(self._channel_messages(channel), key=lambda m: float(m["ts"]))

    def add_message(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """A message conversations.history/replies will serve (needs at least `ts`)."""
        stored = {"type": "message", **message}
        with self._lock:
            self._messages.setdefault(channel, []).append(stored)
        return stored

    def not_a_member(self, channel: str) -> None:
        """Reading this channel's history answers `not_in_channel`, as for a channel the bot isn't in."""
        with self._lock:
            self._not_member.add(channel)

    def refuse_posts(self, channel: str) -> None:
        """chat.postMessage and chat.postEphemeral to this channel answer `not_in_channel`, as for a channel
        the bot was never invited to."""
        with self._lock:
            self._no_posts.add(channel)

    def expire_response_urls(self) -> None:
        """Every response_url answers 404 `expired_url` from now on, as Slack does 30 minutes after the
        command (or `used_url` after five messages, which the fake always enforces)."""
        with self._lock:
            self._response_urls_expired = True

    def _response_url_refusal(self, path: str) -> bytes | None:
        with self._lock:
            if self._response_urls_expired:
                return b"expired_url"
            self._response_uses[path] = self._response_uses.get(path, 0) + 1
            return b"used_url" if self._response_uses[path] > RESPONSE_URL_USES else None

    def home(self, user: str) -> dict[str, Any] | None:
        """The Home tab view last published for `user` (views.publish), or None."""
        with self._lock:
            return self._homes.get(user)

    def set_usergroup(self, usergroup: str, users: list[str]) -> None:
        with self._lock:
            self._usergroups[usergroup] = list(users)

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ids):06d}"

    # -- what arrived ---------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def posted(self, channel: str | None = None) -> list[Call]:
        """chat.postMessage calls that were delivered (answered ok, not rate limited)."""
        return [c for c in self.calls("chat.postMessage") if c.ok and (channel is None or c.params["channel"] == channel)]

    def uploads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(u) for u in self._uploads.values()]

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def wait_for(
        self,
        method: str,
        count: int = 1,
        *,
        timeout: float = 10.0,
        where: Callable[[Call], bool] | None = None,
    ) -> list[Call]:
        """Block until at least `count` answered-ok calls of `method` (matching `where`) arrived."""
        deadline = time.monotonic() + timeout

        def matching() -> list[Call]:
            return [c for c in self._calls if c.method == method and c.ok and (where is None or where(c))]

        with self._lock:
            while True:
                found = matching()
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(c.method, c.status, c.response.get("error")) for c in self._calls]
                    raise TimeoutError(f"waited {timeout}s for {count}× {method}; got {len(found)}. All calls: {seen}")
                self._lock.wait(remaining)

    # -- the server side ------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)
            self._lock.notify_all()

    def _take_rate_limit(self, method: str, params: dict[str, Any]) -> bool:
        with self._lock:
            for limit in self._rate_limits:
                if limit.method == method and limit.left > 0 and (limit.where is None or limit.where(params)):
                    limit.left -= 1
                    return True
            return False

    def answer(self, method: str, params: dict[str, Any], call: Call) -> dict[str, Any]:
        if method == "api.test":
            return {"ok": True, "args": params}
        token = call.token
        if token is None:
            return {"ok": False, "error": "not_authed"}
        if method == "apps.connections.open":  # the only method an app-level token may call
            if self.app_token is None or token != self.app_token:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": self.socket_url} if self.socket_url else {"ok": False, "error": "internal_error"}
        if token != self.token:
            return {"ok": False, "error": "invalid_auth"}
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        return handler(params)

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": WORKSPACE_URL,
            "team": "labmate test",
            "user": "labmate",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if channel in self._no_posts:
            return {"ok": False, "error": "not_in_channel"}
        message = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": params.get("text", ""),
            "blocks": params.get("blocks", []),
            "ts": self.next_ts(),
        }
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        if isinstance(params.get("metadata"), dict):
            message["metadata"] = params["metadata"]
        with self._lock:
            self._messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel") or not params.get("user"):
            return {"ok": False, "error": "invalid_arguments"}
        if params["channel"] in self._no_posts:
            return {"ok": False, "error": "not_in_channel"}
        return {"ok": True, "message_ts": self.next_ts()}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = params.get("channel", ""), params.get("ts", "")
        with self._lock:
            for message in self._messages.get(channel, []):
                if message["ts"] == ts:
                    message.update(text=params.get("text", ""), blocks=params.get("blocks", []), edited={"ts": self.next_ts()})
                    if isinstance(params.get("metadata"), dict):
                        message["metadata"] = params["metadata"]
                    return {"ok": True, "channel": channel, "ts": ts, "text": message["text"]}
        return {"ok": False, "error": "message_not_found"}

    def _api_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = params.get("channel"), params.get("message_ts")
        if not channel or not ts:
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "channel": channel, "permalink": permalink(channel, ts)}

    def _channel_messages(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._messages.get(channel, [])]

    def _api_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel", "")
        if channel in self._not_member:
            return {"ok": False, "error": "not_in_channel"}
        messages = [m for m in self._channel_messages(channel) if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]
        latest, oldest = params.get("latest"), params.get("oldest")
        inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")
        if latest:
            messages = [m for m in messages if float(m["ts"]) < float(latest) or (inclusive and m["ts"] == latest)]
        if oldest:
            messages = [m for m in messages if float(m["ts"]) > float(oldest) or (inclusive and m["ts"] == oldest)]
        messages.sort(key=lambda m: float(m["ts"]), reverse=True)
        limit = int(params.get("limit") or 100)
        return {"ok": True, "messages": _metadata_if_asked(messages[:limit], params), "has_more": len(messages) > limit}

    def _api_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = params.get("channel", ""), params.get("ts", "")
        if channel in self._not_member:
            return {"ok": False, "error": "not_in_channel"}
        thread = [m for m in self._channel_messages(channel) if m["ts"] == ts or m.get("thread_ts") == ts]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        if params.get("oldest"):
            thread = [m for m in thread if m["ts"] == ts or float(m["ts"]) > float(params["oldest"])]
        thread.sort(key=lambda m: float(m["ts"]))
        limit = int(params.get("limit") or 1000)
        return {"ok": True, "messages": _metadata_if_asked(thread[:limit], params), "has_more": len(thread) > limit}

    def _api_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        if not params.get("trigger_id") or not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        view_id = f"V{next(self._ids):08d}"
        opened = {**view, "id": view_id, "hash": f"{int(time.time())}.{view_id}", "team_id": TEAM_ID, "state": {"values": {}}}
        return {"ok": True, "view": opened}

    def _api_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                view = None
        user = params.get("user_id")
        if not user or not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        if view.get("type") != "home" or not isinstance(view.get("blocks"), list) or len(view["blocks"]) > 100:
            return {"ok": False, "error": "invalid_blocks"}
        view_id = f"V{next(self._ids):08d}"
        published = {**view, "id": view_id, "hash": f"{int(time.time())}.{view_id}", "team_id": TEAM_ID}
        with self._lock:
            self._homes[user] = published
        return {"ok": True, "view": published}

    def _api_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("filename") or not params.get("length"):
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):08d}"
        with self._lock:
            self._uploads[file_id] = {"id": file_id, "filename": params["filename"], "length": int(params["length"])}
        return {"ok": True, "upload_url": f"{self.base_url}upload/{file_id}", "file_id": file_id}

    def _api_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        files = params.get("files")
        if not isinstance(files, list) or not files:
            return {"ok": False, "error": "invalid_arguments"}
        done = []
        with self._lock:
            for item in files:
                upload = self._uploads.get(item.get("id", ""))
                if upload is None or "data" not in upload:
                    return {"ok": False, "error": "file_not_found"}
                upload.update(
                    title=item.get("title"),
                    channel=params.get("channel_id"),
                    thread_ts=params.get("thread_ts"),
                    completed=True,
                )
                done.append({"id": upload["id"], "name": upload["filename"], "title": item.get("title")})
        return {"ok": True, "files": done}

    def _api_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            users = self._usergroups.get(params.get("usergroup", ""))
        if users is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": users}

    def receive_upload(self, file_id: str, data: bytes) -> bool:
        with self._lock:
            upload = self._uploads.get(file_id)
            if upload is None:
                return False
            upload["data"] = data
            return True


def _metadata_if_asked(messages: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    if str(params.get("include_all_metadata", "")).lower() in ("1", "true"):
        return messages
    return [{k: v for k, v in m.items() if k != "metadata"} for m in messages]


def permalink(channel: str, ts: str) -> str:
    return f"{WORKSPACE_URL}archives/{channel}/p{ts.replace('.', '')}"


def _decode_params(http_method: str, query: str, body: bytes, content_type: str) -> dict[str, Any]:
    params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if http_method == "POST" and body:
        if content_type.startswith("application/json"):
            params.update(json.loads(body.decode("utf-8")))
        elif content_type.startswith("application/x-www-form-urlencoded"):
            params.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()})
    for key in JSON_PARAMS:
        value = params.get(key)
        if isinstance(value, str) and value[:1] in ("[", "{"):
            params[key] = json.loads(value)
    return params


def _handler_for(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, http_method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if url.path.startswith("/upload/"):
                file_id = url.path.removeprefix("/upload/")
                ok = fake.receive_upload(file_id, body)
                call = Call("upload", http_method, {"file_id": file_id}, headers, body, status=200 if ok else 404)
                call.response = {"ok": ok}
                fake._record(call)
                self._send(call.status, f"OK - {len(body)}".encode() if ok else b"not found", "text/plain")
                return
            if url.path.startswith("/response/"):
                # A slash command's or shortcut's response_url, pointed here by the tests.
                try:
                    params = json.loads(body.decode("utf-8") or "{}")
                except ValueError:
                    params = {}
                refused = fake._response_url_refusal(url.path)
                call = Call("response_url", http_method, params, headers, body, status=404 if refused else 200,
                            response={"ok": False, "error": refused.decode()} if refused else {"ok": True})
                fake._record(call)
                self._send(404 if refused else 200, refused or b"ok", "text/plain")
                return
            if not url.path.startswith("/api/"):
                self._send(404, b"not found", "text/plain")
                return
            method = url.path.removeprefix("/api/")
            try:
                params = _decode_params(http_method, url.query, body, headers.get("content-type", ""))
            except (ValueError, UnicodeDecodeError):
                params = {}
            call = Call(method, http_method, params, headers, body)
            fault = fake._take_fault(method)
            if fault is not None:
                answer = fake.answer(method, params, call) if fault.after else {}
                if fault.stall_s:
                    fake._hold(method, 1)
                    time.sleep(fault.stall_s)
                    fake._hold(method, -1)
                call.status = fault.status
                call.response = answer if fault.status == 200 else {"ok": False, "error": "fatal_error"}
                fake._record(call)
                try:
                    self._send(call.status, json.dumps(call.response).encode(), "application/json")
                except OSError:
                    pass  # the client gave up waiting
                return
            if fake._take_rate_limit(method, params):
                call.status = 429
                call.response = {"ok": False, "error": "ratelimited"}
                fake._record(call)
                self._send(429, json.dumps(call.response).encode(), "application/json", {"Retry-After": str(fake.retry_after)})
                return
            try:
                call.response = fake.answer(method, params, call)
            except Exception as exc:
                call.status = 500
                call.response = {"ok": False, "error": f"fake_error: {exc!r}"}
            fake._record(call)
            self._send(call.status, json.dumps(call.response).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def iter_texts(blocks: list[dict[str, Any]]) -> Iterator[str]:
    """Every text string inside Block Kit blocks (sections, contexts, headers, fields)."""
    for block in blocks:
        yield from _texts(block)


def _texts(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            yield node["text"]
        for key, value in node.items():
            if key != "text" or not isinstance(value, str):
                yield from _texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)
