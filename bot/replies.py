"""Replies the bot process owes (a mention's answer, a logged reaction's confirmation) go out through
a worker job (tasks.replies), so they get the same retries and once-only delivery as job replies.
If the broker won't take the job, the reply is posted from here, once, as a last resort."""

from __future__ import annotations

import logging
from typing import Any

from bot.messages.mrkdwn import Mrkdwn
from bot.origin import Origin, Reply

log = logging.getLogger(__name__)

REPLY_TASK = "labmate.reply"
MARKUP = "__mrkdwn__"
PACKED = "__packed__"


def pack(value: Any) -> Any:
    """Trusted markup (Mrkdwn) survives the trip through the broker's JSON as a marked value."""
    if isinstance(value, Mrkdwn):
        return {MARKUP: str(value)}
    if isinstance(value, dict):
        return {k: pack(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [pack(v) for v in value]
    return value


def unpacked(context: dict[str, Any]) -> dict[str, Any]:
    """The context as `send` had it (the Router calls this on what comes back from a worker)."""
    if not context.get(PACKED):
        return context
    return {k: unpack(v) for k, v in context.items() if k != PACKED}


def unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {MARKUP}:
            return Mrkdwn(value[MARKUP])
        return {k: unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unpack(v) for v in value]
    return value


def left_to_its_job(reply: Reply) -> bool:
    """A reply whose job answers (and edits its card): nothing to send now, unless it must say the job
    is delayed (the queue didn't take it yet)."""
    return bool(reply.jobs) and not reply.failed and not reply.public and not reply.notes


PLACEHOLDER = "exp_working"
"""The "Working on it" a job-answered command says at once."""


def answered_in_place(origin: Origin, reply: Reply) -> bool:
    """A mention's "Working on it" is a message in the thread (a slash command's is an ephemeral ack):
    its job edits it into the answer, instead of leaving it above the answer for good."""
    return (reply.template == PLACEHOLDER and origin.source == "slack" and bool(origin.thread_ts)
            and not origin.response_url and not origin.ephemeral and bool(origin.idempotency_key))


def placeholder_key(origin: Origin) -> str:
    """The delivery key the placeholder is posted under (its reply job's first reply), which the job's
    first answer takes over (`answer_key`)."""
    from tasks.client import task_id

    return f"{task_id(origin.idempotency_key, REPLY_TASK)}/0"


def send_reply(origin: Origin, reply: Reply) -> None:
    """A command's answer to where it came from, with what it must also say under it."""
    from bot.messages.render import NOTES

    context = {**reply.context, NOTES: reply.notes} if reply.notes else reply.context
    if reply.post_here:
        # A worker would hold it until the database is back, then say it couldn't be reached.
        from bot.post import router

        router().deliver(origin.reply_to(), reply.template, context)
        return
    if reply.task_ids and answered_in_place(origin, reply):  # not final: the answer, edited in, is
        from tasks.jobs import keyed

        _template, context = keyed(reply.template, context, key=placeholder_key(origin), final=False)
    send(origin.reply_to(), reply.template, context, key=origin.idempotency_key)


def send(reply_to: dict[str, Any], template: str, context: dict[str, Any], *, key: str | None) -> None:
    from tasks.client import enqueue, task_id

    kwargs = {"template": template, "context": {**pack(context), PACKED: True}, "reply_to": reply_to, "audit_id": None}
    try:
        enqueue(REPLY_TASK, kwargs, job_id=task_id(key, REPLY_TASK))
    except Exception as exc:
        log.warning("could not hand the %s reply to a worker (%s); posting it from here", template, exc)
        from bot.post import router

        router().deliver(reply_to, template, context)
