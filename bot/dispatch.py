"""Command -> access check -> answer or job, with one audit row per command.

Every front calls `handle`. It never raises: a user's mistake becomes a specific message, a
refusal says who may, anything unexpected becomes an error id (traceback logged under it).
The command's writes, its idempotency key and its audit row commit together, and jobs are
enqueued only after that commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from time import perf_counter
from typing import Any

from sqlalchemy.orm import Session

from bot import access, grammar
from bot.grammar import HelpArgs
from bot.handlers import decisions as decision_handlers
from bot.origin import Origin, Reply
from labmate.errors import LabmateError, new_error_id
from labmate.settings import get_settings
from models import audit, idempotency
from models.db import session_scope
from models.errors import Conflict

log = logging.getLogger(__name__)

Handler = Callable[[Any, Origin, Session], Reply]


def _help(args: HelpArgs, origin: Origin, session: Session) -> Reply:
    command = get_settings().command
    if args.verb:
        return Reply("help", {"verb": grammar.lookup(args.verb), "verbs": [], "command": command})
    return Reply("help", {"verb": None, "verbs": grammar.VERBS, "command": command})


HANDLERS: dict[str, Handler] = {
    "help": _help,
    "decide": decision_handlers.decide,
    "decisions": decision_handlers.search,
    "supersede": decision_handlers.supersede,
    "ask": decision_handlers.ask,
}


def error_reply(exc: LabmateError, verb: str = "") -> Reply:
    message = exc.message
    return Reply(
        "error",
        {"message": _trusted(message) if exc.markup else message, "hint": exc.hint, "error_id": None},
        outcome=exc.outcome,
        verb=verb,
    )


def internal_error_reply(verb: str = "", error_id: str | None = None) -> Reply:
    error_id = error_id or new_error_id()
    return Reply(
        "error",
        {"message": "Something went wrong on my side; nothing you typed was lost.", "hint": "", "error_id": error_id},
        outcome="error",
        error_id=error_id,
        verb=verb,
    )


def _trusted(text: str) -> Any:
    from bot.messages.mrkdwn import Mrkdwn

    return Mrkdwn(text)


def _audit(session: Session, origin: Origin, verb: str, text: str, reply: Reply, started: float) -> int:
    event = audit.record(
        session,
        user=origin.user,
        channel=origin.channel,
        source=origin.source,
        verb=verb,
        text=text,
        outcome="queued" if reply.jobs and not reply.failed else reply.outcome,
        duration_ms=(perf_counter() - started) * 1000,
        error_id=reply.error_id,
    )
    return event.id


def handle(text: str, origin: Origin, *, now: datetime | None = None) -> Reply:
    started = perf_counter()
    try:
        command = grammar.parse(text, now=now)
    except LabmateError as exc:
        reply = error_reply(exc)
        return _finish(reply, origin, text, "", started)
    return run(command.verb, command.args, origin, text, started=started)


def run(
    verb: str,
    args: Any,
    origin: Origin,
    text: str,
    *,
    started: float | None = None,
    handler: Handler | None = None,
) -> Reply:
    """Run an already parsed command (Slack modals arrive parsed) through access, handler and audit."""
    started = started or perf_counter()
    settings = get_settings()
    spec = grammar.lookup(verb)
    try:
        if spec is not None:
            access.check(spec, origin, settings.access)
        with session_scope() as session:
            if origin.idempotency_key and idempotency.seen(session, key=origin.idempotency_key):
                return Reply("error", {}, outcome="duplicate", verb=verb)
            if origin.idempotency_key:
                idempotency.claim(session, key=origin.idempotency_key)
            reply = (handler or HANDLERS[verb])(args, origin, session)
            reply.verb = verb
            audit_id = _audit(session, origin, verb, text, reply, started)
    except LabmateError as exc:
        return _finish(error_reply(exc, verb), origin, text, verb, started)
    except Conflict:
        if origin.idempotency_key:
            return Reply("error", {}, outcome="duplicate", verb=verb)
        error_id = new_error_id()
        log.exception("conflict running %s [%s]", verb, error_id)
        return _finish(internal_error_reply(verb, error_id), origin, text, verb, started)
    except Exception:
        error_id = new_error_id()
        log.exception("command %s failed [%s]", verb, error_id)
        return _finish(internal_error_reply(verb, error_id), origin, text, verb, started)
    _enqueue(reply, origin, audit_id)
    return reply


def _finish(reply: Reply, origin: Origin, text: str, verb: str, started: float) -> Reply:
    """Audit a command that ended before (or instead of) its handler's transaction."""
    try:
        with session_scope() as session:
            _audit(session, origin, verb, text, reply, started)
    except Exception:
        log.exception("could not write the audit row for %r", verb)
    return reply


def _enqueue(reply: Reply, origin: Origin, audit_id: int) -> None:
    if not reply.jobs:
        return
    from tasks.client import enqueue

    for job in reply.jobs:
        try:
            reply.task_ids.append(enqueue(job.name, {**job.kwargs, "reply_to": origin.reply_to(), "audit_id": audit_id}))
        except Exception:
            error_id = new_error_id()
            log.exception("could not enqueue %s [%s]", job.name, error_id)
            with session_scope() as session:
                audit.set_outcome(session, event_id=audit_id, outcome="error", error_id=error_id)
            reply.context["enqueue_error"] = error_id
            reply.outcome = "error"
            reply.error_id = error_id
