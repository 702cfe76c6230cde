"""Housekeeping: the reaper that keeps every job moving, forgetting old idempotency keys, pruning old charts.

The reaper runs every `reap_every` seconds (beat), and once when a worker starts. It sends the jobs
a command stored but could not enqueue (the broker was down), re-sends the jobs a dead worker left
running (their heartbeat stopped, and no live worker says it runs them), and gives up, telling the
user, on a job whose workers keep dying (MAX_RESCUES). A job is never left `running`. It also re-sends
a job whose reply Slack kept refusing, at its `retry_at`, for up to a day (`jobs.LATE_FOR`).

Re-sending is right for a job that is safe to run again (most are: they read, or their writes are
idempotent). A job that isn't (a training launch) registers its own policy with `on_worker_lost`:
whether a job its worker left mid-run is re-sent or failed, and a hook that settles what the job
owned (the launch, its MLflow run, its card) in the transaction that gives the job up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from celery import shared_task
from celery.signals import worker_ready
from sqlalchemy.orm import Session

from labmate import outbox
from labmate.errors import new_error_id
from models import audit, idempotency, jobs
from models.db import session_scope
from tasks.jobs import periodic

log = logging.getLogger(__name__)

RESEND, FAIL = "resend", "fail"
Decision = Literal["resend", "fail"]


@dataclass(frozen=True)
class LostPolicy:
    """What happens to a task's job whose worker died while running it.

    `decide(job)` says `resend` (run it again) or `fail`; `settle(session, job, why)` runs in the
    transaction that gives the job up (for any reason: `fail`, too many deaths, a terminal that went
    away) and returns the keys of the outbox jobs it stored, which are sent after the commit."""

    decide: Callable[[jobs.JobRecord], Decision]
    settle: Callable[[Session, jobs.JobRecord, str], list[str]]


_policies: dict[str, LostPolicy] = {}


def on_worker_lost(
    task: str,
    *,
    settle: Callable[[Session, jobs.JobRecord, str], list[str]],
    decide: Callable[[jobs.JobRecord], Decision] = lambda job: FAIL,
) -> None:
    """Register `task`'s policy (the default for unregistered tasks: re-send, and tell the user after
    `MAX_RESCUES` rescues)."""
    _policies[task] = LostPolicy(decide, settle)


def policy(task: str) -> LostPolicy | None:
    return _policies.get(task)


@dataclass
class Reaped:
    sent: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)


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


def _give_up(job: jobs.JobRecord, why: str, *, follow_up: Callable[[list[str]], None] | None = None) -> bool:
    """`follow_up`: what to do with the jobs the policy stored (default: send them)."""
    error_id = new_error_id()
    lost = policy(job.task)
    follow_ups: list[str] = []
    with session_scope() as session:
        if not jobs.give_up(session, job=job, error=why):
            return False
        if job.audit_id is not None:
            audit.set_outcome(session, event_id=job.audit_id, outcome="error", error_id=error_id, detail={"reason": why})
        if lost is not None:
            follow_ups = lost.settle(session, job, why)
    log.error("gave up job %s (%s) [%s]: %s", job.key, job.task, error_id, why)
    if lost is None:
        _tell(job, f"I couldn't finish this: {why}. Nothing half-done was kept; please try again.", error_id)
    (follow_up or send_stored)(follow_ups)
    return True


def run_stored_here(keys: list[str]) -> None:
    """Run outbox jobs a policy stored in this process, now: a terminal's broker is its own, and the
    worker that would take them went with the terminal that left them (a launch's MLflow run stayed
    RUNNING). Their replies go to that terminal's session, which is gone: dropped."""
    if not keys:
        return
    import importlib

    from tasks.app import celery_app

    importlib.import_module("tasks.replies")
    with session_scope() as session:
        records = [r for r in (jobs.get(session, key=k) for k in keys) if r is not None]
        session.expunge_all()
    for record in records:
        try:
            celery_app().tasks[record.task].apply(kwargs=record.kwargs, task_id=record.key)
        except Exception:
            log.exception("could not run job %s (%s) that settles a job a terminal left", record.key, record.task)


def send_stored(keys: list[str]) -> None:
    """Send outbox jobs a policy stored; one the broker doesn't take now is sent by a later reap."""
    if not keys:
        return
    with session_scope() as session:
        records = [r for r in (jobs.get(session, key=k) for k in keys) if r is not None]
        session.expunge_all()
    sent = [r.key for r in records if _send(r)]
    if sent:
        with session_scope() as session:
            jobs.mark_sent(session, keys=sent)


def _must_not_rerun(job: jobs.JobRecord) -> bool:
    """A job its worker left mid-work (no answer stored yet) whose policy says it must not run again."""
    lost = policy(job.task)
    return lost is not None and job.state == jobs.RUNNING and not job.replies and lost.decide(job) == FAIL


POLICY_MODULES = ("tasks.launches.jobs", "tasks.regressions.jobs")
"""The modules that register a lost-job policy when imported. A worker imports every task module; the
terminal's embedded worker only its command's, so a launch its last `say` left behind was given up
without the policy that fails the launch, and `status` showed it running for good."""


