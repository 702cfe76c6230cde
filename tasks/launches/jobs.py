"""The Celery tasks of launches: thin, over the plain functions in run.py and sweeps.py.

`labmate.launch.run` runs on the `launch` queue (a worker that may be on a GPU machine); the card,
sweep start and sweep summary jobs are quick and run on `default`. A launch must never be re-run
blindly, so its task is acknowledged when it starts (not after: a training can outlast the broker's
visibility timeout, and a redelivered message would only find the launch running), and what happens
when its worker dies is the project's `on_worker_lost` policy, applied by the reaper
(tasks.maintenance.on_worker_lost) or by the job itself when it runs again.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from sqlalchemy.orm import Session

from labmate.settings import get_settings
from models import jobs
from tasks.jobs import JobTask, run_job
from tasks.launches import run, sweeps
from tasks.maintenance import FAIL, RESEND, Decision, on_worker_lost

MARGIN_S = 300


def _longest_time_limit() -> float:
    return max((p.time_limit for p in get_settings().projects.values()), default=3600.0)


class LaunchTask(JobTask):
    """A training run: acknowledged at start (see the module's docstring); Celery's soft time limit, a
    backstop behind each project's own `time_limit` (which the supervisor enforces), ends it KILLED."""

    acks_late = False
    reject_on_worker_lost = False
    soft_time_limit = _longest_time_limit() + MARGIN_S
    time_limit = _longest_time_limit() + 2 * MARGIN_S


@shared_task(name=run.RUN_TASK, base=LaunchTask, bind=True)
def run_task(self: Task, launch_id: int, reply_to: dict[str, Any], audit_id: int | None = None, project: str = "") -> str:
    return run_job(self, "launch", lambda: run.run_launch(launch_id), reply_to, audit_id)


@shared_task(name=run.CARD_TASK, base=JobTask, bind=True)
def card_task(
    self: Task, launch_id: int, reply_to: dict[str, Any], audit_id: int | None = None, closes_audit: bool = True
) -> str:
    """The card as the launch's row says. It closes its command's audit row (a cancel's), unless another
    job of the command does (a run's: the launch job, when the run ends)."""
    return run_job(self, "launch card", lambda: run.card_job(launch_id), reply_to, audit_id if closes_audit else None)


@shared_task(name=sweeps.START_TASK, base=JobTask, bind=True)
def sweep_start_task(self: Task, sweep_id: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "sweep start", lambda: sweeps.start(sweep_id), reply_to, audit_id)


@shared_task(name=sweeps.SUMMARY_TASK, base=JobTask, bind=True)
def sweep_summary_task(self: Task, sweep_id: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "sweep summary", lambda: sweeps.summary(sweep_id), reply_to, audit_id)


def _decide(job: jobs.JobRecord) -> Decision:
    project = get_settings().projects.get(str(job.kwargs.get("project", "")))
    return RESEND if project is not None and project.on_worker_lost == "retry" else FAIL


def _settle(session: Session, job: jobs.JobRecord, why: str) -> list[str]:
    return run.lost(session, int(job.kwargs["launch_id"]), why)


on_worker_lost(run.RUN_TASK, decide=_decide, settle=_settle)
