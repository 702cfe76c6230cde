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
from typing import Any, cast

from sqlalchemy.orm import Session

from bot import access, grammar
from bot.grammar import HelpArgs
from bot.handlers import decisions as decision_handlers
from bot.handlers import experiments as experiment_handlers
from bot.origin import Origin, Reply
from labmate.errors import LabmateError, new_error_id
from labmate.settings import get_settings
from models import audit, idempotency
from models.db import lazy_session_scope, session_scope
from models.errors import Conflict

log = logging.getLogger(__name__)

Handler = Callable[[Any, Origin, Session], Reply]


def _help(args: HelpArgs, origin: Origin, session: Session) -> Reply:
    command = get_settings().command
    context = {"verb": grammar.lookup(args.verb) if args.verb else None, "verbs": grammar.VERBS, "command": command}
    return Reply("help", context, cache_key=f"help:{command}:{args.verb or ''}")


HANDLERS: dict[str, Handler] = {
    "help": _help,
    "decide": decision_handlers.decide,
    "decisions": decision_handlers.search,
    "supersede": decision_handlers.supersede,
    "ask": experiment_handlers.ask,
    "summary": experiment_handlers.summary,
    "compare": experiment_handlers.compare,
    "find": experiment_handlers.find,
    "best": experiment_handlers.best,
    "runs": experiment_handlers.runs,
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
    return audit.record(
        session,
        user=origin.user,
        channel=origin.channel,
        source=origin.source,
        verb=verb,
        text=text,
        outcome="queued" if reply.jobs and not reply.failed else reply.outcome,
        duration_ms=(perf_counter() - started) * 1000,
        error_id=reply.error_id,
        idempotency_key=origin.idempotency_key,
    )


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
    """Run an already parsed command (Slack modals arrive parsed) through access, handler and audit.

    A command answered by a job alone (its handler touched no table) is enqueued without any
    database work here: the job writes its audit row and claims its idempotency key when it
    starts, which also makes a redelivered job answer only once. Everything else commits its
    writes, key and audit row in one transaction before its jobs are enqueued.
    """
    started = started or perf_counter()
    settings = get_settings()
    spec = grammar.lookup(verb)
    deferred = False
    audit_id: int | None = None
    try:
        if spec is not None:
            access.check(spec, origin, settings.access)
        with lazy_session_scope() as lazy:
            session = cast(Session, lazy)
            reply = (handler or HANDLERS[verb])(args, origin, session)
            reply.verb = verb
            deferred = bool(reply.jobs) and lazy.session is None and _job_may_claim(origin)
            if not deferred:
                if origin.idempotency_key:
                    idempotency.claim(session, key=origin.idempotency_key)
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
    reply_to = origin.reply_to()
    if deferred:
        reply_to["audit"] = {
            "user": origin.user,
            "channel": origin.channel,
            "source": origin.source,
            "verb": verb,
            "text": text,
            "ack_ms": (perf_counter() - started) * 1000,
            "idempotency_key": origin.idempotency_key,
        }
    _enqueue(reply, origin, reply_to, audit_id, text, started)
    return reply


def _job_may_claim(origin: Origin) -> bool:
    """Slack never retries a slash command (its key is the trigger id), so its job can claim the key;
    events are retried, and are deduplicated here before a second job is enqueued."""
    return not origin.idempotency_key or origin.idempotency_key.startswith("cmd:")


def _finish(reply: Reply, origin: Origin, text: str, verb: str, started: float) -> Reply:
    """Audit a command that ended before (or instead of) its handler's transaction."""
    try:
        with session_scope() as session:
            _audit(session, origin, verb, text, reply, started)
    except Exception:
        log.exception("could not write the audit row for %r", verb)
    return reply


def _enqueue(reply: Reply, origin: Origin, reply_to: dict[str, Any], audit_id: int | None, text: str, started: float) -> None:
    if not reply.jobs:
        return
    from tasks.client import enqueue

    for job in reply.jobs:
        try:
            task_id = enqueue(
                job.name, {**job.kwargs, "reply_to": reply_to, "audit_id": audit_id}, track=origin.source == "shell"
            )
            reply.task_ids.append(task_id)
        except Exception:
            error_id = new_error_id()
            log.exception("could not enqueue %s [%s]", job.name, error_id)
            failed = internal_error_reply(reply.verb, error_id)
            if audit_id is None:
                _finish(failed, origin, text, reply.verb, started)
            else:
                with session_scope() as session:
                    audit.set_outcome(session, event_id=audit_id, outcome="error", error_id=error_id)
            reply.template, reply.context = failed.template, failed.context
            reply.outcome, reply.error_id, reply.public = "error", error_id, False
            return
