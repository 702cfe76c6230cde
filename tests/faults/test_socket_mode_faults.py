"""Socket Mode under faults: Slack closes the connection and can't hand out a new one for a while;
the network between them freezes; the process is stopped while it works on what Slack sent.

A real `labmate serve --socket-mode` on PostgreSQL; Slack's side is the fake Web API with a fake
Socket Mode server (tests/slack/fakesocket.py). What the process's /healthz says is what compose's
health check and `labmate health bot` see."""

from __future__ import annotations

import signal
import time

import pytest
from fakesocket import FakeSocketMode, command_payload, event_payload, healthz
from harness import TcpProxy, wait_until
from slackreq import free_port, message_ts, unique

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
    # slack_sdk's monitor tries again (every ping interval): a new connection, healthy again
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


def test_sigterm_closes_the_connection_and_finishes_a_reaction_already_acked_then_exits_0(
    socket_slack: FakeSocketMode, make_lab
) -> None:
    """A reaction is acked at once and handled in a lazy listener: stopped while that reads the message
    (conversations.history held 6 s), serve takes nothing new but finishes it (decision, audit row,
    reply), says what it waits for, and exits 0 within docker's 10 s."""
    setup = make_lab(postgres=True)
    lab, fake = setup.lab, setup.lab.fake
    fake.app_token, fake.socket_url = APP_TOKEN, socket_slack.url
    serve = lab.spawn("serve", "serve", "--socket-mode", "--host", "127.0.0.1", "--port", str(free_port()),
                      SLACK_APP_TOKEN=APP_TOKEN, LABMATE_SLACK_TIMEOUT="10")
    lab.worker()
    socket_slack.wait_connected(timeout=60)
    channel, ts, user = unique("C"), message_ts(), unique("U")
    fake.add_message(channel, {"ts": ts, "user": "U0AUTHOR", "text": "we ship the candidate #release"})
    fake.stall("conversations.history", 6)
    event = {"type": "reaction_added", "user": user, "reaction": "memo", "item_user": "U0AUTHOR",
             "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": message_ts()}
    ack = socket_slack.send("events_api", event_payload(event))
    assert "payload" not in ack, ack  # acked at once: the work goes on after the ack
    fake.wait_in_flight("conversations.history", timeout=10)

    stopped = time.monotonic()
    serve.process.send_signal(signal.SIGTERM)
    # slack_sdk's reader gives the socket up within its 3 s read timeout; the read goes on meanwhile
    wait_until(lambda: socket_slack.connected() == 0, timeout=4.5, what="the connection closed")
    assert serve.process.poll() is None  # still finishing the reaction
    assert serve.process.wait(timeout=10) == 0, serve.output()[-3000:]
    took = time.monotonic() - stopped
    assert 4.5 <= took < 9, took  # waited for the held read, and no longer than docker's stop timeout allows

    (decision,) = setup.decisions()
    assert (decision.text, decision.source_ts) == ("we ship the candidate", ts)
    assert [(r.verb, r.outcome) for r in setup.audit(user=user)] == [("decide", "ok")]
    (reply,) = fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == channel, timeout=20)
    assert f"Decision #{decision.id}" in reply.params["text"], reply.params
    output = serve.output()
    stopping = [line for line in output.splitlines() if "SIGTERM" in line]
    assert len(stopping) == 1 and "waiting up to" in stopping[0] and "1 acked request" in stopping[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert APP_TOKEN not in output and "xoxb-" not in output


def test_a_frozen_network_turns_healthz_503_within_15_s(socket_slack: FakeSocketMode, make_lab) -> None:
    """Half-open: the connection stays open and nothing passes. slack_sdk itself calls it stale only after
    four ping intervals (40 s under Bolt's default); /healthz goes by the age of the last pong instead,
    and a healthy connection stays 200 across several pings."""
    setup = make_lab()
    fake = setup.lab.fake
    relay = TcpProxy("127.0.0.1", socket_slack.port).start()
    try:
        fake.app_token, fake.socket_url = APP_TOKEN, socket_slack.url.replace(f":{socket_slack.port}/", f":{relay.port}/")
        port = free_port()
        serve = setup.lab.spawn("serve", "serve", "--socket-mode", "--host", "127.0.0.1", "--port", str(port),
                                SLACK_APP_TOKEN=APP_TOKEN)
        socket_slack.wait_connected(timeout=60)
        wait_until(lambda: healthz(port)[0] == 200, timeout=10, what="/healthz 200 once connected")
        healthy_until = time.monotonic() + 8  # more than one ping interval: pongs keep it healthy
        while time.monotonic() < healthy_until:
            assert healthz(port)[0] == 200
            time.sleep(0.5)

        relay.freeze()
        frozen = time.monotonic()
        wait_until(lambda: healthz(port)[0] == 503, timeout=16, what="/healthz 503 once the network froze", interval=0.25)
        assert time.monotonic() - frozen <= 15.5
        assert socket_slack.connected() == 1  # still open on Slack's side: half-open, not dropped
        assert serve.process.poll() is None
        assert "Traceback" not in serve.output(), serve.output()[-3000:]
    finally:
        setup.lab.stop()
        relay.close()
