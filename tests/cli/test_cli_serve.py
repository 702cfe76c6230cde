"""`labmate serve` before it serves: one line for what can't work, serving anyway when Slack is only
unreachable for now."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slack"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from fakeslack import FakeSlack
from fakesocket import FakeSocketMode, command_payload, healthz
from harness import Lab, free_port, lab_env, unique_prefix, wait_until
from slackreq import OverHTTP, Slack

LABMATE = str(Path(sys.executable).with_name("labmate"))


def _serve(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LABMATE, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def test_without_credentials_it_says_what_is_missing_in_one_line(lab_home: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LABMATE_"))}
    env.update(LABMATE_HOME=str(lab_home), SLACK_SIGNING_SECRET="x")
    done = _serve(env, tmp_path)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == [lines[0]] and "needs SLACK_BOT_TOKEN in the environment" in lines[0], lines
    assert "Traceback" not in done.stderr


def test_a_token_slack_rejects_stops_it_in_one_line(lab_home: Path, tmp_path: Path) -> None:
    with FakeSlack(token="xoxb-the-real-one") as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LABMATE_"))}
        env.update(LABMATE_HOME=str(lab_home), SLACK_BOT_TOKEN="xoxb-wrong", SLACK_SIGNING_SECRET="x",
                   LABMATE_SLACK_API_URL=fake.api_url)
        done = _serve(env, tmp_path)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Slack refused SLACK_BOT_TOKEN (invalid_auth)" in lines[0], lines


@pytest.mark.slow
@pytest.mark.redis
def test_an_unreachable_slack_is_a_warning_and_it_serves(tmp_path: Path, redis_url: str) -> None:
    fake = FakeSlack(token="xoxb-test").start()
    home = tmp_path / "home"
    home.mkdir()
    env = lab_env(home, fake, broker_url=redis_url, database_url=f"sqlite:///{home / 'labmate.db'}", prefix=unique_prefix())
    fake.stop()  # nothing listens there any more: Slack's Web API is unreachable
    lab = Lab(home, fake, env)
    try:
        started = time.monotonic()
        proc = lab.serve()
        assert time.monotonic() - started < 30
        wait_until(lambda: "can't be reached" in proc.output(), timeout=5, what="the warning")
        assert "Traceback" not in proc.output()
        assert proc.process.poll() is None
        answer = Slack(OverHTTP(lab.port), "").command("help")
        assert answer.status in (200, 401), answer.body  # served, whatever Bolt makes of a Slack it can't ask
    finally:
        lab.stop()


def _socket_mode_env(lab_home: Path, api_url: str, app_token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LABMATE_"))}
    # No SLACK_SIGNING_SECRET: Socket Mode's requests come over the app's own connection, unsigned.
    env.update(LABMATE_HOME=str(lab_home), SLACK_BOT_TOKEN="xoxb-test", SLACK_APP_TOKEN=app_token, LABMATE_SLACK_API_URL=api_url)
    return env


def _socket_serve(port: int | None = None) -> list[str]:
    """Socket Mode serves /healthz too: on a free port of the loopback, never a shared default."""
    return [LABMATE, "serve", "--socket-mode", "--host", "127.0.0.1", "--port", str(port or free_port())]


def test_socket_mode_answers_over_its_socket_and_its_healthz_says_connected(lab_home: Path, tmp_path: Path) -> None:
    """The whole Socket Mode path with Slack's side faked: apps.connections.open, the WebSocket, a slash
    command's envelope acked with its answer, the audit row; /healthz 200 once connected, as compose's
    health check and `labmate health bot` read it."""
    port = free_port()
    with FakeSlack(token="xoxb-test", app_token="xapp-1") as fake, FakeSocketMode() as slack:
        fake.socket_url = slack.url
        env = _socket_mode_env(lab_home, fake.api_url, "xapp-1")
        proc = subprocess.Popen(_socket_serve(port), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            slack.wait_connected()
            assert wait_until(lambda: healthz(port)[0] == 200, timeout=10, what="/healthz 200")
            ack = slack.send("slash_commands", command_payload("decide ship it <b> #release", user="U0SOCKET"))
            assert ack["payload"]["text"].startswith("Decision #1 logged: ship it"), ack
            assert "&lt;b&gt;" in ack["payload"]["text"]  # escaped for mrkdwn, as over HTTP
            health = subprocess.run([LABMATE, "health", "bot", "--port", str(port)], env=env, capture_output=True,
                                    text=True, timeout=30)
            assert health.returncode == 0 and "answered 200" in health.stdout + health.stderr, health
            assert healthz(port) == (200, "ok")
            assert len(fake.calls("apps.connections.open")) == 1  # one connection, kept
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out
    from models import audit
    from models.db import session_scope

    with session_scope(f"sqlite:///{lab_home / 'labmate.db'}") as session:
        rows = [r for r in audit.latest(session) if r.user == "U0SOCKET"]
    assert [(r.verb, r.source, r.outcome) for r in rows] == [("decide", "slack", "ok")], rows


def test_socket_mode_without_credentials_names_all_it_needs_in_one_line(lab_home: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "LABMATE_"))}
    env.update(LABMATE_HOME=str(lab_home))
    done = subprocess.run([LABMATE, "serve", "--socket-mode"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "labmate serve --socket-mode needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN" in lines[0], lines
    assert "SIGNING" not in lines[0] and "App-Level Token" in lines[0]


def test_socket_mode_with_an_app_token_slack_rejects_stops_in_one_line(lab_home: Path, tmp_path: Path) -> None:
    with FakeSlack(token="xoxb-test") as fake:  # knows only the bot token: the app token is refused
        done = subprocess.run(_socket_serve(), env=_socket_mode_env(lab_home, fake.api_url, "xapp-wrong"),
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert [c.method for c in fake.calls()] == ["auth.test", "apps.connections.open"]
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "will be unused" not in done.stderr, done.stderr
    # slack_sdk logs the refusal itself (one ERROR line) before labmate's line says what to do
    assert done.stderr.strip().splitlines()[-1].startswith("Slack refused SLACK_APP_TOKEN (invalid_auth): "), done.stderr


def test_socket_mode_with_slack_unreachable_keeps_trying_with_backoff(lab_home: Path, tmp_path: Path) -> None:
    """Not a traceback and an exit: Socket Mode can't serve before it connects, so it tries again,
    further apart each time, and says so in one line each time."""
    api_url = f"http://127.0.0.1:{free_port()}/api/"  # nothing listens there
    port = free_port()
    proc = subprocess.Popen(_socket_serve(port), env=_socket_mode_env(lab_home, api_url, "xapp-1"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        while sum("Socket Mode can't connect" in line for line in lines) < 2:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line, f"it stopped: {lines}"
            lines.append(line)
        assert proc.poll() is None
        assert healthz(port) == (503, "not connected to Slack: Socket Mode is connecting")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not any("Traceback" in line for line in lines), lines
    waits = [float(line.rsplit("trying again in ", 1)[1].split()[0]) for line in lines if "trying again in" in line]
    assert len(waits) == 2 and 1 <= waits[0] <= 2 <= waits[1] <= 3, waits  # slack_sdk's backoff: 1 s, 2 s, … plus jitter


def test_socket_mode_on_a_taken_port_stops_at_once_in_one_line(lab_home: Path, tmp_path: Path) -> None:
    """Before the token checks and the warm-up: the health check could never pass on that port."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api_url = f"http://127.0.0.1:{free_port()}/api/"  # nothing listens there: never asked
        done = subprocess.run(_socket_serve(port), env=_socket_mode_env(lab_home, api_url, "xapp-1"), cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"can't serve /healthz on 127.0.0.1:{port} (Address already in use)"), lines
    assert "--port" in lines[0]


