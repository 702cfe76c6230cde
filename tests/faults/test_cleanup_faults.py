"""Clean-up under faults, with real processes: `labmate serve`, a worker, beat (the reaper), Redis, the fake
Slack and an MLflow SQLite store.

- The worker SIGKILLed while it deletes a proposal's runs: the reaper hands the job to a new worker, and each
  run is deleted once (one audit row per run, one decision), the proposal's message ends final.
- Slack answering 429 to the proposal's post: it is posted once, when Slack takes it.
- MLflow unreachable during the daily clean-up: logged, nothing posted, no proposal stored; the next beat
  (MLflow back) proposes as usual.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakeslack import iter_texts
from harness import wait_until
from slackreq import OverHTTP, Slack

from tests.cleanup.conftest import TOML, populate
from tests.experiments.conftest import empty_mlflow_db  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def deploy(make_lab: Any, tmp_path: Path, empty_db: Path, **env: str) -> Any:
    root = tmp_path / "mlflow"
    root.mkdir()
    shutil.copy(empty_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    runs = populate(uri, root)
    setup = make_lab(MLFLOW_TRACKING_URI=uri, **env)
    (setup.lab.home / "labmate.toml").write_text(TOML.format(filters=""))
    setup.extra.update(mlflow=uri, runs=runs, mlflow_db=root / "mlflow.db")
    return setup


def slack(setup: Any) -> Slack:
    return Slack(OverHTTP(setup.lab.port), setup.db_url, response_base=setup.lab.fake.base_url + "response/")


def proposal_texts(setup: Any, channel: str) -> list[str]:
    calls = [c for c in setup.lab.fake.calls() if c.method in ("chat.postMessage", "chat.update") and c.ok
             and c.params.get("channel") == channel
             and str((c.params.get("metadata") or {}).get("event_payload", {}).get("key", "")).startswith("cleanup:")]
    return ["\n".join([c.params.get("text", ""), *iter_texts(c.params.get("blocks", []))]) for c in calls]


def candidates(setup: Any) -> dict[str, str]:
    from models import cleanup as proposals
    from models.db import session_scope

    with session_scope(setup.db_url) as session:
        return {c.run_name: c.state for c in session.query(proposals.Candidate).all()}


def label_of(setup: Any, owner: str) -> str:
    from models import cleanup as proposals
    from models.db import session_scope

    with session_scope(setup.db_url) as session:
        [found] = [p.label for p in session.query(proposals.Proposal).all() if p.owner == owner]
        return found


def test_a_worker_killed_while_deleting_deletes_each_run_once(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup = deploy(make_lab, tmp_path, empty_mlflow_db)
    with setup.lab.starting():
        setup.lab.serve()
        worker = setup.lab.worker(queues="default")
        setup.lab.beat()
    client = slack(setup)
    client.command("cleanup sales-agent", user="U0ALICE", channel="C0LAB")
    wait_until(lambda: proposal_texts(setup, "U0ALICE"), timeout=90, what="alice's proposal")
    label = label_of(setup, "alice")

    # MLflow's store held by another writer: the delete job waits inside MLflow, and its worker dies there
    blocker = sqlite3.connect(setup.extra["mlflow_db"], timeout=1)
    blocker.execute("BEGIN EXCLUSIVE")
    client.block_action(action_id="lab:delete:0", value=label, user="U0ALICE", channel="U0ALICE")
    wait_until(lambda: any(j.task == "labmate.cleanup.answer" and j.state == "running" for j in setup.jobs()),
               timeout=30, what="the delete job to start")
    worker.kill()
    blocker.rollback()
    blocker.close()
    assert candidates(setup)["died-early"] == "deleting"

    setup.lab.worker(queues="default")
    alices = ("died-early", "died-early-2", "decided")  # no decision links `decided` in this knowledge base
    wait_until(lambda: {candidates(setup)[n] for n in alices} == {"deleted"}, timeout=90,
               what="the runs deleted by the job's next worker")
    final = wait_until(lambda: [t for t in proposal_texts(setup, "U0ALICE") if "All answered" in t],
                       timeout=60, what="the proposal's final state")
    assert "*deleted*" in final[-1]
    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri=setup.extra["mlflow"])
    runs = setup.extra["runs"].runs
    assert {mlflow.get_run(runs[n]).info.lifecycle_stage for n in alices} == {"deleted"}
    assert len(setup.audit(verb="cleanup.delete")) == 3
    assert [d.text for d in setup.decisions()] == ["cleaned 3 stale runs from sales-agent"]
    [answer] = [j for j in setup.jobs() if j.task == "labmate.cleanup.answer"]
    assert answer.state == "done" and answer.attempts >= 2


def test_slack_429_on_the_proposal_posts_it_once(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup = deploy(make_lab, tmp_path, empty_mlflow_db)
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker(queues="default")
    setup.lab.fake.rate_limit("chat.postMessage", 4)
    slack(setup).command("cleanup sales-agent", user="U0ALICE", channel="C0LAB")
    wait_until(lambda: proposal_texts(setup, "U0ALICE"), timeout=90, what="alice's proposal after the 429s")
    posts = [c for c in setup.lab.fake.calls("chat.postMessage") if c.params.get("channel") == "U0ALICE"]
    assert [c.status for c in posts if c.ok] == [200]
    assert sum(c.status == 429 for c in setup.lab.fake.calls("chat.postMessage")) == 4
    assert "died-early" in proposal_texts(setup, "U0ALICE")[0]


def _daily(setup: Any, **env: str) -> None:
    """What beat does at the configured hour: send the daily clean-up job."""
    code = "from tasks.app import celery_app; celery_app().send_task('labmate.cleanup.daily')"
    subprocess.run([sys.executable, "-c", code], env={**setup.lab.env, **env}, check=True, timeout=60)


def test_mlflow_unreachable_during_the_daily_clean_up_is_logged_and_retried_until_it_is_back(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    """The daily scan is sent once a day: an outage at that minute lost the day's proposals (the next try
    was tomorrow's). It runs again with backoff, by itself, and proposes once MLflow answers."""
    setup = deploy(make_lab, tmp_path, empty_mlflow_db)
    down = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9/", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    worker = setup.lab.spawn("worker", "worker", "--concurrency", "1", "--queues", "default", "--loglevel", "INFO", **down)
    wait_until(lambda: "labmate worker ready" in worker.output(), timeout=60, what="the worker")
    _daily(setup)
    wait_until(lambda: "clean-up of sales-agent deferred, tried again shortly" in worker.output(), timeout=60,
               what="the deferred clean-up in the log")
    assert candidates(setup) == {}
    assert [c for c in setup.lab.fake.calls() if c.method.startswith("chat.")] == []  # nobody was messaged
    worker.stop()

    setup.lab.worker(queues="default")  # MLflow is back; the job's retry is waiting in the queue
    wait_until(lambda: proposal_texts(setup, "U0ALICE"), timeout=120, what="the retried daily scan's proposal")
    assert candidates(setup)["died-early"] == "pending"
    assert len(proposal_texts(setup, "U0ALICE")) == 1
