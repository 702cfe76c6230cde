"""Enqueue a job by task name; in embedded mode make sure the in-process worker runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from tasks.app import celery_app

_KEYS = uuid.UUID("5f0b7c1e-6c2d-4d0e-9a49-3b1f4c8d2e10")
SETTLED_EVERY_S = 0.5
HOME_TASK = "labmate.home.publish"


def task_id(idempotency_key: str | None, name: str, index: int = 0) -> str:
    """The job's id (and its key in the job ledger): derived from the request's idempotency key when
    it has one, so a repeated request names the same job and runs it once."""
    if not idempotency_key:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_KEYS, f"{idempotency_key}\0{name}\0{index}"))


def enqueue(name: str, kwargs: dict[str, Any], *, track: bool = False, job_id: str | None = None) -> str:
    """Send the job by name. `track` keeps its result so the caller can `wait` for it (the
    terminal does); Slack-facing enqueues skip that, it costs a result subscription per job."""
    app = celery_app()
    if app.conf.broker_url.startswith("memory://"):
        from tasks.embedded import ensure_worker

        ensure_worker()
    # Explicit reprs: Celery would otherwise saferepr the kwargs into the message headers, which
    # costs more than the publish and copies user text into broker headers and worker logs.
    shown = ", ".join(sorted(kwargs))
    result = app.send_task(
        name,
        kwargs=kwargs,
        task_id=job_id,
        ignore_result=not track,
        argsrepr="()",
        kwargsrepr=f"{{{shown}}}",
    )
    return str(result.id)


def wait(task_ids: list[str], timeout: float, *, settled: Callable[[str], bool] | None = None) -> list[str]:
    """Wait for jobs; each job returns its outcome (ok, user_error, error); `timeout` if it didn't finish.
    `settled(task_id)`, asked twice a second while one is waited for, says a job will never run (its
    work was called off elsewhere): it counts as ok."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from celery.result import AsyncResult

    outcomes = []
    for task_id_ in task_ids:
        result = AsyncResult(task_id_, app=celery_app())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                # Celery polls a non-push backend every `interval` (0.5 s by default): up to half a
                # second added to every job's answer in the terminal. The in-process backend is a dict.
                value = result.get(timeout=max(0.0, min(left, SETTLED_EVERY_S) if settled else left), interval=0.02,
                                   propagate=False, disable_sync_subtasks=False)
            except CeleryTimeout:
                if settled is not None and settled(task_id_):
                    outcomes.append("ok")
                    break
                if time.monotonic() < deadline:
                    continue
                outcomes.append("timeout")
                break
            outcomes.append(value if isinstance(value, str) else "error")
            break
    return outcomes


def publish_home(user: str, *, key: str | None) -> str:
    """The job that builds `user`'s Home tab and publishes it (`key`: a repeated request publishes once)."""
    reply_to = {"home": user, "user": user, "channel": "", "source": "slack"}
    return enqueue(HOME_TASK, {"user": user, "reply_to": reply_to, "audit_id": None}, job_id=task_id(key, HOME_TASK))
