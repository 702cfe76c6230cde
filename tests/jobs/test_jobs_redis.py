"""Jobs over a real Redis broker, processed by a real `labmate worker` process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import dispatch
from bot.origin import Origin
from labmate.settings import reset_settings
from models import audit
from models.db import session_scope
from models.decision import Decision

RUN_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


pytestmark = [pytest.mark.redis]


@pytest.fixture
def redis_worker(redis_url: str, lab_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A `labmate worker` on Redis under a key prefix of this test's own (other runs share the Redis)."""
    import uuid

    import redis

    prefix = f"labmate-test-{uuid.uuid4().hex[:10]}:"
    monkeypatch.setenv("LABMATE_BROKER_URL", redis_url)
    monkeypatch.setenv("LABMATE_BROKER_KEY_PREFIX", prefix)
    reset_settings()
    from tasks.app import reset

    reset()
    from labmate.bootstrap import prepare

    prepare()
    env = {**os.environ, "LABMATE_BROKER_URL": redis_url, "LABMATE_BROKER_KEY_PREFIX": prefix, "LABMATE_HOME": str(lab_home),
           "LABMATE_WORKER_PRELOAD": "false"}  # its jobs here never touch MLflow: skip ~4 s of CPU importing it
    log = lab_home / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "labmate.cli", "worker", "--concurrency", "1", "--loglevel", "INFO"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "labmate worker ready" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "worker did not start:\n" + log.read_text()
            time.sleep(0.05)
        yield redis_url
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        reset()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def _link_statuses() -> list[str]:
    with session_scope() as session:
        return [link.status for d in session.query(Decision) for link in d.links]


def test_decision_link_check_runs_on_a_separate_worker(redis_worker: str) -> None:
    reply = dispatch.handle(f"decide ship it run:{RUN_ID}", Origin(user="U1", channel="C1", source="slack"))
    assert reply.outcome == "ok" and len(reply.task_ids) == 1
    deadline = time.monotonic() + 60
    while _link_statuses() == ["pending"]:
        assert time.monotonic() < deadline, "the worker never checked the link"
        time.sleep(0.1)
    with session_scope() as session:
        decision = session.query(Decision).one()
        assert [(link.kind, link.status) for link in decision.links] == [("run", "missing")]
        assert decision.links[0].detail["reason"] == f"no run has the id, id prefix or name `{RUN_ID}`"
    deadline = time.monotonic() + 10
    while True:
        with session_scope() as session:
            row = session.execute(select(audit.AUDIT_EVENTS)).one()
        if row.outcome != "queued" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # this worker has no Slack token: its answer can't reach Slack, and the row says so (it said "ok")
    assert (row.verb, row.outcome) == ("decide", "undelivered")


def test_enqueue_is_by_name_and_mlflow_stays_out_of_the_bot_process(redis_worker: str) -> None:
    script = (
        "import sys; from bot import dispatch; from bot.origin import Origin; "
        f"r = dispatch.handle('decide x run:{RUN_ID}', Origin(user='U1', source='slack')); "
        "assert r.task_ids, r; print('mlflow' in sys.modules, 'tasks.decision_links' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
