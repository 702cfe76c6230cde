"""What every job does around its work: claim it, deliver the replies once, retry what Slack or the
database refused for a while, report failures, close the audit row.

A job function returns its replies as (template, context) pairs; a `LabmateError` becomes the
user's message; anything else an error id, logged with its traceback, so the user is never left
without an answer. The job's Celery task id is its key in the job ledger (models.jobs): the
execution that claims the ledger row runs, a redelivery of an answered job is skipped, and each
reply is delivered under `<key>/<n>`, so a retried or redelivered job never posts twice.

Retries are Celery's (`task.retry` with its exponential backoff; a 429 waits at least its
Retry-After). After the last one the command's audit row says `undelivered` (Slack never took
the reply) or `error` (the knowledge base stayed unreachable), with the reason. A reply Slack refused
for a while (not for good) is tried again by the reaper every `late_every()` for up to a day
(`jobs.LATE_FOR`): the job delivers the answer it stored, and the audit row gets its real outcome.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any

from celery import Task
from celery.exceptions import MaxRetriesExceededError, Retry, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from kombu.utils.json import dumps, loads

from labmate import outbox
from labmate.errors import LabmateError, new_error_id
from labmate.outbox import PermanentDeliveryError, TransientDeliveryError
from models import audit, jobs
from models.base import utcnow
from models.db import session_scope
from models.errors import KnowledgeBaseError, Unavailable
from tasks.heartbeat import beating

log = logging.getLogger(__name__)


def periodic(task: Callable[..., Any]) -> Callable[..., Any]:
    """A beat task that can't reach the knowledge base runs again at its next tick: one warning line, not
    Celery's traceback every few seconds for a documented, expected outage."""
    import functools

    @functools.wraps(task)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Unavailable as exc:
            from labmate.settings import mask_url

            log.warning("%s skipped until its next tick: the knowledge base is unavailable (%s)", task.__name__,
                        mask_url(str(exc)))
            return None

    return guarded

Replies = list[tuple[str, dict[str, Any]]]
DUPLICATE = "duplicate"
DELIVERY = "__delivery__"
"""A reply's own delivery (`keyed`): the message it edits, where it goes, whether it is final."""
BACKOFF_MAX_S = 300
BUSY_CHECKS = 30
"""How often a duplicate delivery of a job that another live worker runs looks again (every `job_stale_after`)."""


class JobTask(Task):
    """Options every labmate job shares: acknowledged after it ran (a killed worker's job is
    redelivered), and retried by `run_job` with Celery's backoff."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = 8


def keyed(
    template: str, context: dict[str, Any], *, key: str, reply_to: dict[str, Any] | None = None, final: bool = True
) -> tuple[str, dict[str, Any]]:
    """A reply that is a card: delivered under `key` (edited in place, not posted anew), to `reply_to`
    (the card's channel, which may not be the command's: a Stop button answers its clicker) and, when not
    `final`, subject to the edit throttle."""
    return template, {**context, DELIVERY: {"key": key, "reply_to": reply_to, "final": final}}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff(task: Task, retry_after: float | None = None) -> float:
    """Celery's exponential backoff (the interval autoretry uses), from the configured first
    interval, and never sooner than Slack's Retry-After."""
    from labmate.settings import get_settings

    first = get_settings().delivery_backoff
    countdown = get_exponential_backoff_interval(factor=1, retries=task.request.retries, maximum=BACKOFF_MAX_S) * first
    return max(min(countdown, BACKOFF_MAX_S), (retry_after or 0) + 0.5)


def current_soft_limit() -> str:
    from celery import current_task

    limit = getattr(current_task, "soft_time_limit", None) if current_task else None
    return f"{limit:.0f} s" if limit else "its time limit"


def max_retries() -> int:
    from labmate.settings import get_settings

    return get_settings().delivery_retries


def stale_after() -> timedelta:
    from labmate.settings import get_settings

    return timedelta(seconds=get_settings().job_stale_after)


