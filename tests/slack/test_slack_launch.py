"""A launch from Slack: the slash command, the one card posted and edited in the channel, the Stop
button (a typed `cancel` run as the clicker), and a Slack retry that launches once. In process, against
the fake Slack, with the real embedded worker and a real training process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fakeslack import iter_texts
from slackreq import FORM, Lab, poll, unique

from tests.experiments.conftest import empty_mlflow_db  # noqa: F401
from tests.launch.conftest import toml

pytestmark = [pytest.mark.slow]


@pytest.fixture
def launching(inprocess: Lab, lab_home: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_db: Path) -> Lab:  # noqa: F811
    from labmate.settings import reset_settings

    Path(os.environ["LABMATE_CONFIG"]).write_text(toml(), encoding="utf-8")
    (lab_home / "mlflow").mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_mlflow_db, lab_home / "mlflow" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{lab_home / 'mlflow' / 'mlflow.db'}")
    reset_settings()
    return inprocess


def shown(params: dict[str, Any]) -> str:
    return "\n".join([params.get("text", ""), *iter_texts(params.get("blocks", []))])


def card_calls(lab: Lab, channel: str, method: str) -> list[Any]:
    return [
        c for c in lab.fake.calls(method)
        if c.params.get("channel") == channel and (c.params.get("metadata") or {}).get("event_payload", {}).get("key") == "launch:1"
    ]


def test_one_card_is_posted_edited_and_stopped_by_its_button(launching: Lab) -> None:
    lab, channel = launching, unique("C")
    ack = lab.slack.command("run quick epochs=300 sleep=0.2", user="U0ALICE", channel=channel)
    data = ack.json()
    assert data["response_type"] == "ephemeral"
    assert "*L1* queued: `quick:train`" in shown(data)

    [post] = lab.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == channel, timeout=120)
    assert post.params["metadata"]["event_payload"]["key"] == "launch:1"
    ts = post.response["ts"]
    poll(
        lambda: any("▰" in shown(c.params) for c in card_calls(lab, channel, "chat.update")),
        timeout=120, what="a progress update of the card",
    )
    button = next(
        e for c in card_calls(lab, channel, "chat.update") for b in c.params["blocks"] if b["type"] == "actions"
        for e in b["elements"]
    )
    assert (button["action_id"], button["value"], button["text"]["text"]) == ("lab:cancel:0", "L1", "Stop")

    refused = lab.slack.block_action(action_id="lab:cancel:0", value="L1", user="U0MALLORY", channel=channel,
                                     message={"type": "message", "ts": ts, "text": "card", "user": "UBOT"})
    assert refused.status == 200 and refused.body == ""
    [private] = lab.fake.wait_for("response_url", where=lambda c: "Only whoever launched L1" in json.dumps(c.params))
    assert private.params["response_type"] == "ephemeral"

    stop = lab.slack.block_action(action_id="lab:cancel:0", value="L1", user="U0ALICE", channel=channel,
                                  message={"type": "message", "ts": ts, "text": "card", "user": "UBOT"})
    assert stop.status == 200
    poll(
        lambda: any(": *killed*, stopped by <@U0ALICE>" in shown(c.params) for c in card_calls(lab, channel, "chat.update")),
        timeout=60, what="the card to say killed",
    )
    lab.drain()
    posts = card_calls(lab, channel, "chat.postMessage")
    assert len(posts) == 1, "one message per launch"
    updates = card_calls(lab, channel, "chat.update")
    assert {c.params["ts"] for c in updates} == {ts}
    final = [c for c in updates if ": *killed*" in shown(c.params)]
    assert all(b["type"] != "actions" for c in final for b in c.params["blocks"])
    assert not any(": *running*" in shown(c.params) for c in updates[updates.index(final[0]):]), "no update after the end"
    verbs = [(e.user, e.verb, e.outcome) for e in lab.audit() if e.verb in ("run", "cancel")]
    assert ("U0MALLORY", "cancel", "refused") in verbs
    poll(lambda: [e.outcome for e in lab.audit(verb="cancel", user="U0ALICE")] == ["ok"], timeout=30, what="the cancel audited ok")


def test_a_slack_retry_of_the_same_command_launches_once(launching: Lab) -> None:
    lab, channel = launching, unique("C")
    body = lab.slack.command_body("run quick epochs=1 --dry-run", user="U0ALICE", channel=channel)
    assert "Dry run" in lab.slack.send(body, FORM).body
    body = lab.slack.command_body("run quick epochs=1", user="U0ALICE", channel=channel)
    first, again = lab.slack.send(body, FORM), lab.slack.send(body, FORM)
    assert first.status == again.status == 200
    assert "*L1* queued" in first.body and again.body == ""
    from models import launches
    from models.db import session_scope

    with session_scope(lab.db_url) as session:
        assert [x.id for x in session.query(launches.Launch).all()] == [1]
    poll(
        lambda: any(": *finished*" in shown(c.params) for c in card_calls(lab, channel, "chat.update"))
        or any(": *finished*" in shown(c.params) for c in card_calls(lab, channel, "chat.postMessage")),
        timeout=120, what="the card to say finished",
    )


def test_the_slack_process_checks_and_enqueues_launches_without_importing_mlflow(
    tmp_path: Path, fake_slack: Any, redis_url: str
) -> None:
    """Parameters are checked from the MLproject with PyYAML; the launch is enqueued by task name."""
    import uuid

    import redis
    from test_slack_imports import _run

    prefix = f"labmate-test-{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(redis_url)
    try:
        out = _run(
            tmp_path, fake_slack, "run sales-agent epochs=2 --dry-run", "run sales-agent alpha=x", "status",
            "run sales-agent epochs=2", "cancel L1",
            LABMATE_BROKER_URL=redis_url, LABMATE_BROKER_KEY_PREFIX=prefix,
        )
        assert [s[0] for s in out["statuses"]] == [200] * 5
        assert out["outcomes"] == ["ok", "user_error", "ok", "queued", "queued"]
        assert out["mlflow"] is False, out["mlflow_modules"]
    finally:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
