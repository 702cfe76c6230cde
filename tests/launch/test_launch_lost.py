"""A launch whose worker died: never re-run blindly. The reaper's per-task policy fails it (and its
MLflow run, and its card), or, when the project says `retry`, starts it again in a new MLflow run."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from labmate import outbox
from models import jobs, launches
from models.base import utcnow
from models.db import session_scope
from tasks import maintenance
from tests.launch.conftest import toml

pytestmark = [pytest.mark.slow]


class Recorder:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, dict[str, Any], str | None, bool]] = []

    def deliver(self, reply_to, template, context, *, key=None, final=True):
        self.delivered.append((template, context, key, final))
        return key


@pytest.fixture
def recorder(configured):
    from tasks.embedded import ensure_worker

    ensure_worker()  # imports the task modules (and their policies) and takes the jobs the reaper sends
    previous = outbox.installed()
    recording = Recorder()
    outbox.install(recording)
    yield recording
    if previous is not None:
        outbox.install(previous)


def orphan(*, project: str = "quick") -> tuple[int, str, str]:
    """What a worker SIGKILLed mid-run leaves: a running launch, its MLflow run RUNNING, its job's
    heartbeat stopped."""
    from tasks.mlflow_io import launch as mlflow_launch

    experiment_id = mlflow_launch.ensure_experiment("quick")
    run_id = mlflow_launch.create_run(
        experiment_id, run_name="lost", user="U1", source="x", entry_point="train", params={}, commit=None,
        launch_label="L1", sweep_label=None,
    )
    key = str(uuid.uuid4())
    with session_scope() as session:
        launch = launches.create(
            session, user="U1", channel="C1", project=project, entry_point="train", params={"epochs": "2", "lr": "0.1"},
            experiment="quick", reply_to={"channel": "C1", "source": "slack"}, task_id=key, total_steps=2,
        )
        launches.start(session, launch_id=launch.id, worker="dead:1")
        launches.set_run(session, launch_id=launch.id, run_id=run_id, experiment_id=experiment_id)
        kwargs = {"launch_id": launch.id, "project": project, "reply_to": launch.reply_to, "audit_id": None}
        jobs.add_queued(session, key=key, task="labmate.launch.run", kwargs=kwargs, audit_id=None)
        jobs.claim(session, key=key, task="labmate.launch.run", kwargs=kwargs, worker="dead:1")
        session.execute(jobs.JobRecord.__table__.update().values(heartbeat_at=utcnow() - timedelta(minutes=5)))
        return launch.id, key, run_id


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(run_id: str) -> str:
    from tasks import mlflow_io

    return str(mlflow_io.client().get_run(run_id).info.status)


def test_the_reaper_fails_a_lost_launch_its_run_and_its_card(recorder: Recorder, mlflow_uri: str) -> None:
    launch_id, key, run_id = orphan()
    done = maintenance.reap()
    assert done.given_up == [key] and done.resent == []
    with session_scope() as session:
        assert jobs.get(session, key=key).state == jobs.FAILED
        launch = launches.get(session, launch_id=launch_id)
        assert (launch.status, launch.reason) == ("failed", "It failed: its worker stopped while running it.")
    wait(lambda: status(run_id) == "FAILED", 60, "the MLflow run to be marked FAILED")
    card = wait(lambda: [d for d in recorder.delivered if d[2] == f"launch:{launch_id}"], 60, "the card")
    template, context, _, final = card[-1]
    assert (template, context["status"], final) == ("launch_card", "failed", True)
    assert maintenance.reap().given_up == []  # once


def test_a_redelivered_launch_job_fails_the_launch_instead_of_running_it_again(recorder: Recorder, mlflow_uri: str) -> None:
    from tasks.launches import run

    launch_id, _, run_id = orphan()
    [(_, context)] = run.run_launch(launch_id)
    assert context["status"] == "failed" and context["__delivery__"]["key"] == f"launch:{launch_id}"
    assert status(run_id) == "FAILED"
    with session_scope() as session:
        assert launches.get(session, launch_id=launch_id).attempts == 1  # not started again


def test_a_project_that_says_retry_starts_again_in_a_new_mlflow_run(recorder: Recorder, mlflow_uri: str, tmp_path) -> None:
    from labmate.settings import reset_settings

    (tmp_path / "labmate.toml").write_text(toml(on_worker_lost="retry"))
    reset_settings()
    launch_id, key, lost_run = orphan()
    done = maintenance.reap()
    assert done.resent == [key] and done.given_up == []

    def ended() -> launches.Launch | None:
        with session_scope() as session:
            launch = launches.get(session, launch_id=launch_id)
            session.expunge(launch)
            return launch if launch.status in launches.ENDED else None

    launch = wait(ended, 120, "the retried launch to end")
    assert (launch.status, launch.attempts) == ("finished", 2)
    assert launch.mlflow_run_id != lost_run
    assert status(lost_run) == "FAILED" and status(launch.mlflow_run_id) == "FINISHED"
