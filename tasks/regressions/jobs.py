"""The Celery tasks of regression runs: thin, over the plain functions in work.py.

start, chunks and the report run on the `regress` queue (routed by name, `labmate.regress.*`); the card
and promote are quick and run on `default`. All are acknowledged late and safe to run again: a chunk
whose worker died is delivered again (or re-sent by the reaper) and counts once; a chunk given up
after repeated deaths ends its run `error` (settle), so a run never stays `running`.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from sqlalchemy.orm import Session

from models import jobs
from tasks.jobs import JobTask, run_job
from tasks.maintenance import RESEND, on_worker_lost
from tasks.regressions import work

CHUNK_SOFT_LIMIT_S = 1800


class RegressTask(JobTask):
    """A chunk or a report: longer than a quick answer (the default 300 s limit), bounded all the same."""

    soft_time_limit = CHUNK_SOFT_LIMIT_S
    time_limit = CHUNK_SOFT_LIMIT_S + 60


@shared_task(name=work.START_TASK, base=RegressTask, bind=True)
def start_task(self: Task, run_id: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "regression run", lambda: work.start(run_id), reply_to, audit_id)


@shared_task(name=work.CHUNK_TASK, base=RegressTask, bind=True)
def chunk_task(self: Task, run_id: int, index: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "regression chunk", lambda: work.chunk(run_id, index), reply_to, audit_id)


@shared_task(name=work.REPORT_TASK, base=RegressTask, bind=True)
def report_task(self: Task, run_id: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "regression report", lambda: work.report(run_id), reply_to, audit_id)


@shared_task(name=work.CARD_TASK, base=JobTask, bind=True)
def card_task(
    self: Task, run_id: int, reply_to: dict[str, Any], audit_id: int | None = None, closes_audit: bool = True
) -> str:
    return run_job(self, "regression card", lambda: work.card(run_id), reply_to, audit_id if closes_audit else None)


@shared_task(name=work.PROMOTE_TASK, base=JobTask, bind=True)
def promote_task(self: Task, run_id: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "promote", lambda: work.promote(run_id), reply_to, audit_id)


def _settle(session: Session, job: jobs.JobRecord, why: str) -> list[str]:
    return work.lost(session, int(job.kwargs["run_id"]), why)


for _task in (work.START_TASK, work.CHUNK_TASK, work.REPORT_TASK):
    on_worker_lost(_task, decide=lambda job: RESEND, settle=_settle)
# Safe to run again (it resumes from what it recorded before moving the alias); given up, it releases the run.
on_worker_lost(work.PROMOTE_TASK, decide=lambda job: RESEND,
               settle=lambda session, job, why: work.promotion_lost(session, int(job.kwargs["run_id"]), job, why))
