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
