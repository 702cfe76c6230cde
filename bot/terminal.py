"""The terminal front over the same dispatch: `labmate say` (one command) and `labmate shell`."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from bot import console as rich_render
from bot import dispatch, grammar
from bot.messages.render import Message, render_reply
from bot.origin import Origin, Reply
from bot.post import router
from labmate.settings import get_settings

log = logging.getLogger(__name__)

EXIT_OK, EXIT_USER_ERROR, EXIT_INTERNAL = 0, 1, 2
FAILED_OUTCOMES = {"user_error": EXIT_USER_ERROR, "refused": EXIT_USER_ERROR, "error": EXIT_INTERNAL}


@dataclass
class Outcome:
    messages: list[Message] = field(default_factory=list)
    exit_code: int = EXIT_OK
    unfinished: int = 0
    """Jobs still running when the wait for them ended (LABMATE_JOB_TIMEOUT)."""


def _worst(codes: list[int]) -> int:
    return max(codes, default=EXIT_OK)


def _reply_code(reply: Reply) -> int:
    return FAILED_OUTCOMES.get(reply.outcome, EXIT_OK)


def run_one(
    text: str,
    *,
    user: str,
    channel: str,
    on_message: Callable[[Message], None] | None = None,
    actor: str | None = None,
) -> Outcome:
    """Run one command as `user`, wait for every reply (jobs too), return them in arrival order."""
    settings = get_settings()
    outcome = Outcome()
    lock = threading.Lock()

    def sink(_reply_to: dict[str, Any], message: Message) -> None:
        with lock:
            outcome.messages.append(message)
        if on_message:
            on_message(message)

    session = uuid.uuid4().hex
    router().add_console(session, sink)
    try:
        origin = Origin(user=user, channel=channel, source="shell", session=session, actor=actor)
        reply = dispatch.handle(grammar.strip_prefix(text, settings.command), origin)
        sink({}, render_reply(reply))
        codes = [_reply_code(reply)]
        if reply.task_ids:
            from tasks.client import wait  # Celery: only commands that run a job pay its import

            results = wait(reply.task_ids, settings.job_timeout,
                           settled=_stopped_before_start if reply.verb in LAUNCHING else None)
            for result in results:
                codes.append(FAILED_OUTCOMES.get(result, EXIT_OK) if result != "timeout" else EXIT_INTERNAL)
            outcome.unfinished = results.count("timeout")
            if outcome.unfinished:
                sink({}, _gave_up_waiting(text, outcome.unfinished, settings.job_timeout, launch=reply.verb in LAUNCHING))
        outcome.exit_code = _worst(codes)
    finally:
        router().remove_console(session)
    return outcome


LAUNCHING = ("run", "sweep")


def _stopped_before_start(task_id: str) -> bool:
    """A sweep's run cancelled from another terminal while it waited for a slot never runs here (each
    terminal has its own in-process broker): the database says so, and this terminal stops waiting."""
    from models import launches
    from models.db import session_scope

    with session_scope() as session:
        return launches.ended_before_start(session, task_id=task_id)


def _gave_up_waiting(text: str, count: int, timeout: float, *, launch: bool = False) -> Message:
    from bot.messages.render import render
    from labmate.errors import new_error_id

    error_id = new_error_id()
    log.warning("%d job(s) of %r still running after %g s (LABMATE_JOB_TIMEOUT) [%s]", count, text, timeout, error_id)
    if launch:  # "ask again" would start another run, and the one asked for doesn't go on
        stale = get_settings().job_stale_after
        return render("error", {
            "message": f"The run didn't end within {timeout:g} s (LABMATE_JOB_TIMEOUT). It trained on this "
                       "terminal's own worker, so it stops as labmate exits; `status` may show it running for "
                       f"{stale:g} s more (LABMATE_JOB_STALE_AFTER), then the next labmate command marks it failed.",
            "hint": "For a longer run use `labmate shell` (it runs until you leave it) or raise LABMATE_JOB_TIMEOUT; "
                    "with a team deployment, launch it from Slack. Asking again starts a new run.",
            "error_id": error_id,
        })
    return render("error", {
        "message": f"The answer didn't come within {timeout:g} s (LABMATE_JOB_TIMEOUT), so labmate stopped waiting for it.",
        "hint": "Ask again; if the job needs longer, raise LABMATE_JOB_TIMEOUT. `labmate doctor` checks MLflow and the database.",
        "error_id": error_id,
    })


def say(text: str, *, user: str, channel: str, as_json: bool, console: Console, actor: str | None = None) -> Outcome:
    show = None if as_json else lambda m: rich_render.show(console, m)
    outcome = run_one(text, user=user, channel=channel, on_message=show, actor=actor)
    if as_json:
        console.print_json(json.dumps([m.payload() for m in outcome.messages], default=str))
    return outcome
