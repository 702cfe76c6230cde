"""The Celery tasks. All are read-only against MLflow (the run index they refresh is a cache),
so they are safe to run twice: a job whose worker died is run again (tasks.jobs.JobTask)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_init

from labmate import outbox
from labmate.errors import LabmateError
from labmate.settings import get_settings
from models.errors import Unavailable
from tasks import mlflow_io
from tasks.app import EMBEDDED_HOSTNAME
from tasks.experiments import compare as compare_job
from tasks.experiments import first, query, summary, sync
from tasks.experiments.sync import Experiment, indexed_experiments
from tasks.jobs import JobTask, Replies, first_key, periodic, run_job

log = logging.getLogger(__name__)
OPTIONS: dict[str, Any] = {"base": JobTask, "bind": True, "soft_time_limit": 120, "time_limit": 150}
BUILD_BUDGET_S = 240.0
"""A build task works this long, then hands the rest to a new task (well within its time limit)."""
Interim = Callable[[str, dict[str, Any]], None]


def _explained(work: Callable[[], Replies], understood: str) -> Callable[[], Replies]:
    """A question's answer that fails still says how the question was read; an MLflow failure the
    user can act on (a refused tracking URI, a server that's down) says so instead of an error id."""

    def run() -> Replies:
        try:
            return work()
        except LabmateError as exc:
            if understood:
                exc.hint = f"I read your question as: {understood}. {exc.hint}".strip()
            raise
        except Exception as exc:
            explained = mlflow_io.user_error(exc)
            if explained is None:
                raise
            raise explained from exc

    return run


def _interim(task: Task, reply_to: dict[str, Any]) -> Interim:
    """The interim answer goes out at once, under the key of the job's first reply: the final
    answer, delivered under the same key by run_job, edits that message in place."""
    key = first_key(task)

    def show(template: str, context: dict[str, Any]) -> None:
        outbox.deliver(reply_to, template, context, key=key, final=False)

    return show


FOLLOW_UP_AFTER_S = 30
MAX_FOLLOW_UPS = 20


def _ask_again_later(task: Task) -> Callable[[], None]:
    """When a question stopped waiting for a long index build, the same question is asked again
    later, to edit its answer in place once the index is ready (the user doesn't have to ask)."""

    def later() -> None:
        kwargs = dict(task.request.kwargs or {})
        round_ = int(kwargs.get("follow_up", 0)) + 1
        if round_ > MAX_FOLLOW_UPS:
            return
        reply_to = {k: v for k, v in kwargs.get("reply_to", {}).items() if k != "audit"}
        kwargs.update(answer_key=first_key(task), follow_up=round_, reply_to=reply_to, audit_id=None)
        task.apply_async(kwargs=kwargs, countdown=FOLLOW_UP_AFTER_S)

    return later


def _continue_build(experiment: Experiment) -> None:
    build_index_task.apply_async(
        kwargs={"experiment_id": experiment.experiment_id, "name": experiment.name, "store": experiment.store}
    )


first.on_unfinished(_continue_build)


@worker_init.connect
def _warm_imports(sender: Any = None, **_kwargs: Any) -> None:
    """Import MLflow's client and matplotlib once in the worker's parent, before the pool forks, so
    no first question pays ~2 s of imports (the Slack-facing process never imports this module).
    Not in the terminal's embedded worker: it runs one command, which imports what it uses (and an
    answer from the run index on a SQL store needs neither)."""
    if getattr(sender, "hostname", "") == EMBEDDED_HOSTNAME or not get_settings().worker_preload:
        return
    started = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure
    import mlflow.tracking  # noqa: F401

    log.info("preloaded MLflow and matplotlib for the pool in %.1f s", time.perf_counter() - started)


def _run(
    task: Task, name: str, work: Callable[[], Replies], reply_to: dict[str, Any], audit_id: int | None, understood: str
) -> str:
    with first.follow_up(_ask_again_later(task)):
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
    ascending: bool | None = None,
    answer_key: str | None = None,
    follow_up: int = 0,
) -> str:
    return _run(
        self,
        "summary",
        lambda: summary.summary(experiment, metric, top, understood, ascending, _interim(self, reply_to)),
        reply_to,
        audit_id,
        understood,
    )


@shared_task(name="labmate.experiments.best", **OPTIONS)
def best_task(
    self: Task,
    experiment: str,
    metric: str | None,
    since_ms: int | None,
    reply_to: dict[str, Any],
    audit_id: int | None = None,
    understood: str = "",
    ascending: bool | None = None,
    answer_key: str | None = None,
    follow_up: int = 0,
) -> str:
    return _run(
        self,
        "best",
        lambda: summary.best(experiment, metric, since_ms, understood, ascending, _interim(self, reply_to)),
        reply_to,
        audit_id,
        understood,
    )


@shared_task(name="labmate.experiments.compare", **OPTIONS)
def compare_task(
    self: Task,
    runs: list[str],
    reply_to: dict[str, Any],
    audit_id: int | None = None,
    understood: str = "",
    experiment: str | None = None,
    answer_key: str | None = None,
    follow_up: int = 0,
) -> str:
    return _run(self, "compare", lambda: compare_job.compare(runs, understood, experiment), reply_to, audit_id, understood)


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
    answer_key: str | None = None,
    follow_up: int = 0,
) -> str:
    return _run(
        self,
        "find",
        lambda: query.find(experiment, conditions, order_by, ascending, limit, understood, _interim(self, reply_to)),
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
    answer_key: str | None = None,
    follow_up: int = 0,
) -> str:
    return _run(
        self,
        "runs",
        lambda: query.runs(experiment, status, since_ms, user, tags, understood, _interim(self, reply_to)),
        reply_to,
        audit_id,
        understood,
    )


@shared_task(
    name="labmate.experiments.build_index",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=BUILD_BUDGET_S + 60,
    time_limit=BUILD_BUDGET_S + 120,
)
def build_index_task(experiment_id: str, name: str, store: str) -> str:
    """Build an experiment's run index in chunks; a build longer than BUILD_BUDGET_S continues in a
    new task from its cursor, so no time limit can roll it back."""
    if store != mlflow_io.store():
        return "other-store"  # a worker pointed at another tracking store can't read this one
    experiment = Experiment(experiment_id, name, store=store)
    done = sync.build(experiment, budget_s=BUILD_BUDGET_S)
    if done is False:
        _continue_build(experiment)
        return "continued"
    return "done" if done else "busy"


@shared_task(
    name="labmate.experiments.sync_index",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=600,
    time_limit=660,
    expires=120,
)
@periodic
def sync_index_task() -> int:
    """Periodic: keep every experiment someone asked about current, so answers don't wait on a sync;
    finish builds nobody waits for, and refresh each index in full every FULL_EVERY."""
    synced = 0
    for experiment, ready, full_due in indexed_experiments():
        try:
            if not ready or full_due:
                if ready:
                    sync.start_refresh(experiment)
                _continue_build(experiment)
            else:
                sync.refresh(experiment)
            synced += 1
        except Unavailable:
            raise  # the knowledge base is down: one line for the tick, not a traceback per experiment
        except Exception:
            log.exception("could not sync the run index of %s", experiment.name)
    return synced
