"""Command -> access check -> answer or job, with one audit row per command.

Every front calls `handle`. It never raises: a user's mistake becomes a specific message, a
refusal says who may, anything unexpected becomes an error id (traceback logged under it).
The command's writes, its idempotency key, its audit row and its jobs (as `queued` rows of the job
ledger: the outbox) commit together; the jobs are sent to the broker after that commit, and a job
that can't be sent then is sent by the reaper when the broker is back. What the reply says is
what happened: saved or not, queued or delayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from importlib import import_module
from time import perf_counter
from typing import Any, cast

from sqlalchemy.orm import Session

from bot import access, grammar
from bot.grammar import HelpArgs
from bot.origin import JobRequest, Origin, Reply
from bot.replies import answered_in_place, placeholder_key
from labmate.errors import LabmateError, new_error_id
from labmate.settings import get_settings
from models import audit
from models.db import lazy_session_scope, session_scope, stale_connection
from models.errors import Conflict, KnowledgeBaseError, Unavailable

log = logging.getLogger(__name__)

Handler = Callable[[Any, Origin, Session], Reply]
NOT_SAVED = "I couldn't reach the knowledge base, so nothing was saved. Try again in a minute."
STALE_RETRY_WITHIN_S = 1.0
"""A command whose pooled connection was dead is run again only if that took less than this: a dead
connection that took long to notice (a black-holed network) leaves no time in Slack's three seconds."""
NOT_QUEUED = "I couldn't reach the job queue, so this was not started. Try again in a minute."


def _already_handled(key: str) -> bool:
    """A conflict is a repeated request only when its key is the one that conflicted: another unique
    constraint (two answers racing for one run) must be told, not dropped as a Slack retry."""
    from models import idempotency

    try:
        with session_scope() as session:
            return idempotency.claimed(session, key=key)
    except KnowledgeBaseError:
        return False


def _help(args: HelpArgs, origin: Origin, session: Session) -> Reply:
    command = get_settings().command
    verb = grammar.lookup(args.verb) if args.verb else None
    context = {"verb": _shown(verb) if verb else None, "verbs": [_shown(v) for v in grammar.VERBS], "command": command}
    return Reply("help", context, cache_key=f"help:{command}:{args.verb or ''}")


def _shown(verb: grammar.Verb) -> dict[str, Any]:
    """What help shows of a verb, as plain data: a reply's context goes to a worker as JSON (a mention's
    help could not, and was posted once from the web process, unretried)."""
    return {"name": verb.name, "summary": verb.summary, "usage": verb.usage, "examples": list(verb.examples),
            "details": verb.details}


# A verb's handler module is imported when the verb first runs: a terminal process answers one
# command, and importing every feature's handlers (and their ORM models, YAML, MLflow helpers) for
# `help` cost more than the answer (issue 9's start-up target).
HANDLERS: dict[str, Handler | str] = {
    "help": _help,
    "decide": "bot.handlers.decisions:decide",
    "decisions": "bot.handlers.decisions:search",
    "supersede": "bot.handlers.decisions:supersede",
    "ask": "bot.handlers.experiments:ask",
    "summary": "bot.handlers.experiments:summary",
    "compare": "bot.handlers.experiments:compare",
    "find": "bot.handlers.experiments:find",
    "best": "bot.handlers.experiments:best",
    "runs": "bot.handlers.experiments:runs",
    "run": "bot.handlers.launches:run",
    "sweep": "bot.handlers.launches:sweep",
    "status": "bot.handlers.launches:status",
    "cancel": "bot.handlers.launches:cancel",
    "regress": "bot.handlers.regressions:regress",
    "regressions": "bot.handlers.regressions:listing",
    "promote": "bot.handlers.regressions:promote",
    "cleanup": "bot.handlers.cleanup:cleanup",
    "delete": "bot.handlers.cleanup:delete",
    "keep": "bot.handlers.cleanup:keep",
    "snooze": "bot.handlers.cleanup:snooze",
    "restore": "bot.handlers.cleanup:restore",
    "watch": "bot.handlers.watch:watch",
    "unwatch": "bot.handlers.watch:unwatch",
}


def handler_for(verb: str) -> Handler:
    entry = HANDLERS[verb]
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = HANDLERS[verb] = getattr(import_module(module), name)
    return entry


def preload_handlers() -> None:
    """A server answers many commands: it imports every handler once at start, not on a first request."""
    for verb in HANDLERS:
        handler_for(verb)


def error_reply(exc: LabmateError, verb: str = "") -> Reply:
    message = exc.message
    return Reply(
        "error",
        {"message": _trusted(message) if exc.markup else message, "hint": exc.hint, "error_id": None},
        outcome=exc.outcome,
        verb=verb,
    )


