"""A read model of MLflow runs: each run's status, owner, params, tags and latest metric values.

Kept in the knowledge base and refreshed incrementally from MLflow (`tasks.experiments.sync`), so
summaries and rankings run on indexed tables instead of MLflow's `search_runs(order_by=metric)`,
whose cost grows with the whole experiment. Plain values in and out: no mlflow types here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, String, Text, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base

FAILED_STATUSES = ("FAILED", "KILLED")
MAX_TAG_VALUE = 1000
CHUNK = 500


class IndexedRun(Base):
    __tablename__ = "run_index_runs"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(256), default="")
    start_time: Mapped[int] = mapped_column(BigInteger, default=0)
    end_time: Mapped[int | None] = mapped_column(BigInteger, default=None)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_run_index_runs_exp_status", "experiment_id", "status"),
        Index("ix_run_index_runs_exp_start", "experiment_id", "start_time"),
        Index("ix_run_index_runs_exp_name", "experiment_id", "name"),
    )


class IndexedMetric(Base):
    __tablename__ = "run_index_metrics"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float, default=None)
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    timestamp: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_run_index_metrics_exp_key_value", "experiment_id", "key", "value"),)


class IndexedParam(Base):
    __tablename__ = "run_index_params"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_run_index_params_exp_key", "experiment_id", "key"),)


class IndexedTag(Base):
    __tablename__ = "run_index_tags"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_run_index_tags_exp_key_value", "experiment_id", "key", "value"),)


class IndexedKey(Base):
    """The metric, param and tag names each experiment uses (metrics: first logged when), so
    name checks and the default metric don't scan every run's rows."""

    __tablename__ = "run_index_keys"

    experiment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    first_ts: Mapped[int] = mapped_column(BigInteger, default=0)


class SyncState(Base):
    """Per experiment: when it was last synced and the high-water marks the next sync starts from."""

    __tablename__ = "run_index_sync"

    experiment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    synced_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    max_start_time: Mapped[int] = mapped_column(BigInteger, default=0)
    full_sync_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass
class RunRecord:
    run_id: str
    experiment_id: str
    name: str
    status: str
    user: str
    start_time: int
    end_time: int | None
    deleted: bool = False
    metrics: dict[str, tuple[float | None, int, int]] = field(default_factory=dict)  # key -> (value, step, ts)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRow:
    run_id: str
    experiment_id: str
    name: str
    status: str
    user: str
    start_time: int
    end_time: int | None
    deleted: bool


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def upsert(session: Session, records: Sequence[RunRecord]) -> None:
    """Replace these runs (and their metrics, params, tags) in the index."""
    if not records:
        return
    ids = [r.run_id for r in records]
    for chunk in _chunks(ids):
        for model in (IndexedMetric, IndexedParam, IndexedTag, IndexedRun):
            session.execute(delete(model).where(model.run_id.in_(chunk)))
    session.execute(
        IndexedRun.__table__.insert(),
        [
            {
                "run_id": r.run_id,
                "experiment_id": r.experiment_id,
                "name": r.name,
                "status": r.status,
                "user": r.user,
                "start_time": r.start_time,
                "end_time": r.end_time,
                "deleted": r.deleted,
            }
            for r in records
        ],
    )
    metrics = [
        {"run_id": r.run_id, "key": k, "experiment_id": r.experiment_id, "value": v, "step": s, "timestamp": t}
        for r in records
        for k, (v, s, t) in r.metrics.items()
    ]
    params = [
        {"run_id": r.run_id, "key": k, "experiment_id": r.experiment_id, "value": v}
        for r in records
        for k, v in r.params.items()
    ]
    tags = [
        {"run_id": r.run_id, "key": k, "experiment_id": r.experiment_id, "value": v[:MAX_TAG_VALUE]}
        for r in records
        for k, v in r.tags.items()
    ]
    for model, rows in ((IndexedMetric, metrics), (IndexedParam, params), (IndexedTag, tags)):
        if rows:
            session.execute(model.__table__.insert(), rows)
    _merge_keys(session, records)


def _merge_keys(session: Session, records: Sequence[RunRecord]) -> None:
    seen: dict[tuple[str, str, str], int] = {}
    for r in records:
        for kind, items in (("metric", {k: v[2] for k, v in r.metrics.items()}), ("param", r.params), ("tag", r.tags)):
            for key, value in items.items():
                ts = int(value) if kind == "metric" else 0
                ident = (r.experiment_id, kind, key)
                seen[ident] = min(ts, seen.get(ident, ts))
    experiments = {ident[0] for ident in seen}
    existing = {
        (k.experiment_id, k.kind, k.key): k
        for k in session.scalars(select(IndexedKey).where(IndexedKey.experiment_id.in_(experiments)))
    }
    for ident, ts in seen.items():
        known = existing.get(ident)
        if known is None:
            session.add(IndexedKey(experiment_id=ident[0], kind=ident[1], key=ident[2], first_ts=ts))
        elif ts < known.first_ts:
            known.first_ts = ts
    session.flush()


def reset_keys(session: Session, experiment_id: str) -> None:
    """Before a full sync: names no run uses any more disappear."""
    session.execute(delete(IndexedKey).where(IndexedKey.experiment_id == experiment_id))


def set_deleted(session: Session, *, experiment_id: str, run_ids: set[str]) -> list[str]:
    """Mark exactly `run_ids` deleted in this experiment; returns ids marked deleted before but not now."""
    before = set(
        session.scalars(
            select(IndexedRun.run_id).where(IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(True))
        )
    )
    newly = sorted(run_ids - before)
    for chunk in _chunks(newly):
        session.query(IndexedRun).filter(IndexedRun.run_id.in_(chunk)).update({"deleted": True})
    return sorted(before - run_ids)


def drop_missing(session: Session, *, experiment_id: str, keep: set[str]) -> None:
    """After a full sync: remove runs MLflow no longer has (purged by gc)."""
    known = set(session.scalars(select(IndexedRun.run_id).where(IndexedRun.experiment_id == experiment_id)))
    gone = sorted(known - keep)
    for chunk in _chunks(gone):
        for model in (IndexedMetric, IndexedParam, IndexedTag, IndexedRun):
            session.execute(delete(model).where(model.run_id.in_(chunk)))


def sync_state(session: Session, experiment_id: str) -> SyncState | None:
    return session.get(SyncState, experiment_id)


def running_ids(session: Session, experiment_id: str) -> list[str]:
    return list(
        session.scalars(
            select(IndexedRun.run_id).where(
                IndexedRun.experiment_id == experiment_id,
                IndexedRun.status.in_(("RUNNING", "SCHEDULED")),
                IndexedRun.deleted.is_(False),
            )
        )
    )


def _row(run: IndexedRun) -> RunRow:
    return RunRow(
        run.run_id, run.experiment_id, run.name, run.status, run.user, run.start_time, run.end_time, run.deleted
    )


def counts_by_status(session: Session, experiment_id: str) -> dict[str, int]:
    rows = session.execute(
        select(IndexedRun.status, func.count())
        .where(IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(False))
        .group_by(IndexedRun.status)
    ).all()
    return {status: count for status, count in rows}


def _keys(session: Session, experiment_id: str, kind: str) -> dict[str, int]:
    rows = session.execute(
        select(IndexedKey.key, IndexedKey.first_ts).where(
            IndexedKey.experiment_id == experiment_id, IndexedKey.kind == kind
        )
    ).all()
    return {key: int(ts) for key, ts in rows}


def metric_keys(session: Session, experiment_id: str) -> dict[str, int]:
    """Metric names of the experiment -> the earliest time any run logged it (ms)."""
    return _keys(session, experiment_id, "metric")


def param_keys(session: Session, experiment_id: str) -> list[str]:
    return list(_keys(session, experiment_id, "param"))


def tag_keys(session: Session, experiment_id: str) -> list[str]:
    return list(_keys(session, experiment_id, "tag"))


def max_steps(session: Session, run_ids: Sequence[str], metric: str) -> dict[str, int]:
    """The step of each run's latest value of `metric` (a hint of how long its history is)."""
    rows = session.execute(
        select(IndexedMetric.run_id, IndexedMetric.step).where(
            IndexedMetric.run_id.in_(list(run_ids)), IndexedMetric.key == metric
        )
    ).all()
    return {run_id: int(step) for run_id, step in rows}


