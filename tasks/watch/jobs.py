"""The Celery tasks of run watch and the digest: thin, over add.py, poll.py and digest.py.

The poll and the digest check are beat jobs (every minute). They run through `run_job` like every job:
what they deliver goes out under message keys of its own through the keyed outbox, retried with backoff
when Slack refuses for a while, and a redelivered job (its worker died) delivers each key once.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Task, shared_task

from models import jobs
from models import watch as watches
from models.base import utcnow
from models.db import session_scope
from tasks.client import HOME_TASK
from tasks.jobs import JobTask, periodic, run_job
from tasks.watch import add, digest, poll

log = logging.getLogger(__name__)
ADD_TASK = "labmate.watch.add"
POLL_TASK = "labmate.watch.poll"
DIGEST_DUE_TASK = "labmate.digest.due"
KEEP_POLLS = timedelta(hours=6)
OPTIONS: dict[str, Any] = {"base": JobTask, "bind": True, "soft_time_limit": 120, "time_limit": 150}


@shared_task(name=ADD_TASK, **OPTIONS)
def add_task(
    self: Task, experiment: str, channel: str, reply_to: dict[str, Any], audit_id: int | None = None,
    answer_key: str | None = None,
) -> str:
    """`answer_key`: the message its answer replaces (a mention's "Working on it"; tasks.jobs.first_key)."""
    return run_job(self, "watch", lambda: add.add(experiment, channel, reply_to), reply_to, audit_id)


@shared_task(name=POLL_TASK, **OPTIONS)
def poll_task(self: Task, reply_to: dict[str, Any] | None = None, audit_id: int | None = None) -> str:
    """Periodic: notice what ended in the watched experiments and announce it once."""
    keys: list[str] = []

    def work() -> list[tuple[str, dict[str, Any]]]:
        replies, message_keys = poll.poll()
        keys.extend(message_keys)
        return replies

    outcome = run_job(self, "watch poll", work, reply_to or {}, audit_id)
    if outcome == "ok" and keys:
        poll.delivered(keys)
    try:
        with session_scope() as session:
            watches.prune_polls(session, task=POLL_TASK, before=utcnow() - KEEP_POLLS)
    except Exception as exc:  # harmless: the next poll prunes
        log.info("could not prune old watch polls: %s", exc)
    return outcome


@shared_task(name=DIGEST_DUE_TASK, acks_late=True, reject_on_worker_lost=True)
@periodic
def digest_due_task() -> int:
    """Periodic: claim the digests whose local time has come and send their post jobs."""
    from tasks.client import enqueue

    sent = []
    for key in digest.claim_due():
        with session_scope() as session:
            record = jobs.get(session, key=key)
            kwargs = dict(record.kwargs) if record is not None else {}
        try:
            enqueue(digest.POST_TASK, kwargs, job_id=key)
            sent.append(key)
        except Exception as exc:  # the reaper sends it when the broker is back
            log.warning("could not send digest job %s now: %s", key, exc)
    if sent:
        with session_scope() as session:
            jobs.mark_sent(session, keys=sent)
    return len(sent)


@shared_task(name=digest.POST_TASK, **OPTIONS)
def digest_post_task(self: Task, channel: str, day: str, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    outcome = run_job(self, "digest", lambda: digest.post_work(channel, day), reply_to, audit_id)
    if outcome != "duplicate":
        with session_scope() as session:
            record = jobs.get(session, key=str(self.request.id))
            reason = record.error if record is not None else ""
        digest.settle(channel, day, outcome, reason or "")
    return outcome


@shared_task(name=HOME_TASK, **OPTIONS)
def home_task(self: Task, user: str, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    """The Home tab of `user`, published when they open it (its reply_to is `{"home": user}`)."""
    from tasks.watch import home

    return run_job(self, "home", lambda: home.build(user), reply_to, audit_id)
