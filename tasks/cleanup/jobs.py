"""The Celery tasks of the clean-up, thin over tasks/cleanup/work.py: the scan a command asks for, an
answer to a proposal, a proposal's card, and the two beat jobs (the daily proposals, the purge of
deleted runs past the grace period)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from tasks.cleanup import proposals, work
from tasks.jobs import JobTask, run_job

log = logging.getLogger(__name__)

SCAN_TASK = "labmate.cleanup.scan"
ANSWER_TASK = "labmate.cleanup.answer"
DAILY_TASK = "labmate.cleanup.daily"
PURGE_TASK = "labmate.cleanup.purge"


@shared_task(name=SCAN_TASK, base=JobTask, bind=True, soft_time_limit=600, time_limit=660)
def scan_task(
    self: Task, reply_to: dict[str, Any], audit_id: int | None = None, experiment: str | None = None,
    dry_run: bool = False, answer_key: str | None = None,
) -> str:
    """`answer_key`: the message its answer replaces (a mention's "Working on it"; tasks.jobs.first_key)."""
    key = str(self.request.id)
    return run_job(self, "cleanup", lambda: work.scan_job(experiment, dry_run, reply_to, key), reply_to, audit_id)


@shared_task(name=ANSWER_TASK, base=JobTask, bind=True)
def answer_task(
    self: Task, proposal_ids: list[int], verb: str, by: str, reply_to: dict[str, Any], audit_id: int | None = None,
    candidate_ids: list[int] | None = None,
) -> str:
    outcome = run_job(self, f"cleanup {verb}", lambda: work.answer_job(proposal_ids, verb, by, reply_to, candidate_ids),
                      reply_to, audit_id)
    if reply_to.get("source") == "slack" and by:
        _refresh_home(str(self.request.id), by)
    return outcome


def _refresh_home(job_id: str, user: str) -> None:
    """The answerer's Home tab lists the proposals waiting for them, with live buttons: published again,
    or it kept offering what was just answered (from the tab itself too) until they opened it anew."""
    from tasks.client import publish_home

    try:
        publish_home(user, key=f"{job_id}:home")
    except Exception as exc:  # the broker is down: the tab is right again when next opened
        log.warning("could not refresh %s's Home tab after a clean-up answer: %s", user, exc)


@shared_task(name=proposals.CARD_TASK, base=JobTask, bind=True)
def card_task(self: Task, proposal_id: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "cleanup proposal", lambda: [proposals.card(proposal_id)], reply_to, audit_id)


@shared_task(name=DAILY_TASK, acks_late=True, reject_on_worker_lost=True, soft_time_limit=1800, time_limit=1860,
             autoretry_for=(work.ScanDeferred,), retry_backoff=30, retry_backoff_max=600, retry_jitter=True,
             max_retries=30)
def daily_task() -> int:
    """Once a day from beat; while MLflow or the knowledge base is down, again with backoff (about 4 h)."""
    return len(work.daily())


@shared_task(name=PURGE_TASK, acks_late=True, reject_on_worker_lost=True, soft_time_limit=1800, time_limit=1860)
def purge_task() -> int:
    try:
        return work.purge()
    except Exception as exc:  # MLflow unreachable: the next beat tries again; the runs stay deleted meanwhile
        log.warning("clean-up purge skipped until the next beat: %s", exc)
        return 0
