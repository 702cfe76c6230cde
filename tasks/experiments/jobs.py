"""The Celery tasks. All are read-only against MLflow (the run index they refresh is a cache),
so they are safe to run twice: a job whose worker died is run again (tasks.jobs.JobTask)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task

from labmate.errors import LabmateError
from tasks.experiments import compare as compare_job
from tasks.experiments import query, summary
from tasks.experiments.sync import ensure_fresh, indexed_experiments
from tasks.jobs import JobTask, Replies, run_job

log = logging.getLogger(__name__)
OPTIONS: dict[str, Any] = {"base": JobTask, "bind": True, "soft_time_limit": 120, "time_limit": 150}


def _explained(work: Callable[[], Replies], understood: str) -> Callable[[], Replies]:
    """A question's answer that fails still says how the question was read."""

    def run() -> Replies:
        try:
            return work()
        except LabmateError as exc:
            if understood:
                exc.hint = f"I read your question as: {understood}. {exc.hint}".strip()
            raise

    return run


def _run(
    task: Task, name: str, work: Callable[[], Replies], reply_to: dict[str, Any], audit_id: int | None, understood: str
) -> str:
    return run_job(task, name, _explained(work, understood), reply_to, audit_id)


@shared_task(name="labmate.experiments.summary", **OPTIONS)
def summary_task(
    self: Task,
    experiment: str,
    metric: str | None,
    top: int,
    reply_to: dict[str, Any],
    audit_id: int | None = None,
    understood: str = "",
) -> str:
    return _run(self, "summary", lambda: summary.summary(experiment, metric, top, understood), reply_to, audit_id, understood)


@shared_task(name="labmate.experiments.best", **OPTIONS)
def best_task(
    self: Task,
    experiment: str,
    metric: str | None,
    since_ms: int | None,
    reply_to: dict[str, Any],
    audit_id: int | None = None,
    understood: str = "",
) -> str:
    return _run(self, "best", lambda: summary.best(experiment, metric, since_ms, understood), reply_to, audit_id, understood)


@shared_task(name="labmate.experiments.compare", **OPTIONS)
def compare_task(self: Task, runs: list[str], reply_to: dict[str, Any], audit_id: int | None = None, understood: str = "") -> str:
    return _run(self, "compare", lambda: compare_job.compare(runs, understood), reply_to, audit_id, understood)


@shared_task(name="labmate.experiments.find", **OPTIONS)
def find_task(
    self: Task,
    experiment: str,
    conditions: list[dict[str, Any]],
    order_by: str | None,
    ascending: bool | None,
    limit: int,
    reply_to: dict[str, Any],
    audit_id: int | None = None,
    understood: str = "",
) -> str:
    return _run(
        self,
        "find",
        lambda: query.find(experiment, conditions, order_by, ascending, limit, understood),
        reply_to,
        audit_id,
        understood,
    )


@shared_task(name="labmate.experiments.runs", **OPTIONS)
def runs_task(
    self: Task,
    experiment: str,
    status: str | None,
    since_ms: int | None,
    user: str | None,
    tags: list[list[str]],
    reply_to: dict[str, Any],
    audit_id: int | None = None,
    understood: str = "",
) -> str:
    return _run(
        self,
        "runs",
        lambda: query.runs(experiment, status, since_ms, user, tags, understood),
        reply_to,
        audit_id,
        understood,
    )


@shared_task(
    name="labmate.experiments.sync_index",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=600,
    time_limit=660,
    expires=120,
)
def sync_index_task() -> int:
    """Periodic: keep every experiment someone asked about current, so answers don't wait on a sync."""
    synced = 0
    for experiment in indexed_experiments():
        try:
            ensure_fresh(experiment)
            synced += 1
        except Exception:
            log.exception("could not sync the run index of %s", experiment.name)
    return synced
