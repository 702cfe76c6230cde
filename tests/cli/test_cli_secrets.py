"""Secrets come from the environment only and never appear in output, logs or settings reprs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _mlflow_that_drops_requests() -> tuple[Any, int]:
    """Answers the check `labmate demo` makes first (experiments/search), then drops every other
    request, as a tracking server that went away mid-demo would."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/api/2.0/mlflow/experiments/search"):
                body = b'{"experiments": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.close_connection = True
                self.connection.close()

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_the_demo_failing_mid_way_says_so_in_a_line_without_the_servers_password(lab_home: Path) -> None:
    server, port = _mlflow_that_drops_requests()
    try:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://ml:ml-SECRET-pw@127.0.0.1:{port}",
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # fmt: skip
        done = subprocess.run([str(LABMATE), "demo"], env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "ml-SECRET-pw" not in out and "Traceback" not in out, out
    assert "The demo could not be set up:" in out and "ml:***@127.0.0.1" in out, out


def test_a_regression_target_mlflow_cant_load_is_named_without_the_servers_password(monkeypatch) -> None:
    import pytest

    from tasks.regress.errors import RegressError
    from tasks.regress.targets import _load_mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(RegressError) as raised:
        _load_mlflow("models:/shop@candidate", {"tracking_uri": "http://ml:ml-SECRET-pw@127.0.0.1:9"})
    assert "ml-SECRET-pw" not in str(raised.value) and "ml:***@127.0.0.1:9" in str(raised.value), raised.value
