"""Enqueue a job by task name; in embedded mode make sure the in-process worker runs."""

from __future__ import annotations

from typing import Any

from tasks.app import celery_app


def enqueue(name: str, kwargs: dict[str, Any], *, track: bool = False) -> str:
    """Send the job by name. `track` keeps its result so the caller can `wait` for it (the
    terminal does); Slack-facing enqueues skip that, it costs a result subscription per job."""
    app = celery_app()
    if app.conf.broker_url.startswith("memory://"):
        from tasks.embedded import ensure_worker

        ensure_worker()
    # Explicit reprs: Celery would otherwise saferepr the kwargs into the message headers, which
    # costs more than the publish and copies user text into broker headers and worker logs.
    shown = ", ".join(sorted(kwargs))
    return str(app.send_task(name, kwargs=kwargs, ignore_result=not track, argsrepr="()", kwargsrepr=f"{{{shown}}}").id)


def wait(task_ids: list[str], timeout: float) -> list[str]:
    """Wait for jobs; each job returns its outcome (ok, user_error, error); `timeout` if it didn't finish."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from celery.result import AsyncResult

    outcomes = []
    for task_id in task_ids:
        result = AsyncResult(task_id, app=celery_app())
        try:
            value = result.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
        except CeleryTimeout:
            outcomes.append("timeout")
            continue
        outcomes.append(value if isinstance(value, str) else "error")
    return outcomes