def top_runs(
    session: Session,
    *,
    experiment_id: str,
    metric: str,
    limit: int,
    ascending: bool,
    finished_before: int | None = None,
    since: int | None = None,
    exclude_failed: bool = True,
) -> list[tuple[RunRow, float]]:
    """Runs ranked by their latest value of `metric` (an index range scan that stops at `limit`)."""
    order = IndexedMetric.value.asc() if ascending else IndexedMetric.value.desc()
    query = (
        select(IndexedRun, IndexedMetric.value)
        .join(IndexedMetric, IndexedMetric.run_id == IndexedRun.run_id)
        .where(
            IndexedMetric.experiment_id == experiment_id,
            IndexedMetric.key == metric,
            IndexedMetric.value.is_not(None),
            IndexedRun.deleted.is_(False),
        )
        .order_by(order, IndexedRun.start_time.asc())
        .limit(limit)
    )
    if exclude_failed:
        query = query.where(IndexedRun.status.not_in(FAILED_STATUSES))
    if finished_before is not None:
        query = query.where(IndexedRun.status == "FINISHED", IndexedRun.end_time < finished_before)
    if since is not None:
        query = query.where(IndexedRun.start_time >= since)
    return [(_row(run), float(value)) for run, value in session.execute(query).all()]


def list_runs(
    session: Session,
    *,
    experiment_id: str,
    status: str | None = None,
    since: int | None = None,
    user: str | None = None,
    tags: Sequence[tuple[str, str]] = (),
    limit: int = 20,
) -> tuple[list[RunRow], int]:
    """Newest runs first matching the filters, and how many match in all."""
    query = select(IndexedRun).where(IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(False))
    if status:
        query = query.where(IndexedRun.status == status)
    if since is not None:
        query = query.where(IndexedRun.start_time >= since)
    if user:
        query = query.where(func.lower(IndexedRun.user) == user.lower())
    for key, value in tags:
        query = query.where(
            select(IndexedTag.run_id)
            .where(IndexedTag.run_id == IndexedRun.run_id, IndexedTag.key == key, IndexedTag.value == value)
            .exists()
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(IndexedRun.start_time.desc()).limit(limit)).all()
    return [_row(r) for r in rows], int(total)


