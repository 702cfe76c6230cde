"""Keep the run index (models.run_index) current with MLflow, reading only what changed.

A sync re-reads runs that started since the newest one indexed, runs that ended since the last
sync, and runs the index still has as running; a full re-read every FULL_EVERY catches the rest
(values logged to a run after it ended, runs purged by `mlflow gc`). Every query refreshes an
index older than MAX_AGE first, and a periodic job keeps the indexed experiments warm.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from models import run_index
from models.db import session_scope
from models.errors import Conflict
from tasks import mlflow_io

MAX_AGE = timedelta(seconds=60)
FULL_EVERY = timedelta(hours=6)
CLOCK_SLACK_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    primary_metric: str | None = None
    """From the experiment's MLflow tag `labmate.primary_metric`, if it has one."""


@dataclass
class SyncStats:
    full: bool = False
    read: int = 0
    skipped: bool = False


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ensure_fresh(
    experiment: Experiment, *, max_age: timedelta = MAX_AGE, now: datetime | None = None, full: bool = False
) -> SyncStats:
    now = now or datetime.now(UTC)
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.experiment_id)
        if state is not None and not full and now - _aware(state.synced_at) < max_age:
            return SyncStats(skipped=True)
        full = full or state is None or now - _aware(state.full_sync_at) >= FULL_EVERY
        running = [] if full else run_index.running_ids(session, experiment.experiment_id)
        since_start = 0 if state is None else state.max_start_time - CLOCK_SLACK_MS
        since_end = 0 if state is None else state.synced_ms - CLOCK_SLACK_MS
    eid = experiment.experiment_id
    if full:
        records = mlflow_io.search_records([eid])
    else:
        fresh = {
            r.run_id: r
            for r in mlflow_io.search_records([eid], f"attributes.start_time >= {since_start}")
            + mlflow_io.search_records([eid], f"attributes.end_time >= {since_end}")
            + mlflow_io.records_by_ids(eid, running)
        }
        records = list(fresh.values())
    deleted = mlflow_io.deleted_run_ids(eid)
    try:
        with session_scope() as session:
            if full:
                run_index.reset_keys(session, eid)
            run_index.upsert(session, records)
            restored = run_index.set_deleted(session, experiment_id=eid, run_ids=deleted)
            if restored:
                run_index.upsert(session, mlflow_io.records_by_ids(eid, restored))
            if full:
                run_index.drop_missing(session, experiment_id=eid, keep={r.run_id for r in records} | deleted)
            run_index.save_state(session, experiment_id=eid, name=experiment.name, now=now, full=full)
    except Conflict:
        return SyncStats(full=full, read=len(records), skipped=True)  # a concurrent sync wrote the same runs
    return SyncStats(full=full, read=len(records))


def indexed_experiments() -> list[Experiment]:
    from sqlalchemy import select

    with session_scope() as session:
        rows = session.execute(select(run_index.SyncState.experiment_id, run_index.SyncState.name)).all()
    return [Experiment(eid, name) for eid, name in rows]