def first_key(task: Task) -> str:
    """The delivery key of a job's first reply: its own, or the message it was asked to edit
    (`answer_key`: a follow-up that finishes an answer an earlier job started)."""
    return str((task.request.kwargs or {}).get("answer_key") or f"{task.request.id}/0")


def run_job(task: Task, name: str, work: Callable[[], Replies], reply_to: dict[str, Any], audit_id: int | None) -> str:
    """Run `work` once per job and deliver what it answers; returns the outcome (ok, user_error,
    error, undelivered, duplicate)."""
    started = perf_counter()
    key = str(task.request.id)
    try:
        claim = _claim(task, key, reply_to, audit_id)
    except Unavailable as exc:
        return _database_down(task, name, reply_to, exc)
    if claim.status == "ended":
        log.info("job %s (%s) already answered; skipped", name, key)
        return DUPLICATE
    if claim.status == "busy":
        if task.request.retries >= BUSY_CHECKS:
            return DUPLICATE
        raise task.retry(countdown=stale_after().total_seconds() + 1, max_retries=BUSY_CHECKS)
    audit_id = claim.audit_id
    with beating(key):
        try:
            if audit_id is None and reply_to.get("audit"):
                audit_id = _open_audit(key, reply_to)
            replies, outcome = _answer(key, name, work)
        except Unavailable as exc:
            return _database_down(task, name, reply_to, exc)
        return _deliver_all(task, key, replies, outcome, reply_to, audit_id, started, claim.attempt)


def _claim(task: Task, key: str, reply_to: dict[str, Any], audit_id: int | None) -> jobs.Claim:
    kwargs = dict(task.request.kwargs or {})
    with session_scope() as session:
        return jobs.claim(
            session,
            key=key,
            task=str(task.name),
            kwargs=kwargs,
            worker=worker_name(),
            audit_id=audit_id,
            stale=stale_after(),
            retry=bool(task.request.retries),
        )


def _open_audit(key: str, reply_to: dict[str, Any]) -> int:
    """A command the bot enqueued without touching the database: its audit row is written when its
    job first starts (the ledger row remembers it for a redelivery)."""
    command = reply_to["audit"]
    with session_scope() as session:
        audit_id = audit.record(
            session,
            user=command["user"],
            channel=command["channel"],
            source=command["source"],
            verb=command["verb"],
            text=command["text"],
            outcome="running",
            duration_ms=command.get("ack_ms", 0.0),
            idempotency_key=command.get("idempotency_key"),
            actor=command.get("actor"),
        )
        jobs.set_audit(session, key=key, audit_id=audit_id)
    return audit_id


def _mlflow_explained(exc: Exception) -> LabmateError | None:
    """Every job's MLflow failure said as the question jobs say it ("MLflow at … can't be reached"),
    not as an error id."""
    from tasks import mlflow_io

    explained = mlflow_io.client_error(exc)
    return explained if isinstance(explained, LabmateError) else None


def _answer(key: str, name: str, work: Callable[[], Replies]) -> tuple[Replies, str]:
    """The job's replies: computed once (a retry after a delivery failure reuses them)."""
    with session_scope() as session:
        record = jobs.get(session, key=key)
        stored = record.replies if record is not None else None
    if stored:
        replies, outcome = loads(stored)
        return [(str(t), dict(c)) for t, c in replies], str(outcome)
    try:
        replies = work()
        told = {c.get("outcome") for _, c in replies}
        outcome = "error" if "error" in told else "user_error" if "user_error" in told else "ok"
    except LabmateError as exc:
        replies, outcome = [("error", {"message": exc.message, "hint": exc.hint, "error_id": None})], exc.outcome
    except Unavailable:
        raise
    except SoftTimeLimitExceeded:
        limit = current_soft_limit()
        replies = [("error", {"message": f"The job `{name}` took longer than {limit} and was stopped.",
                              "hint": "Ask for less (a shorter time window, fewer runs), or try again later.",
                              "error_id": None})]
        outcome = "error"
    except Exception as exc:
        explained = _mlflow_explained(exc)
        if explained is not None:  # MLflow down or refusing its store: the person can act on it
            log.warning("job %s: %s", name, exc)
            replies = [("error", {"message": explained.message, "hint": explained.hint, "error_id": None})]
            outcome = explained.outcome
        else:
            error_id = new_error_id()
            log.exception("job %s failed [%s]", name, error_id)
            message = f"The job `{name}` failed; nothing was lost."
            replies, outcome = [("error", {"message": message, "hint": "", "error_id": error_id})], "error"
    with session_scope() as session:
        jobs.save_replies(session, key=key, replies=dumps([replies, outcome]))
    return replies, outcome


