"""What every job does around its work: deliver the replies, report failures, close the audit row.

A job function returns the replies as (template, context) pairs; a `LabmateError` becomes
the user's message; anything else an error id, logged with its traceback, so the user
is never left without an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from labmate import outbox
from labmate.errors import LabmateError, new_error_id
from models import audit
from models.db import session_scope

log = logging.getLogger(__name__)

Replies = list[tuple[str, dict[str, Any]]]


def _close_audit(audit_id: int | None, outcome: str, error_id: str | None = None) -> None:
    if audit_id is None:
        return
    try:
        with session_scope() as session:
            audit.set_outcome(session, event_id=audit_id, outcome=outcome, error_id=error_id)
    except Exception:
        log.exception("could not close audit row %s", audit_id)


def run_job(name: str, work: Callable[[], Replies], reply_to: dict[str, Any], audit_id: int | None) -> str:
    """Run `work`, deliver what it answers; returns the outcome (ok, user_error, error)."""
    try:
        replies = work()
    except LabmateError as exc:
        outbox.deliver(reply_to, "error", {"message": exc.message, "hint": exc.hint, "error_id": None})
        _close_audit(audit_id, exc.outcome)
        return exc.outcome
    except Exception:
        error_id = new_error_id()
        log.exception("job %s failed [%s]", name, error_id)
        outbox.deliver(
            reply_to,
            "error",
            {"message": f"The job `{name}` failed; nothing was lost.", "hint": "", "error_id": error_id},
        )
        _close_audit(audit_id, "error", error_id)
        return "error"
    outcome = "ok"
    for template, context in replies:
        if context.get("outcome") == "user_error":
            outcome = "user_error"
        outbox.deliver(reply_to, template, context)
    _close_audit(audit_id, outcome)
    return outcome
