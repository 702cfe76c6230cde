"""Housekeeping: the reaper that keeps every job moving, forgetting old idempotency keys, pruning old charts.

The reaper runs every `reap_every` seconds (beat), and once when a worker starts. It sends the jobs
a command stored but could not enqueue (the broker was down), re-sends the jobs a dead worker left
running (their heartbeat stopped), and gives up, telling the user, on a job whose workers keep
dying (MAX_RESCUES). A job is never left `running`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from labmate import outbox
from labmate.errors import new_error_id
from models import audit, idempotency, jobs
from models.db import session_scope

log = logging.getLogger(__name__)


@dataclass
class Reaped:
    sent: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)


def _send(job: jobs.JobRecord) -> bool:
    from tasks.app import celery_app

    try:
        celery_app().send_task(job.task, kwargs=job.kwargs, task_id=job.key, argsrepr="()", kwargsrepr="{…}")
        return True
    except Exception as exc:
        log.warning("could not send job %s (%s) yet: %s", job.key, job.task, exc)
        return False


def _tell(job: jobs.JobRecord, message: str, error_id: str) -> None:
    reply_to: dict[str, Any] = dict(job.kwargs.get("reply_to") or {})
    if not reply_to or reply_to.get("source") == "shell":
        return  # the terminal that asked has gone with its process
    try:
        outbox.deliver(reply_to, "error", {"message": message, "hint": "", "error_id": error_id}, key=f"{job.key}/given-up")
    except Exception:
        log.exception("could not tell the user that job %s was given up [%s]", job.key, error_id)


def _give_up(job: jobs.JobRecord, why: str) -> bool:
    error_id = new_error_id()
    with session_scope() as session:
        if not jobs.give_up(session, job=job, error=why):
            return False
        if job.audit_id is not None:
            audit.set_outcome(session, event_id=job.audit_id, outcome="error", error_id=error_id, detail={"reason": why})
    log.error("gave up job %s (%s) [%s]: %s", job.key, job.task, error_id, why)
    _tell(job, f"I couldn't finish this: {why}. Nothing half-done was kept; please try again.", error_id)
    return True


def reap() -> Reaped:
    done = Reaped()
    from tasks.jobs import stale_after

    with session_scope() as session:
        orphans = jobs.orphans(session, stale=stale_after())
        session.expunge_all()
    for job in orphans:
        if (job.kwargs.get("reply_to") or {}).get("source") == "shell":
            if _give_up(job, "the terminal session that asked for it ended with its process"):
                done.given_up.append(job.key)
            continue
        if job.state == jobs.QUEUED and job.enqueued_at is None:
            if _send(job):
                with session_scope() as session:
                    jobs.mark_sent(session, keys=[job.key])
                done.sent.append(job.key)
            continue
        if job.rescues >= jobs.MAX_RESCUES:
            why = f"its worker stopped {job.rescues + 1} times while running it"
            if _give_up(job, why):
                done.given_up.append(job.key)
            continue
        with session_scope() as session:
            moved = jobs.requeue(session, job=job)
        if moved and _send(job):
            with session_scope() as session:
                jobs.mark_sent(session, keys=[job.key])
            log.warning("re-sent job %s (%s): its worker stopped (state %s)", job.key, job.task, job.state)
            done.resent.append(job.key)
    return done


@shared_task(name="labmate.maintenance.reap", acks_late=True, ignore_result=True)
def reap_task() -> dict[str, int]:
    done = reap()
    return {"sent": len(done.sent), "resent": len(done.resent), "given_up": len(done.given_up)}


def prune_idempotency_keys() -> int:
    with session_scope() as session:
        return idempotency.prune(session)


@shared_task(name="labmate.maintenance.prune_idempotency_keys", acks_late=True, reject_on_worker_lost=True)
def prune_idempotency_keys_task() -> int:
    return prune_idempotency_keys()


@worker_ready.connect
def _reap_on_start(sender: Any = None, **_: Any) -> None:
    """A worker that starts (perhaps in place of one that was killed) looks for orphans at once."""
    log.info("labmate worker ready (%s)", getattr(sender, "hostname", "?"))
    try:
        reap_task.apply_async(expires=60)
    except Exception:
        log.warning("could not schedule the start-up reap", exc_info=True)


@shared_task(name="labmate.maintenance.prune_charts", acks_late=True, reject_on_worker_lost=True)
def prune_charts_task() -> int:
    """Charts older than a day go (answers reuse a chart while its content is the same)."""
    from tasks.experiments import charts

    return charts.prune()