def _deliver_all(
    task: Task,
    key: str,
    replies: Replies,
    outcome: str,
    reply_to: dict[str, Any],
    audit_id: int | None,
    started: float,
    attempt: int,
) -> str:
    if reply_to.get("source") == "slack" and not outbox.reaches_slack():
        # the router drops it with a warning; the audit row says so instead of "ok" for a reply nobody saw
        return _undelivered(key, audit_id, "no SLACK_BOT_TOKEN where this job ran, so its answer can't be posted "
                            "to Slack", started, attempt)
    try:
        for index, (template, context) in enumerate(replies):
            own = context.get(DELIVERY)
            if own is None:
                outbox.deliver(reply_to, template, context, key=first_key(task) if index == 0 else f"{key}/{index}")
                continue
            shown = {k: v for k, v in context.items() if k != DELIVERY}
            to = own.get("reply_to") or reply_to
            outbox.deliver(to, template, shown, key=str(own["key"]), final=bool(own.get("final", True)))
    except TransientDeliveryError as exc:
        countdown = backoff(task, exc.retry_after)
        try:
            with session_scope() as session:
                jobs.set_retrying(session, key=key, retry_at=utcnow() + timedelta(seconds=countdown), error=str(exc))
            raise task.retry(exc=exc, countdown=countdown, max_retries=max_retries())
        except (MaxRetriesExceededError, TransientDeliveryError):  # Celery re-raises `exc` once they are used up
            return _undelivered(key, audit_id, str(exc), started, attempt, later=reply_to.get("source") != "shell")
    except PermanentDeliveryError as exc:
        return _undelivered(key, audit_id, str(exc), started, attempt)
    except Unavailable as exc:
        return _database_down(task, key, reply_to, exc)
    except Exception:  # a reply that can't even be rendered: our bug, never a job left running
        error_id = new_error_id()
        log.exception("job %s: could not deliver its reply [%s]", key, error_id)
        try:
            outbox.deliver(reply_to, "error", {"message": "Something went wrong on my side while answering.",
                                               "hint": "", "error_id": error_id}, key=f"{key}/failed")
        except Exception:
            log.exception("could not tell the user either [%s]", error_id)
        _close(key, audit_id, "error", started=started, state=jobs.FAILED, error_id=error_id, attempt=attempt)
        return "error"
    error_id = next((str(c["error_id"]) for _, c in replies if c.get("error_id")), None)  # findable from the audit row
    _close(key, audit_id, outcome, started=started, attempt=attempt, error_id=error_id)
    return outcome


def late_every() -> timedelta:
    """How often a reply Slack kept refusing is tried again after its retries: the longest wait they
    reached (five minutes at the defaults)."""
    from labmate.settings import get_settings

    settings = get_settings()
    return timedelta(seconds=min(BACKOFF_MAX_S, settings.delivery_backoff * 2 ** settings.delivery_retries))


