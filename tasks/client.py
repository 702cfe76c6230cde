"""Enqueue a job by task name; in embedded mode make sure the in-process worker runs."""

from __future__ import annotations

from typing import Any

from tasks.app import celery_app


def enqueue(name: str, kwargs: dict[str, Any]) -> str:
    app = celery_app()
    if app.conf.broker_url.startswith("memory://"):
        from tasks.embedded import ensure_worker

        ensure_worker()
    return str(app.send_task(name, kwargs=kwargs).id)


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
