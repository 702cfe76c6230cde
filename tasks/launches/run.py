"""One launch, on a worker of the `launch` queue: claim it, fetch the project, create its MLflow run,
start the training process and watch it until it ends, is stopped, or runs out of time.

The card's progress comes from MLflow (one `get_run` every `launch_progress_every` s: the latest step
and metric values), never from hooks in the training code, and is delivered from a thread of its own,
so a slow or rate-limiting Slack never holds up the supervision of the process. A cancel is noticed
within half a second (the launch row says `killed`), the process group gets SIGTERM then SIGKILL,
and the MLflow run ends KILLED. Every end is one conditional UPDATE of the launch row: whoever writes
first (the run's end, a cancel, the reaper) decides, and MLflow and the card follow the row.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from labmate import launch_text, outbox, projects
from labmate.errors import LabmateError, new_error_id
from labmate.settings import ProjectConfig, get_settings
from models import jobs, launches
from models.db import session_scope
from models.errors import Unavailable
from tasks.jobs import Replies, worker_name
from tasks.launches import cards, process
from tasks.mlflow_io import launch as mlflow_launch

log = logging.getLogger(__name__)

RUN_TASK = "labmate.launch.run"
CARD_TASK = "labmate.launches.card"
STATUS_EVERY_S = 0.5
TICK_S = 0.1
MAX_ATTEMPTS = jobs.MAX_RESCUES  # a launch restarted after a lost worker, like any job a worker died with
MLFLOW_STATUS = {launches.FINISHED: "FINISHED", launches.FAILED: "FAILED", launches.KILLED: "KILLED"}
WORKER_LOST = "its worker stopped while running it"
T = TypeVar("T")


@dataclass
class Prepared:
    work_dir: Path
    copy: Path | None
    """The fetched copy of a git project, deleted after the run (None: the user's own directory)."""
    argv: list[str]
    run_id: str
    experiment_id: str
    attempt: int


SUPERSEDED = "superseded"
"""A later attempt runs the launch now (this worker was frozen, not dead, when the reaper retried it)."""


@dataclass
class Ending:
    status: str
    reason: str = ""


@dataclass
class Timings:
    """Milliseconds per stage, from the command's commit to the training process (kept on the launch row)."""

    values: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.values[f"{stage}_ms"] = round((now - self._last) * 1000, 2)
        self._last = now


class CardUpdater:
    """Delivers the newest intermediate card, at most every `every` s, from a thread of its own: offers
    that arrive while a delivery is in flight replace each other, and a 429 waits its Retry-After."""

    def __init__(self, reply_to: dict[str, Any], key: str, every: float) -> None:
        self.reply_to, self.key, self.every = reply_to, key, every
        self._latest: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"labmate-card-{key}", daemon=True)
        self._thread.start()

    def offer(self, context: dict[str, Any]) -> None:
        with self._lock:
            self._latest = context
        self._wake.set()

    def close(self, wait: float = 300.0) -> None:
        """Stop, after the delivery in flight (bounded by the Slack client's timeout and retries)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=wait)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                context, self._latest = self._latest, None
            if context is None or self._closed:
                continue
            pause = self.every
            try:
                outbox.deliver(self.reply_to, cards.TEMPLATE, context, key=self.key, final=False)
            except outbox.TransientDeliveryError as exc:
                pause = max(pause, exc.retry_after or 0)
                log.info("card %s not updated now (%s); the next update follows", self.key, exc)
            except Exception:
                log.warning("card %s could not be updated", self.key, exc_info=True)
            deadline = time.monotonic() + pause
            while not self._closed and time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def _retrying(what: str, call: Callable[[], T], *, seconds: float = 60.0) -> T:
    """The knowledge base for an end that must be recorded: wait out a short outage instead of losing it."""
    deadline = time.monotonic() + seconds
    pause = 0.5
    while True:
        try:
            return call()
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            log.warning("the knowledge base is unreachable; %s again in %.1f s", what, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


# -- the job ---------------------------------------------------------------------------------------


def run_launch(launch_id: int) -> Replies:
    settings = get_settings()
    launch, _ = cards.load(launch_id)
    if launch.status in launches.ENDED:
        return [cards.reply(launch_id)]  # stopped before it started, or already settled
    project = settings.projects.get(launch.project)
    restart = False
    if launch.status == launches.RUNNING:
        # This execution holds the job's claim in the ledger, so the one that started the launch is gone.
        if project is not None and project.on_worker_lost == "retry" and launch.attempts < MAX_ATTEMPTS:
            _close_lost_run(launch)
            restart = True
        else:
            with session_scope() as session:
                launches.end(session, launch_id=launch_id, status=launches.FAILED, reason=f"It failed: {WORKER_LOST}.")
            settle(launch_id)
            return [cards.reply(launch_id)]
    timings = Timings()
    created = launch_text.aware(launch.created_at)
    queued_ms = (datetime.now(UTC) - created).total_seconds() * 1000 if created else 0.0
    with session_scope() as session:
        started = launches.start(session, launch_id=launch_id, worker=worker_name(), restart=restart)
    timings.values["queue_ms"] = round(queued_ms, 2)
    timings.mark("claim")
    if started is None:
        return [cards.reply(launch_id)]  # stopped while it waited
    if project is None:
        return _fail_to_start(launch_id, f"the project `{launch.project}` is no longer configured in labmate.toml")
    try:
        prepared = prepare(launch, project, timings, started)
    except LabmateError as exc:
        return _fail_to_start(launch_id, exc.message)
    except Exception as exc:
        from tasks import mlflow_io

        explained = mlflow_io.client_error(exc)
        if explained is not None:  # MLflow down: say so, as every other command does, not an error id
            log.warning("launch L%s could not start: %s", launch_id, exc)
            return _fail_to_start(launch_id, explained.message)
        error_id = new_error_id()
        log.exception("launch L%s could not start [%s]", launch_id, error_id)
        return _fail_to_start(launch_id, f"{type(exc).__name__} (error id {error_id})")
    try:
        return watch(launch, project, prepared, timings)
    except Unavailable:
        raise  # the job's retry finds the launch running and applies the worker-lost policy
    except Exception as exc:
        error_id = new_error_id()
        log.exception("launch L%s failed in its supervisor [%s]", launch_id, error_id)
        with session_scope() as session:  # never left `running`: whatever broke, the launch ends
            launches.end(session, launch_id=launch_id, status=launches.FAILED,
                         reason=f"It failed: labmate could not supervise it ({type(exc).__name__}; error id {error_id}).")
        settle(launch_id)
        return [cards.reply(launch_id)]


def prepare(launch: launches.Launch, project: ProjectConfig, timings: Timings, attempt: int) -> Prepared:
    """The project's files, the exact argv (no shell), and the MLflow run it logs to."""
    work_dir, copy = mlflow_launch.fetch_project(project.uri, project.version, launch.entry_point, dict(launch.params))
    try:
        found = projects.read_entry_points(work_dir)
        if launch.entry_point not in found:
            raise projects.ProjectError(f"its MLproject has no entry point `{launch.entry_point}`")
        entry = found[launch.entry_point]
        declared = project.parameters.get(launch.entry_point)
        if declared is not None:
            _check_declared(entry, declared)
        params = projects.resolve(launch.project, entry, list(launch.params.items())).params
        argv = projects.command_argv(entry, params, work_dir)
        timings.mark("fetch")
        experiment_id = mlflow_launch.ensure_experiment(launch.experiment)
        run_id = mlflow_launch.create_run(
            experiment_id,
            run_name=f"{launch.project}-{launch.label}",
            user=launch.user,
            source=project.shown_uri,
            entry_point=launch.entry_point,
            params=params,
            commit=mlflow_launch.git_commit(work_dir),
            launch_label=launch.label,
            sweep_label=f"S{launch.sweep_id}" if launch.sweep_id else None,
        )
        timings.mark("mlflow")
    except BaseException:
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
        raise
    with session_scope() as session:
        launches.set_run(session, launch_id=launch.id, run_id=run_id, experiment_id=experiment_id)
    return Prepared(work_dir, copy, argv, run_id, experiment_id, attempt)


