"""Hostile HTTP input against a real `labmate serve`: bodies that are not what Slack sends, unsigned or
signed, huge bodies, NUL bytes, and a flood of garbage next to a real command."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
from harness import wait_until
from slackreq import FORM, OverHTTP, Slack, forget_keys, signed_headers, unique

pytestmark = [pytest.mark.slow, pytest.mark.redis]

GARBAGE: list[tuple[bytes, str]] = [
    (b"{garbage", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b"123", "application/json"),
    (b"payload={bad", FORM),
    (b"payload=%5B1%2C2%5D", FORM),
    (b"\xff\xfe\x00bad utf-8 \xc3\x28", FORM),
    (b"\xff\xfe\x00bad utf-8 \xc3\x28", "application/json"),
    (b"", FORM),
    # signed shapes Bolt read without looking (`actions[0]`, `view["type"]`): a 500 after a traceback
    *[(urlencode({"payload": json.dumps(payload)}).encode(), FORM) for payload in (
        {"type": "block_actions", "user": {"id": "U0ALICE"}, "actions": []},
        {"type": "block_actions", "user": {"id": "U0ALICE"}, "actions": [{"value": "L1"}]},
        {"type": "view_submission", "user": {"id": "U0ALICE"}, "view": {"callback_id": "log_decision_modal"}},
        # our listeners read the view's id and its private_metadata: a traceback and an error id, no answer
        {"type": "view_submission", "user": {"id": "U0ALICE"},
         "view": {"type": "modal", "callback_id": "log_decision_modal", "private_metadata": "{}"}},
        {"type": "view_submission", "user": {"id": "U0ALICE"},
         "view": {"id": "V1", "type": "modal", "callback_id": "log_decision_modal", "private_metadata": "not json"}},
        {"type": "block_actions", "actions": [{"action_id": "lab:cancel:0", "value": "L1"}]},
        {"actions": [{"action_id": "lab:cancel:0"}], "user": {"id": "U0ALICE"}},
    )],
    (urlencode({"command": "/lab", "text": "decide no author #x"}).encode(), FORM),  # it was stored with no author
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, redis_url):
    """One served labmate for the module (nothing here changes its state beyond audit rows)."""
    from harness import FakeSlack, Lab, lab_env, unique_prefix

    home = tmp_path_factory.mktemp("hostile")
    fake = FakeSlack(token="xoxb-test").start()
    prefix = unique_prefix()
    lab = Lab(home, fake, lab_env(home, fake, broker_url=redis_url, database_url=f"sqlite:///{home / 'labmate.db'}",
                                  prefix=prefix))
    lab.serve(threads=4)
    yield lab
    lab.stop()
    fake.stop()
    forget_keys(redis_url, prefix)


def post(port: int, body: bytes, headers: dict[str, str], timeout: float = 10) -> tuple[int, str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        connection.request("POST", "/slack/events", body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace"), time.perf_counter() - started
    finally:
        connection.close()


def signed(body: bytes, content_type: str) -> dict[str, str]:
    """Slack's signature over the raw bytes (computed here on bytes, as Slack does)."""
    import hashlib
    import hmac

    from slackreq import SIGNING_SECRET

    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"content-type": content_type, "x-slack-request-timestamp": ts, "x-slack-signature": "v0=" + digest}


@pytest.mark.parametrize(("body", "content_type"), GARBAGE)
def test_unsigned_garbage_is_a_quick_401(served, body: bytes, content_type: str) -> None:
    status, _text, took = post(served.port, body, {"content-type": content_type})
    assert status == 401
    assert took < 1.0


@pytest.mark.parametrize(("body", "content_type"), GARBAGE)
def test_signed_garbage_is_a_quick_400(served, body: bytes, content_type: str) -> None:
    status, text, took = post(served.port, body, signed(body, content_type))
    assert status == 400, text
    assert took < 1.0


def test_a_bad_signature_on_a_real_command_is_a_401(served) -> None:
    slack = Slack(OverHTTP(served.port), "", secret="not-the-secret")
    assert slack.command("help").status == 401


def test_garbage_leaves_no_error_lines_in_the_log(served) -> None:
    for body, content_type in GARBAGE:
        post(served.port, body, {"content-type": content_type})
        post(served.port, body, signed(body, content_type))
    log = served.procs[0].output()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_a_flood_of_garbage_does_not_stall_a_signed_command(served) -> None:
    def garbage(i: int) -> int:
        body, content_type = GARBAGE[i % len(GARBAGE)]
        return post(served.port, body * 50, {"content-type": content_type})[0]

    slack = Slack(OverHTTP(served.port), "")
    with ThreadPoolExecutor(max_workers=16) as pool:
        flood = [pool.submit(garbage, i) for i in range(64)]
        started = time.perf_counter()
        answer = slack.command("help")
        took = time.perf_counter() - started
        statuses = {f.result() for f in flood}
    assert answer.status == 200 and "/lab" in answer.body
    assert took < 2.0
    assert statuses <= {401}


def test_a_body_over_the_limit_is_refused_before_it_is_read(served) -> None:
    from bot.http_guard import MAX_BODY_BYTES

    body = b"x" * (5 * 1024 * 1024)
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    started = time.perf_counter()
    connection.putrequest("POST", "/slack/events")
    connection.putheader("content-type", FORM)
    connection.putheader("content-length", str(len(body)))
    connection.endheaders()
    try:
        connection.send(body[: 64 * 1024])  # the server answers without waiting for the rest
    except OSError:
        pass
    answer = connection.getresponse()
    took = time.perf_counter() - started
    assert answer.status == 413
    assert str(MAX_BODY_BYTES) in answer.read().decode()
    assert took < 1.0
    connection.close()


def test_a_nul_byte_in_a_command_is_a_clear_message_and_audited(served) -> None:
    from sqlalchemy import select

    from models.audit import AUDIT_EVENTS
    from models.db import session_scope

    user = unique("U")
    slack = Slack(OverHTTP(served.port), "")
    answer = slack.command("decide ship\x00 it #release", user=user)
    assert answer.status == 200
    text = json.loads(answer.body)["text"]
    assert "NUL character" in text and "Remove it" in text

    def audited():
        with session_scope(f"sqlite:///{served.home / 'labmate.db'}") as session:
            return session.execute(select(AUDIT_EVENTS).where(AUDIT_EVENTS.c.user == user)).all()

    (row,) = wait_until(audited, timeout=5, what="the audit row")
    assert row.outcome == "user_error"
    assert row.text == "decide ship\ufffd it #release"


def test_healthz_and_unknown_paths(served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
    connection.request("GET", "/healthz")
    assert connection.getresponse().read() == b"ok"
    connection.request("GET", "/slack/events")
    response = connection.getresponse()
    response.read()
    assert response.status == 405
    connection.request("POST", "/nope", body=b"{}", headers=signed_headers("{}", content_type="application/json"))
    response = connection.getresponse()
    response.read()
    assert response.status == 404
    connection.close()
