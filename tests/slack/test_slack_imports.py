"""The Slack-facing process stays light: importing the app and answering commands never imports mlflow."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from fakeslack import FakeSlack
from slackreq import BOT_TOKEN, SIGNING_SECRET

SCRIPT = r"""
import json, sys, time, urllib.parse
from slack_bolt import BoltRequest
from slack_sdk.signature import SignatureVerifier

from labmate.bootstrap import prepare
prepare()
import bot.server
from bot.slack_app import build_app
after_import = sorted(m for m in ("mlflow", "sklearn", "matplotlib", "celery") if m in sys.modules)
app = build_app()
statuses = []
for i, text in enumerate(sys.argv[1:]):
    body = urllib.parse.urlencode({"command": "/lab", "text": text, "user_id": "U1", "channel_id": "C1",
                                   "team_id": "T1", "trigger_id": f"t{i}", "response_url": "http://127.0.0.1:9/r"})
    ts = str(int(time.time()))
    headers = {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": ts,
               "x-slack-signature": SignatureVerifier("%(secret)s").generate_signature(timestamp=ts, body=body)}
    response = app.dispatch(BoltRequest(body=body, headers=headers))
    statuses.append([response.status, json.loads(response.body).get("response_type")])
from models.audit import latest
from models.db import session_scope
with session_scope() as session:
    outcomes = [e.outcome for e in reversed(latest(session))]
print(json.dumps({"after_import": after_import, "statuses": statuses, "outcomes": outcomes,
                  "mlflow": "mlflow" in sys.modules,
                  "mlflow_modules": sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")[:5]}))
"""


def _empty(path: Path) -> Path:
    """A configuration file LABMATE_CONFIG can name: it must exist."""
    path.touch(exist_ok=True)
    return path


def _run(tmp_path: Path, fake: FakeSlack, *texts: str, **env: str) -> dict[str, object]:
    home = tmp_path / "sub-home"
    process_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LABMATE_HOME": str(home),
        "LABMATE_CONFIG": str(_empty(tmp_path / "none.toml")),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "LABMATE_SLACK_API_URL": fake.api_url,
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT % {"secret": SIGNING_SECRET}, *texts],
        env=process_env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_app_and_answering_commands_does_not_import_mlflow(tmp_path: Path, fake_slack: FakeSlack) -> None:
    out = _run(tmp_path, fake_slack, "decide drop bigrams #features", "decisions bigrams", "help", "ask why bigrams?")
    assert out["statuses"] == [[200, "in_channel"], [200, "ephemeral"], [200, "ephemeral"], [200, "ephemeral"]]
    assert out["after_import"] == []
    assert out["outcomes"] == ["ok", "ok", "ok", "ok"]
    assert out["mlflow"] is False, out["mlflow_modules"]


def test_enqueueing_a_link_check_does_not_import_mlflow(tmp_path: Path, fake_slack: FakeSlack, redis_url: str) -> None:
    """With a shared broker the link check is only enqueued (by name): still no mlflow in the process."""
    import redis

    client = redis.Redis.from_url(redis_url)
    run = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    try:
        out = _run(tmp_path, fake_slack, f"decide drop bigrams run:{run}", LABMATE_BROKER_URL=redis_url)
        assert out["statuses"] == [[200, "in_channel"]]
        # `queued`: the link check was published (a failed publish turns the audit row to `error`).
        # The queue itself isn't counted: other suites' workers may share this Redis DB.
        assert out["outcomes"] == ["queued"]
        assert out["mlflow"] is False, out["mlflow_modules"]
    finally:
        for raw in client.lrange("default", 0, -1):  # remove only the message this test enqueued
            message = json.loads(raw)
            if message.get("headers", {}).get("task") != "labmate.decisions.check_links":
                continue
            _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            if kwargs.get("reply_to", {}).get("response_url") == "http://127.0.0.1:9/r":
                client.lrem("default", 1, raw)
        client.close()


def test_serve_checks_slack_before_it_execs_uwsgi_without_loading_the_app(tmp_path: Path, fake_slack: FakeSlack) -> None:
    """`labmate serve` checks the credentials and the token, then execs uWSGI, whose workers load
    the app: the listeners, grammar, templates and settings' pydantic would be loaded for nothing."""
    probe = ("import json, sys; from bot.server import preflight; preflight(); "
             "print(json.dumps(sorted(m for m in ('bot.slack_app', 'bot.grammar', 'jinja2', 'pydantic') if m in sys.modules)))")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LABMATE_HOME": str(tmp_path / "home"),
           "LABMATE_CONFIG": str(_empty(tmp_path / "none.toml")), "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "LABMATE_SLACK_API_URL": fake_slack.api_url}
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assert fake_slack.calls("auth.test"), "the token was not checked"