def internal_error_reply(verb: str = "", error_id: str | None = None, message: str = "") -> Reply:
    error_id = error_id or new_error_id()
    return Reply(
        "error",
        {"message": message or "Something went wrong on my side, so this was not done.", "hint": "", "error_id": error_id},
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
        actor=origin.actor,
    )


def handle(text: str, origin: Origin, *, now: datetime | None = None) -> Reply:
    started = perf_counter()
    try:
        command = grammar.parse(text, now=now)
    except LabmateError as exc:
        verb = grammar.verb_named(text)
        return _finish(error_reply(exc, verb), origin, text, verb, started)
    return run(command.verb, command.args, origin, text, started=started)


def refuse(exc: LabmateError, origin: Origin, text: str, *, verb: str = "") -> Reply:
    """A command refused before it could run (the terminal's identity check, a Slack message or form that
    can't be logged): audited like any other. `duplicate` for Slack's re-sending of an event already refused."""
    return _finish(error_reply(exc, verb), origin, text, verb, perf_counter())


def open_form(origin: Origin, verb: str, text: str, opener: Callable[[], object]) -> Reply:
    """Open a form (a Slack modal) that runs no command itself: one row for the opening, `ok` when it
    opened, `user_error`/`refused` for a LabmateError (the caller tells the user), `error` otherwise."""
    started = perf_counter()
    try:
        opener()
    except LabmateError as exc:
        return _finish(error_reply(exc, verb), origin, text, verb, started)
    except Exception:
        error_id = new_error_id()
        log.exception("could not open the %s form [%s]", verb, error_id)
        return _finish(internal_error_reply(verb, error_id), origin, text, verb, started)
    return _finish(Reply("opened", {}, verb=verb), origin, text, verb, started)


def run(
    verb: str,
    args: Any,
    origin: Origin,
    text: str,
    *,
    started: float | None = None,
    handler: Handler | None = None,
    again: bool = False,
) -> Reply:
    """Run an already parsed command (Slack modals arrive parsed) through access, handler and audit.

    A command answered by a job alone (its handler touched no table) is enqueued without any
    database work here: the job writes its audit row when it starts, and its id, derived from the
    request's idempotency key, makes a repeated request run it once. Everything else commits its
    writes, key, audit row and job rows in one transaction before its jobs are sent.
    """
    started = started or perf_counter()
    settings = get_settings()
    spec = grammar.lookup(verb)
    deferred = False
    audit_id: int | None = None
    job_ids: list[str] = []
    try:
        if spec is not None:
            access.check(spec, origin, settings.access)
        # write=True: on SQLite the transaction takes the write lock at BEGIN, so a command that reads
        # and then writes (a search that records its audit row too) waits its turn instead of failing
        # with "database is locked" when another command committed in between.
        with lazy_session_scope(write=True) as lazy:
            session = cast(Session, lazy)
            reply = (handler or handler_for(verb))(args, origin, session)
            reply.verb = verb
            if reply.jobs and answered_in_place(origin, reply):
                reply.jobs[0].kwargs["answer_key"] = placeholder_key(origin)
            deferred = bool(reply.jobs) and lazy.session is None and _job_may_claim(origin)
            if not deferred:
                if origin.idempotency_key:
                    from models import idempotency  # Slack's requests carry keys; the terminal's don't

                    idempotency.claim(session, key=origin.idempotency_key)
                audit_id = _audit(session, origin, verb, text, reply, started)
                job_ids = _store_jobs(session, reply.jobs, origin, audit_id)
    except LabmateError as exc:
        if origin.idempotency_key and _already_handled(origin.idempotency_key):
            # Slack's repeat of a request that was done: refused by what the first one did (a modal
            # submitted twice: "already logged as decision #15"), it must read as the repeat it is.
            return Reply("error", {}, outcome="duplicate", verb=verb)
        return _finish(error_reply(exc, verb), origin, text, verb, started)
    except Conflict:
        if origin.idempotency_key and _already_handled(origin.idempotency_key):
            return Reply("error", {}, outcome="duplicate", verb=verb)
        error_id = new_error_id()
        log.exception("conflict running %s [%s]", verb, error_id)
        return _finish(internal_error_reply(verb, error_id), origin, text, verb, started)
    except Unavailable as exc:
        if not again and stale_connection(exc) and perf_counter() - started < STALE_RETRY_WITHIN_S:
            # The Slack process doesn't ping before each checkout (models.db.fail_fast): after a database
            # restart its first command meets a dead pooled connection, fails at once, and the pool is
            # discarded. Run it once more on a fresh connection rather than say the database is down.
            return run(verb, args, origin, text, started=started, handler=handler, again=True)
        error_id = new_error_id()
        log.error(
            "command %s by %s in %s (%s): not saved, the knowledge base is unreachable [%s]: %s",
            verb, origin.user, origin.channel, origin.source, error_id, exc,
        )
        unsaved = internal_error_reply(verb, error_id, NOT_SAVED)  # its audit row can't be written either: it is the log line
        unsaved.post_here = True
        return unsaved
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
            "actor": origin.actor,
        }
        _send_deferred(reply, origin, reply_to, text, started)
    else:
        _send_stored(reply, origin, job_ids, audit_id)
    return reply


