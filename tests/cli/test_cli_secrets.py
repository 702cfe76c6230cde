"""Secrets come from the environment only and never appear in output, logs or settings reprs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from labmate.settings import get_settings, reset_settings

TOKEN = "xoxb-SECRET-bot-token-4242"
SIGNING = "signing-SECRET-4242"
APP_TOKEN = "xapp-SECRET-app-token-4242"
LABMATE = Path(sys.executable).with_name("labmate")


def test_settings_repr_and_dump_hide_secrets(monkeypatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    reset_settings()
    settings = get_settings()
    shown = repr(settings) + str(settings) + json.dumps(settings.as_dict())
    for secret in (TOKEN, SIGNING, APP_TOKEN):
        assert secret not in shown
    assert settings.slack_bot_token is not None and settings.slack_bot_token.get_secret_value() == TOKEN


def test_commands_and_their_failures_never_print_or_log_secrets(lab_home: Path, migrated: str) -> None:
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SIGNING, "SLACK_APP_TOKEN": APP_TOKEN}
    outputs = []
    # an answer, a job whose link check fails, a user error, a typo: each ran and said something
    for command, code in (("help", 0), ("decide ship it run:0a1b2c3d4e5f60718293a4b5c6d7e8f9", 0),
                          ("summary no-such-experiment", 1), ("decde", 1)):
        done = subprocess.run([str(LABMATE), "say", command, "--json"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == code and json.loads(done.stdout), (command, done.stdout, done.stderr)
        outputs.append(done.stdout + done.stderr)
    outputs.append((lab_home / "labmate.log").read_text())
    for secret in (TOKEN, SIGNING, APP_TOKEN):
        assert all(secret not in out for out in outputs)


def test_a_token_in_a_git_project_uri_is_masked_in_chat_mlflow_and_the_log(lab_home: Path, migrated: str) -> None:
    """labmate.toml's project `uri` may carry a token (`https://bot:<token>@git…`): the dry run, the
    card of a launch whose fetch fails and the log line with git's whole answer show it masked."""
    token = "ghp-SECRET-git-token-4242"
    (lab_home.parent / "labmate.toml").write_text(
        '[projects.remote]\nuri = "https://bot:' + token + '@127.0.0.1:9/acme/train.git"\nversion = "main"\n'
        'entry_points = ["train"]\nexperiment = "remote"\n'
        "[projects.remote.parameters.train]\nepochs = {type = \"int\", default = 2}\n"
    )
    outputs = []
    for command, code in (("run remote --dry-run", 0), ("run remote", 1)):  # 1: the launch didn't start
        done = subprocess.run([str(LABMATE), "say", command], capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)
    log = (lab_home / "labmate.log").read_text()
    assert "https://bot:***@127.0.0.1:9/acme/train.git@main (fetched by the worker)" in outputs[0]
    assert "the worker could not fetch" in outputs[1] and "Failed to connect to 127.0.0.1 port 9" in outputs[1]
    assert "fetching https://bot:***@127.0.0.1:9/acme/train.git failed" in log  # git's answer was logged, masked
    assert all(token not in out for out in [*outputs, log])