def _check_declared(entry: projects.EntryPoint, declared: dict[str, Any]) -> None:
    """labmate.toml's declaration (what the bot checked values against) must match the fetched MLproject."""
    for name, spec in declared.items():
        real = entry.parameters.get(name)
        if real is None or real.type != spec.type:
            what = f"type {real.type}" if real is not None else "no such parameter"
            raise projects.ProjectError(
                f"labmate.toml declares `{name}` as {spec.type}, but the fetched MLproject has {what}; "
                "an admin should update [projects] to match"
            )


def _fail_to_start(launch_id: int, why: str) -> Replies:
    """The card says why; the command's outcome is a user error (`labmate say` exits 1), since nothing ran."""
    with session_scope() as session:
        launches.end(session, launch_id=launch_id, status=launches.FAILED, reason=f"It did not start: {why}")
    settle(launch_id)
    template, context = cards.reply(launch_id)
    return [(template, {**context, "outcome": "user_error"})]


def _close_lost_run(launch: launches.Launch) -> None:
    """Before a retry: the run the dead worker left RUNNING in MLflow ends FAILED."""
    if launch.mlflow_run_id:
        try:
            mlflow_launch.end_run(launch.mlflow_run_id, "FAILED")
        except Exception:
            log.warning("could not mark the lost run %s failed", launch.mlflow_run_id, exc_info=True)


