"""What every job does around its work: deliver the replies, report failures, close the audit row.

A job function returns the replies as (template, context) pairs; a `LabmateError` becomes
the user's message; anything else an error id, logged with its traceback, so the user
is never left without an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

from labmate import outbox
from labmate.errors import LabmateError, new_error_id
from models import audit, idempotency
from models.db import session_scope
from models.errors import Conflict

log = logging.getLogger(__name__)

Replies = list[tuple[str, dict[str, Any]]]


DUPLICATE = "duplicate"


def _open_audit(reply_to: dict[str, Any]) -> int | None:
    """For a command the bot enqueued without touching the database: claim its key and write its
    audit row now, and return the row's id.

    When the key is already claimed, this is a redelivery or a repeat: if the command's row still
    says `running`, the worker that had it died before answering (acks_late redelivered it), so
    the job runs again on that row; otherwise it was answered, and this returns None.
    """
    command = reply_to["audit"]
    key = command.get("idempotency_key")
    try:
        with session_scope() as session:
            if key:
                idempotency.claim(session, key=key)
            return audit.record(
                session,
                user=command["user"],
                channel=command["channel"],
                source=command["source"],
                verb=command["verb"],
                text=command["text"],
                outcome="running",
                duration_ms=command.get("ack_ms", 0.0),
                idempotency_key=key,
            )
    except Conflict:
        with session_scope() as session:
            found = audit.by_idempotency_key(session, key=key or "")
        if found and found[1] == "running":
            log.warning("re-running %s: its previous worker stopped before answering", key)
            return found[0]
        return None


def _close_audit(audit_id: int | None, outcome: str, error_id: str | None = None, started: float = 0.0) -> None:
    if audit_id is None:
        return
    try:
        with session_scope() as session:
            duration = (perf_counter() - started) * 1000 if started else None
            audit.set_outcome(session, event_id=audit_id, outcome=outcome, error_id=error_id, duration_ms=duration)
    except Exception:
        log.exception("could not close audit row %s", audit_id)


def run_job(name: str, work: Callable[[], Replies], reply_to: dict[str, Any], audit_id: int | None) -> str:
    """Run `work`, deliver what it answers; returns the outcome (ok, user_error, error, duplicate)."""
    started = perf_counter()
    if audit_id is None and reply_to.get("audit"):
        audit_id = _open_audit(reply_to)
        if audit_id is None:
            log.info("job %s for %s already answered; skipped", name, reply_to["audit"].get("idempotency_key"))
            return DUPLICATE
    return _run(name, work, reply_to, audit_id, started)


def _run(name: str, work: Callable[[], Replies], reply_to: dict[str, Any], audit_id: int | None, started: float) -> str:
    try:
        replies = work()
    except LabmateError as exc:
        outbox.deliver(reply_to, "error", {"message": exc.message, "hint": exc.hint, "error_id": None})
        _close_audit(audit_id, exc.outcome, started=started)
        return exc.outcome
    except Exception:
        error_id = new_error_id()
        log.exception("job %s failed [%s]", name, error_id)
        outbox.deliver(
            reply_to,
            "error",
            {"message": f"The job `{name}` failed; nothing was lost.", "hint": "", "error_id": error_id},
        )
        _close_audit(audit_id, "error", error_id, started=started)
        return "error"
    outcome = "ok"
    for template, context in replies:
        if context.get("outcome") == "user_error":
            outcome = "user_error"
        outbox.deliver(reply_to, template, context)
    _close_audit(audit_id, outcome, started=started)
    return outcome