def test_the_socket_mode_health_check_serves_an_ipv6_address() -> None:
    """`--host ::1` (or `::`) was refused: the health server only knew IPv4."""
    import socket

    from bot.server import HealthServer

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this host has no IPv6 loopback")
    port = free_port()
    health = HealthServer.open("::1", port)
    try:
        assert healthz(port, host="::1") == (503, "not connected to Slack: Socket Mode is connecting")
        health.connected = lambda: True
        assert healthz(port, host="::1") == (200, "ok")
    finally:
        health.close()
    assert healthz(port, host="::1")[0] == 0
    both = HealthServer.open("::", port)  # every address, IPv4 too
    try:
        assert healthz(port, host="127.0.0.1")[0] == healthz(port, host="::1")[0] == 503
    finally:
        both.close()


def test_socket_mode_listens_on_the_loopback_unless_told(lab_home: Path, tmp_path: Path) -> None:
    """Socket Mode was chosen to take no requests from outside: only its /healthz listens, and only
    where a health check beside it can reach it."""
    port = free_port()
    with FakeSlack(token="xoxb-test", app_token="xapp-1") as fake, FakeSocketMode() as slack:
        fake.socket_url = slack.url
        proc = subprocess.Popen([LABMATE, "serve", "--socket-mode", "--port", str(port)],
                                env=_socket_mode_env(lab_home, fake.api_url, "xapp-1"), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            slack.wait_connected()
            wait_until(lambda: healthz(port)[0] == 200, timeout=10, what="/healthz 200")
            listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
            assert listening.split()[3] == f"127.0.0.1:{port}", listening
        finally:
            proc.terminate()
            proc.wait(timeout=30)