def _log_path(launch: launches.Launch) -> Path:
    return get_settings().home.resolve() / "launches" / f"{launch.label}-attempt{max(1, launch.attempts + 1)}.log"


def watch(launch: launches.Launch, project: ProjectConfig, prepared: Prepared, timings: Timings) -> Replies:
    settings = get_settings()
    env = process.child_env(mlflow_launch.run_env(prepared.run_id, prepared.experiment_id))
    child = process.start(prepared.argv, cwd=prepared.work_dir, env=env, log_path=_log_path(launch))
    timings.mark("spawn")
    timings.values["spawned_at"] = time.time()
    log.info("launch %s: started %s (pid %s) in run %s", launch.label, prepared.argv[0], child.pid, prepared.run_id)
    try:
        with session_scope() as session:
            launches.set_timings(session, launch_id=launch.id, timings=timings.values)
    except Exception:
        log.warning("could not record the start-up timings of %s", launch.label, exc_info=True)
    updater = CardUpdater(launch.reply_to, cards.card_key(launch.id), max(settings.launch_progress_every, 2.0))
    try:
        ending = supervise(launch.id, prepared.attempt, child, prepared.run_id, project.time_limit,
                           settings.launch_progress_every, updater, _primary(launch, prepared.experiment_id))
    finally:
        if child.poll() is None:
            child.stop()
        updater.close()  # waits for an update in flight, so none lands after the final card
    try:
        return finish(launch.id, prepared.attempt, ending, child, prepared.run_id)
    finally:
        if prepared.copy is not None:
            shutil.rmtree(prepared.copy, ignore_errors=True)


def _primary(launch: launches.Launch, experiment_id: str) -> str | None:
    """The metric the running card shows first, as the final card will (labmate.toml, else the experiment's
    MLflow tag); without either, the final card takes the first metric logged, and so does this one."""
    try:
        return mlflow_launch.primary_metric(launch.experiment, experiment_id, [])
    except Exception:
        log.warning("could not read the primary metric of %s", launch.experiment, exc_info=True)
        return None


def supervise(
    launch_id: int,
    attempt: int,
    child: process.Child,
    run_id: str,
    time_limit: float,
    progress_every: float,
    updater: CardUpdater,
    primary: str | None = None,
) -> Ending:
    deadline = child.started + time_limit
    next_status = next_progress = 0.0
    try:
        while (code := child.poll()) is None:
            now = time.monotonic()
            if now >= deadline:
                child.stop()
                return Ending(launches.KILLED, f"It reached its time limit ({launch_text.elapsed(time_limit)}) and was stopped.")
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                status, current = _status(launch_id)
                if current is not None and current != attempt:
                    child.stop()
                    return Ending(SUPERSEDED)
                if status in launches.ENDED:  # stopped by a cancel, or given up by the reaper meanwhile
                    child.stop()
                    return Ending(status)
            if now >= next_progress:
                next_progress = now + progress_every
                if _record_progress(launch_id, attempt, run_id, child):
                    try:
                        updater.offer(cards.current(launch_id, primary=primary)[0])
                    except Exception:
                        log.warning("could not render the card of L%s", launch_id, exc_info=True)
            time.sleep(TICK_S)
    except SoftTimeLimitExceeded:
        child.stop()
        return Ending(launches.KILLED, "It reached the worker's time limit and was stopped.")
    if code == 0:
        return Ending(launches.FINISHED)
    return Ending(launches.FAILED, f"It failed: {process.describe_exit(code)}.")


def _status(launch_id: int) -> tuple[str | None, int | None]:
    try:
        with session_scope() as session:
            launch = launches.get(session, launch_id=launch_id)
            return (launch.status, launch.attempts) if launch is not None else (None, None)
    except Exception:
        log.warning("could not read the state of L%s; the run goes on", launch_id, exc_info=True)
        return None, None


def _record_progress(launch_id: int, attempt: int, run_id: str, child: process.Child) -> bool:
    try:
        found = mlflow_launch.snapshot(run_id)
    except Exception:
        log.warning("could not read the progress of run %s from MLflow", run_id, exc_info=True)
        return False
    try:
        with session_scope() as session:
            launches.progress(session, launch_id=launch_id, attempt=attempt, step=found.step, metrics=found.metrics,
                              output_tail=child.tail())
    except Exception:
        log.warning("could not record the progress of L%s", launch_id, exc_info=True)
        return False
    return True


