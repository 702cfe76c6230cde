"""`labmate digest` as a user runs it: printed without a Slack token, posted once a day with one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.slack.conftest import fake_slack  # noqa: F401
from tests.watch.conftest import configure, end_run

LABMATE = Path(sys.executable).parent / "labmate"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LABMATE), "digest", *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_digest_now_without_a_token_prints_it_here(watched) -> None:
    end_run(watched, "fresh", f1=0.97)
    done = _run("--now")
    assert done.returncode == 0, done.stderr
    assert "Daily digest" in done.stdout and "sales-agent: 1 started · 1 finished · 0 failed" in done.stdout
    assert "New bests" in done.stdout and "fresh" in done.stdout
    assert "Traceback" not in done.stderr


def test_digest_lists_the_schedule_and_refuses_an_unknown_channel(watched, tmp_path: Path) -> None:
    configure(tmp_path, tables=("[[digest.channels]]", 'channel = "C0DIGEST"', 'at = "08:30"',
                                'timezone = "Europe/Paris"'))  # fmt: skip
    listed = _run()
    assert listed.returncode == 0 and "C0DIGEST: every day at 08:30 (Europe/Paris)" in listed.stdout
    unknown = _run("--now", "--channel", "C0NOPE")
    assert unknown.returncode == 1 and "`C0NOPE` has no digest in labmate.toml" in unknown.stdout


def test_digest_now_with_a_token_posts_once_a_day(watched, tmp_path: Path, fake_slack) -> None:  # noqa: F811
    configure(tmp_path, tables=("[[digest.channels]]", 'channel = "C0DIGEST"', 'at = "23:59"'))
    end_run(watched, "fresh", f1=0.97)
    env = {"SLACK_BOT_TOKEN": "xoxb-test", "LABMATE_SLACK_API_URL": fake_slack.api_url}
    first = _run("--now", **env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "C0DIGEST: posted the digest of" in first.stdout
    again = _run("--now", **env)
    assert again.returncode == 0 and "was already posted; nothing posted" in again.stdout
    [post] = fake_slack.posted("C0DIGEST")
    assert "Daily digest" in post.params["text"]
    assert fake_slack.uploads(), "the chart goes with it"
