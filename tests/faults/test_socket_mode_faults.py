"""Socket Mode under faults: Slack closes the connection and can't hand out a new one for a while.

A real `labmate serve --socket-mode` on PostgreSQL; Slack's side is the fake Web API with a fake
Socket Mode server (tests/slack/fakesocket.py). What the process's /healthz says is what compose's
health check and `labmate health bot` see."""

from __future__ import annotations

import pytest
from fakesocket import FakeSocketMode, command_payload, healthz
from harness import wait_until
from slackreq import free_port, unique

APP_TOKEN = "xapp-test"


@pytest.fixture
def socket_slack():
    with FakeSocketMode() as slack:
        yield slack


def test_a_dropped_connection_is_unhealthy_until_slack_gives_a_new_one_then_commands_are_answered_once(
    socket_slack: FakeSocketMode, make_lab
) -> None:
    setup = make_lab(postgres=True)
    fake = setup.lab.fake
    fake.app_token, fake.socket_url = APP_TOKEN, socket_slack.url
    port = free_port()
    serve = setup.lab.spawn("serve", "serve", "--socket-mode", "--host", "127.0.0.1", "--port", str(port),
                            SLACK_APP_TOKEN=APP_TOKEN)
    socket_slack.wait_connected(timeout=60)
    wait_until(lambda: healthz(port)[0] == 200, timeout=10, what="/healthz 200 once connected")

    # Slack closes the connection, and its first apps.connections.open after that fails.
    fake.fail("apps.connections.open", 1, status=500)
    socket_slack.drop()
    wait_until(lambda: healthz(port)[0] == 503, timeout=10, what="/healthz 503 while disconnected")
    # slack_sdk's monitor tries again (every 10 s, Bolt's ping interval): a new connection, healthy again
    socket_slack.wait_connected(2, timeout=40)
    wait_until(lambda: healthz(port)[0] == 200, timeout=10, what="/healthz 200 after reconnecting")
    assert len(fake.calls("apps.connections.open")) >= 3, fake.calls("apps.connections.open")

    user = unique("U")
    ack = socket_slack.send("slash_commands", command_payload("decide keep the baseline #release", user=user))
    assert ack["payload"]["text"].startswith("Decision #1 logged: keep the baseline"), ack
    assert [d.text for d in setup.decisions()] == ["keep the baseline"]
    assert [(r.verb, r.outcome) for r in setup.audit(user=user)] == [("decide", "ok")]
    assert serve.process.poll() is None
    assert "Traceback" not in serve.output(), serve.output()[-3000:]