def metrics_of(session: Session, run_ids: Sequence[str]) -> dict[str, dict[str, float | None]]:
    found: dict[str, dict[str, float | None]] = {r: {} for r in run_ids}
    for chunk in _chunks(list(run_ids)):
        for run_id, key, value in session.execute(
            select(IndexedMetric.run_id, IndexedMetric.key, IndexedMetric.value).where(IndexedMetric.run_id.in_(chunk))
        ):
            found[run_id][key] = value
    return found


def params_of(session: Session, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    for chunk in _chunks(list(run_ids)):
        for run_id, key, value in session.execute(
            select(IndexedParam.run_id, IndexedParam.key, IndexedParam.value).where(IndexedParam.run_id.in_(chunk))
        ):
            found[run_id][key] = value
    return found


def save_state(session: Session, *, experiment_id: str, name: str, now: datetime, full: bool) -> None:
    state = session.get(SyncState, experiment_id)
    max_start = session.scalar(select(func.max(IndexedRun.start_time)).where(IndexedRun.experiment_id == experiment_id))
    now_ms = int(now.timestamp() * 1000)
    if state is None:
        state = SyncState(experiment_id=experiment_id, name=name, synced_at=now, full_sync_at=now)
        session.add(state)
    state.name = name
    state.synced_at = now
    state.synced_ms = now_ms
    state.max_start_time = int(max_start or 0)
    if full:
        state.full_sync_at = now