def _job_may_claim(origin: Origin) -> bool:
    """Slack never retries a slash command (its key is the trigger id), so its job can claim the key;
    events are retried, and are deduplicated here before a second job is enqueued."""
    return not origin.idempotency_key or origin.idempotency_key.startswith("cmd:")


def _job_kwargs(job: JobRequest, reply_to: dict[str, Any], audit_id: int | None) -> dict[str, Any]:
    return {**job.kwargs, "reply_to": reply_to, "audit_id": audit_id}


def _store_jobs(session: Session, requests: list[JobRequest], origin: Origin, audit_id: int | None) -> list[str]:
    """The outbox: each job as a `queued` ledger row, in the command's own transaction."""
    if not requests:
        return []  # and no Celery import for a command that starts nothing (`help`, `decisions`)
    from models import jobs
    from tasks.client import task_id

    ids = []
    reply_to = origin.reply_to()
    for index, job in enumerate(requests):
        key = job.key or task_id(origin.idempotency_key, job.name, index)
        jobs.add_queued(session, key=key, task=job.name, kwargs=_job_kwargs(job, reply_to, audit_id), audit_id=audit_id)
        ids.append(key)
    return ids


def _finish(reply: Reply, origin: Origin, text: str, verb: str, started: float) -> Reply:
    """Audit a command that ended before (or instead of) its handler's transaction. It claims the
    request's key as a stored command does, so Slack's retry of a failed event is a `duplicate`
    (no second row, no second answer) rather than a second failure. A failed form or command keeps
    its key free: the same one sent again is the person trying again (a form Saved again after
    "something went wrong" was closed as a duplicate, and its decision lost)."""
    try:
        with session_scope() as session:
            if origin.idempotency_key and (not reply.failed or origin.resent_by_slack):
                from models import idempotency

                idempotency.claim(session, key=origin.idempotency_key)
            _audit(session, origin, verb, text, reply, started)
    except Conflict:
        return Reply("error", {}, outcome="duplicate", verb=verb)
    except Exception as exc:
        log.error("could not write the audit row for %r (%s by %s): %s", verb, origin.source, origin.user, exc)
    return reply


def _send_stored(reply: Reply, origin: Origin, job_ids: list[str], audit_id: int | None) -> None:
    """Send the jobs the command stored. One the broker doesn't take now stays queued in the ledger
    and is sent by the reaper; the reply says it is delayed, not that it failed."""
    if not job_ids:
        return
    from tasks.client import enqueue

    sent = []
    delayed = []
    for job, job_id in zip(reply.jobs, job_ids, strict=True):
        try:
            enqueue(job.name, _job_kwargs(job, origin.reply_to(), audit_id), track=origin.source == "shell", job_id=job_id)
        except Exception as exc:
            log.warning("could not enqueue %s (%s) now; the reaper sends it when the broker is back: %s", job.name, job_id, exc)
            delayed.append(job.what or job.name)
            continue
        reply.task_ids.append(job_id)
        sent.append(job_id)
    if delayed:
        reply.notes.append(f"The job queue is unreachable, so {' and '.join(delayed)} will start when it is back.")
    if sent:
        from models import jobs

        try:
            with session_scope() as session:
                jobs.mark_sent(session, keys=sent)
        except Exception as exc:  # harmless: the reaper would send it again and the job runs once
            log.warning("could not mark jobs %s as sent: %s", sent, exc)


def _send_deferred(reply: Reply, origin: Origin, reply_to: dict[str, Any], text: str, started: float) -> None:
    """A job-only command: nothing was stored, so if the broker doesn't take the job the user is
    told it was not started (and the audit row says so)."""
    from tasks.client import enqueue, task_id

    for index, job in enumerate(reply.jobs):
        try:
            job_id = enqueue(
                job.name,
                _job_kwargs(job, reply_to, None),
                track=origin.source == "shell",
                job_id=task_id(origin.idempotency_key, job.name, index),
            )
        except Exception:
            error_id = new_error_id()
            log.exception("could not enqueue %s [%s]", job.name, error_id)
            failed = internal_error_reply(reply.verb, error_id, NOT_QUEUED)
            _finish(failed, origin, text, reply.verb, started)
            reply.template, reply.context, reply.cache_key = failed.template, failed.context, None
            reply.outcome, reply.error_id, reply.public = "error", error_id, False
            return
        reply.task_ids.append(job_id)
