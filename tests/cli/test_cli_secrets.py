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
    for command in ("help", "decide ship it run:0a1b2c3d4e5f60718293a4b5c6d7e8f9", "summary no-such-experiment", "decde"):
        done = subprocess.run([str(LABMATE), "say", command, "--json"], env=env, capture_output=True, text=True, timeout=120)
        outputs.append(done.stdout + done.stderr)
    log = lab_home / "labmate.log"
    outputs.append(log.read_text() if log.exists() else "")
    for secret in (TOKEN, SIGNING, APP_TOKEN):
        assert all(secret not in out for out in outputs)