def _undelivered(key: str, audit_id: int | None, reason: str, started: float, attempt: int, *, later: bool = False) -> str:
    """`later`: Slack refused for a while, not for good; the reaper re-sends the job at `retry_at` (for up to
    `jobs.LATE_FOR`), so a card that Slack wouldn't edit during an outage still shows how it ended."""
    retry_at = utcnow() + late_every() if later else None
    log.error("job %s: reply undelivered: %s%s", key, reason, f" (trying again at {retry_at:%H:%M:%S} UTC)" if retry_at else "")
    _close(key, audit_id, "undelivered", started=started, reason=reason, state=jobs.UNDELIVERED, attempt=attempt,
           retry_at=retry_at)
    return "undelivered"


def _close(
    key: str,
    audit_id: int | None,
    outcome: str,
    *,
    started: float,
    reason: str = "",
    state: str = jobs.DONE,
    error_id: str | None = None,
    attempt: int | None = None,
    retry_at: datetime | None = None,
) -> None:
    """End the job and its command's audit row, unless a later execution owns the job now (this one
    was frozen past its heartbeat and the job was handed on): then that one ends it."""
    try:
        with session_scope() as session:
            if not jobs.finish(session, key=key, state=state, error=reason, attempt=attempt, retry_at=retry_at):
                log.warning("job %s: a later execution owns it now; not closing it as %s", key, outcome)
                return
            if audit_id is not None:
                detail = {"reason": reason} if reason else None
                if not reason and attempt is not None and attempt > 1:
                    detail = _delivered_late(session, audit_id)
                audit.set_outcome(
                    session,
                    event_id=audit_id,
                    outcome=outcome,
                    error_id=error_id,
                    duration_ms=(perf_counter() - started) * 1000,
                    detail=detail,
                )
    except KnowledgeBaseError:
        log.exception("could not close job %s (audit row %s) as %s", key, audit_id, outcome)


def _delivered_late(session: Any, audit_id: int) -> dict[str, Any] | None:
    """A job delivered after its command was marked undelivered: the audit row keeps why it was late."""
    row = audit.get(session, event_id=audit_id)
    if row is None or row.outcome != "undelivered":
        return None
    return {"delivered_late": True, "reason": str((row.detail or {}).get("reason", ""))}


WAITING = ("I can't reach the knowledge base right now, so this is waiting: it runs by itself once the "
           "knowledge base is back, and answers here. There's no need to ask again.")
NOT_DONE = "I couldn't reach the knowledge base or the job queue, so this was not done. Try again in a few minutes."


def _waiting(task: Task) -> str:
    from tasks.maintenance import policy

    if policy(str(task.name)) is not None:  # a launch or a regression chunk: the reaper may settle it instead
        return "I can't reach the knowledge base right now. Once it is back, the card will say how this ended."
    return WAITING


def _database_down(task: Task, name: str, reply_to: dict[str, Any], exc: Exception) -> str:
    """The knowledge base is unreachable: retry with Celery's backoff for as long as it is down (the
    job's database work is safe to repeat). Giving up could not be kept true: its ledger row, which
    can't be closed now, is re-sent by the reaper once the database is back. When the usual retries are
    used up, the user is told once that it waits; only a retry the broker won't take ends it here."""
    if task.request.retries == max_retries():
        _tell(reply_to, _waiting(task), name, exc)
    try:
        raise task.retry(exc=exc, countdown=backoff(task), max_retries=None)
    except Retry:
        raise
    except Exception as publish:
        log.error("job %s: can't wait for the knowledge base, the broker refused its retry: %s", name, publish)
        _tell(reply_to, NOT_DONE, name, exc)
        return "error"


def _tell(reply_to: dict[str, Any], message: str, name: str, exc: Exception) -> None:
    error_id = new_error_id()
    log.error("job %s: the knowledge base is unreachable [%s]: %s", name, error_id, exc)
    try:
        outbox.deliver(reply_to, "error", {"message": message, "hint": "", "error_id": error_id})
    except Exception:
        log.exception("could not tell the user either [%s]", error_id)