def finish(launch_id: int, attempt: int, ending: Ending, child: process.Child, run_id: str) -> Replies:
    if ending.status == SUPERSEDED:
        log.warning("L%s: attempt %s was superseded by a later one; its run %s ends FAILED", launch_id, attempt, run_id)
        try:
            mlflow_launch.end_run(run_id, "FAILED")
        except Exception:
            log.warning("could not mark the superseded run %s failed", run_id, exc_info=True)
        return []  # the card is the current attempt's
    tail = child.tail()
    try:
        found: mlflow_launch.Snapshot | None = mlflow_launch.snapshot(run_id)
    except Exception:
        log.warning("could not read the end of run %s from MLflow", run_id, exc_info=True)
        found = None
    step = found.step if found else None
    metrics = found.metrics if found else None

    def record() -> None:
        with session_scope() as session:
            won = launches.end(
                session, launch_id=launch_id, status=ending.status, reason=ending.reason, output_tail=tail,
                step=step, metrics=metrics, attempt=attempt,
            )
            if not won:  # a cancel (or the reaper) ended it first: that stands, the output is kept
                launches.record_output(session, launch_id=launch_id, attempt=attempt, output_tail=tail, step=step,
                                       metrics=metrics or {})

    _retrying(f"recording the end of L{launch_id}", record)
    settle(launch_id)
    return [cards.reply(launch_id)]


# -- after the end ---------------------------------------------------------------------------------


def settle(launch_id: int) -> None:
    """Bring MLflow and the launch's sweep in line with its row, once it has ended: its MLflow run gets the
    launch's status, a launch that never started is revoked, and a sweep's slot goes to its next run.
    Safe to repeat (whoever ended the launch, and its card job, both call it)."""
    launch, _ = cards.load(launch_id)
    if launch.status not in launches.ENDED:
        return
    if launch.mlflow_run_id:
        try:
            mlflow_launch.end_run(launch.mlflow_run_id, MLFLOW_STATUS[launch.status])
        except Exception:
            log.warning("could not set run %s to %s in MLflow", launch.mlflow_run_id, launch.status, exc_info=True)
        _index_end(launch)
    if launch.started_at is None and launch.status == launches.KILLED:
        _revoke(launch.task_id)
    if launch.sweep_id is not None:
        from tasks.launches import sweeps

        sweeps.after_end(launch)


def _index_end(launch: launches.Launch) -> None:
    """The ended run, into its experiment's run index before the card goes out: an answer right after the
    card (inside the index's freshness window) must not contradict it. Best effort: otherwise the next
    periodic or on-demand sync reads it."""
    if not launch.mlflow_run_id or not launch.experiment_id:
        return
    try:
        from tasks.experiments import sync

        sync.runs_ended(sync.Experiment(launch.experiment_id, launch.experiment), [launch.mlflow_run_id])
    except Exception:
        log.warning("could not write the end of run %s to the run index", launch.mlflow_run_id, exc_info=True)


def _revoke(task_id: str) -> None:
    """A stopped launch still waiting in the queue: workers drop its message (and its job, should it run
    anyway, finds the launch stopped and only shows the card)."""
    from tasks.app import celery_app

    try:
        celery_app().control.revoke(task_id)
    except Exception as exc:
        log.info("could not revoke %s (%s); it will find itself stopped if it runs", task_id, exc)


def card_job(launch_id: int) -> Replies:
    """The card as the launch's row says now (queued, or ended: then MLflow and the sweep are settled too)."""
    settle(launch_id)
    return [cards.reply(launch_id)]


def lost(session: Any, launch_id: int, why: str) -> list[str]:
    """The reaper gave up the launch's job: fail the launch (if it hadn't ended) and store its card job,
    in the reaper's transaction; returns the card job's key (sent after the commit)."""
    launch = launches.get(session, launch_id=launch_id)
    if launch is None:
        return []
    launches.end(session, launch_id=launch_id, status=launches.FAILED, reason=f"It failed: {why}.")
    return [card_job_row(session, launch)]


def card_job_row(session: Any, launch: launches.Launch) -> str:
    import uuid

    key = str(uuid.uuid4())
    jobs.add_queued(
        session, key=key, task=CARD_TASK,
        kwargs={"launch_id": launch.id, "reply_to": launch.reply_to, "audit_id": None}, audit_id=None,
    )
    return key