def _orphans() -> list[jobs.JobRecord]:
    from tasks.jobs import stale_after

    with session_scope() as session:
        orphans = jobs.orphans(session, stale=stale_after())
        session.expunge_all()
    if orphans:
        import importlib

        for module in POLICY_MODULES:
            importlib.import_module(module)
    return orphans


def _left_by_a_terminal(job: jobs.JobRecord) -> bool:
    return (job.kwargs.get("reply_to") or {}).get("source") == "shell"


TERMINAL_GONE = "the terminal session that asked for it ended with its process"


def reap_left_by_terminals() -> list[str]:
    """Only the jobs an ended `labmate say` or shell left running: given up (a launch fails, its run is
    settled) before the next terminal command answers, even one that starts no worker (`status`).
    Sends nothing (what settles them runs here), so it is safe in any process."""
    given_up = []
    for job in _orphans():
        if _left_by_a_terminal(job) and _give_up(job, TERMINAL_GONE, follow_up=run_stored_here):
            given_up.append(job.key)
    return given_up


ASK_WORKERS_S = 1.0


def _still_run_by_a_worker(orphans: list[jobs.JobRecord]) -> set[str]:
    """The `running` orphans a live worker says it is executing (Celery's `query_task` over the broker).

    A heartbeat also goes stale when the database was out of reach: the worker couldn't stamp it, and
    the reaper often runs before the first stamp once the database is back. A worker that was killed,
    or frozen with its process group, doesn't answer, so its jobs are rescued as before."""
    from labmate.settings import get_settings
    from tasks.app import celery_app

    keys = [job.key for job in orphans if job.state == jobs.RUNNING and not _left_by_a_terminal(job)]
    if not keys or get_settings().embedded_broker:  # embedded: the one worker is this process's, just started
        return set()

    try:  # a broadcast, not inspect(): inspect merges the replies of workers that share a node name
        replies = celery_app().control.broadcast("query_task", arguments={"ids": keys}, reply=True,
                                                 timeout=ASK_WORKERS_S) or []  # fmt: skip
    except Exception as exc:
        log.warning("could not ask the workers whether they still run %d job(s): %s", len(keys), exc)
        return set()
    return active_keys(replies)


def active_keys(replies: list[dict[str, Any]]) -> set[str]:
    """The task ids in `query_task`'s replies, `[{node: {task id: [state, info]}}, …]`, that a node is
    executing; a node without the command (beat) answers `{node: {"error": "…"}}`."""
    return {key for reply in replies for found in reply.values() if isinstance(found, dict)
            for key, told in found.items() if isinstance(told, (list, tuple)) and list(told[:1]) == ["active"]}  # fmt: skip


def reap() -> Reaped:
    done = Reaped()
    orphans = _orphans()
    still_run = _still_run_by_a_worker(orphans)
    for job in orphans:
        if job.state == jobs.UNDELIVERED:  # Slack refused its reply for a while: try it again (its answer is stored)
            if _queue_again(job, jobs.redeliver):
                log.info("re-sent job %s (%s) to deliver its reply Slack refused: %s", job.key, job.task, job.error)
                done.late.append(job.key)
            continue
        if job.key in still_run:
            log.info("job %s (%s): its heartbeat is stale, but a worker still runs it; left to it", job.key, job.task)
            continue
        if _left_by_a_terminal(job):
            if _give_up(job, TERMINAL_GONE):
                done.given_up.append(job.key)
            continue
        if job.state == jobs.QUEUED and job.enqueued_at is None:
            if _send(job):
                with session_scope() as session:
                    jobs.mark_sent(session, keys=[job.key])
                done.sent.append(job.key)
            continue
        if _must_not_rerun(job):
            try:
                if _give_up(job, "its worker stopped while running it"):
                    done.given_up.append(job.key)
            except Exception:  # rolled back with its settle: the next reap tries again
                log.exception("could not give up job %s (%s); trying again at the next reap", job.key, job.task)
            continue
        if job.rescues >= jobs.MAX_RESCUES:
            why = f"its worker stopped {job.rescues + 1} times while running it"
            if _give_up(job, why):
                done.given_up.append(job.key)
            continue
        if _queue_again(job, jobs.requeue):
            log.warning("re-sent job %s (%s): its worker stopped (state %s)", job.key, job.task, job.state)
            done.resent.append(job.key)
    return done


def _queue_again(job: jobs.JobRecord, move: Callable[..., bool]) -> bool:
    """`move` the job back to `queued` (False: another reaper or the job itself moved it first), send it."""
    with session_scope() as session:
        moved = move(session, job=job)
    if not (moved and _send(job)):
        return False
    with session_scope() as session:
        jobs.mark_sent(session, keys=[job.key])
    return True


@shared_task(name="labmate.maintenance.reap", acks_late=True, ignore_result=True)
@periodic
def reap_task() -> dict[str, int]:
    done = reap()
    return {"sent": len(done.sent), "resent": len(done.resent), "given_up": len(done.given_up), "late": len(done.late)}


def prune_idempotency_keys() -> int:
    with session_scope() as session:
        return idempotency.prune(session)


@shared_task(name="labmate.maintenance.prune_idempotency_keys", acks_late=True, reject_on_worker_lost=True)
@periodic
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
