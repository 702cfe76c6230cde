"""A read model of MLflow runs: each run's status, owner, parent, params, tags and latest metric values.

Kept in the knowledge base and refreshed incrementally from MLflow (`tasks.experiments.sync`), so
summaries, rankings and `find` run on indexed tables instead of MLflow's `search_runs`, whose cost
grows with the whole experiment. Plain values in and out: no mlflow types here.

Every row is keyed by its **tracking store** (`store`, a short hash of the tracking URI, see
`store_key`) as well as by run or experiment id: two MLflow servers both have an experiment `1`,
and a knowledge base pointed at one and then the other (or serving both) must never mix them.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from models.base import Base

FAILED_STATUSES = ("FAILED", "KILLED")
MAX_TAG_VALUE = 1000
ERROR_TAGS = ("labmate.error", "error", "exception", "error_message")
"""Tags training code sets to say why a run failed: the index keeps their end (a traceback's last
lines name the error), other tags their start."""
SHORT = 200
CHUNK = 500
RUNNING_STATUSES = ("RUNNING", "SCHEDULED")


class IndexedStore(Base):
    """A tracking store the index has seen: its key and its URI without credentials."""

    __tablename__ = "run_index_stores"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)


class IndexedRun(Base):
    __tablename__ = "run_index_runs"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(256), default="")
    start_time: Mapped[int] = mapped_column(BigInteger, default=0)
    end_time: Mapped[int | None] = mapped_column(BigInteger, default=None)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_run_id: Mapped[str | None] = mapped_column(String(32), default=None)
    last_ts: Mapped[int] = mapped_column(BigInteger, default=0)
    """The newest timestamp among the run's latest metric values: a running run is re-read only
    when MLflow has a newer one."""
    refreshed_ms: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        Index("ix_run_index_runs_exp_status", "store", "experiment_id", "deleted", "status"),
        Index("ix_run_index_runs_exp_user", "store", "experiment_id", "deleted", "user"),
        Index("ix_run_index_runs_exp_start", "store", "experiment_id", "start_time"),
        Index("ix_run_index_runs_exp_end", "store", "experiment_id", "end_time"),
        Index("ix_run_index_runs_exp_name", "store", "experiment_id", "name"),
        Index("ix_run_index_runs_parent", "store", "parent_run_id"),
    )


class IndexedMetric(Base):
    __tablename__ = "run_index_metrics"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float, default=None)
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    timestamp: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_run_index_metrics_exp_key_value", "store", "experiment_id", "key", "value"),)


class IndexedParam(Base):
    __tablename__ = "run_index_params"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text, default="")
    short: Mapped[str] = mapped_column(String(SHORT), default="")
    """The value's first 200 characters: indexed for `=` and `like` (the full value can be 8,000)."""
    num: Mapped[float | None] = mapped_column(Float, default=None)
    """The value as a number when it is one: `alpha < 0.01` is a range scan, not a text compare."""

    __table_args__ = (
        Index("ix_run_index_params_exp_key_short", "store", "experiment_id", "key", "short"),
        Index("ix_run_index_params_exp_key_num", "store", "experiment_id", "key", "num"),
    )


class IndexedTag(Base):
    __tablename__ = "run_index_tags"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text, default="")
    short: Mapped[str] = mapped_column(String(SHORT), default="")

    __table_args__ = (Index("ix_run_index_tags_exp_key_short", "store", "experiment_id", "key", "short"),)


class IndexedKey(Base):
    """The metric, param and tag names each experiment uses: when each was first logged by any run
    (`first_ts`) and by a child run (`child_ts`), so name checks and the default metric don't scan
    every run's rows."""

    __tablename__ = "run_index_keys"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    first_ts: Mapped[int] = mapped_column(BigInteger, default=0)
    child_ts: Mapped[int | None] = mapped_column(BigInteger, default=None)


class SyncState(Base):
    """Per experiment: freshness, the high-water marks the next sync starts from, the counts by
    status, and the progress of a build (resumable: each chunk commits its cursor)."""

    __tablename__ = "run_index_sync"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(500))
    ready: Mapped[bool] = mapped_column(Boolean, default=False)
    """True once a build has finished: answers come from the index from then on."""
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the last sync *finished* (freshness)."""
    synced_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    """When the last sync *started* (ms): the next one re-reads runs that ended after it."""
    max_start_time: Mapped[int] = mapped_column(BigInteger, default=0)
    full_sync_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    owner_counts: Mapped[dict[str, int] | None] = mapped_column(JSON, default=None)
    """Runs per owner, kept with `counts`; None until the first sync after migration 0012."""
    build_cursor: Mapped[str | None] = mapped_column(String(80), default=None)
    """Set while a build runs: `<start_time>:<run_id>` of the last run written."""
    build_started_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    build_read: Mapped[int] = mapped_column(Integer, default=0)
    build_expected: Mapped[int | None] = mapped_column(Integer, default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[int] = mapped_column(BigInteger, default=0)


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

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId") or None


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
    parent_run_id: str | None = None


def store_key(uri: str) -> str:
    """The tracking store a URI points at, as a 16-character key: the same store whatever the
    driver suffix, credentials or query string (`postgresql+psycopg://u:pw@h/db` = `postgresql://h/db`)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme in ("sqlite", "file", ""):
        where = parts.path if scheme else uri
    else:
        host = (parts.hostname or "").lower()
        where = f"{host}:{parts.port or ''}{parts.path.rstrip('/')}"
    return hashlib.sha256(f"{scheme}://{where}".encode()).hexdigest()[:16]


def shown_uri(uri: str) -> str:
    """The URI with its password masked and no query, for the stores table."""
    from labmate.settings import mask_url

    return mask_url(uri.split("?", 1)[0])


def remember_store(session: Session, *, store: str, uri: str) -> None:
    if session.get(IndexedStore, store) is None:
        session.add(IndexedStore(store=store, uri=shown_uri(uri)))
        session.flush()


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _kept(key: str, value: str) -> str:
    if len(value) <= MAX_TAG_VALUE:
        return value
    return "…" + value[-(MAX_TAG_VALUE - 1):] if key in ERROR_TAGS else value[:MAX_TAG_VALUE]


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def upsert(
    session: Session, store: str, records: Sequence[RunRecord], *, now_ms: int = 0, new: bool = False
) -> None:
    """Replace these runs (and their metrics, params, tags) in the index. `new`: the caller knows
    none of them is indexed yet (a first build's disjoint pages), so nothing is deleted first.

    Two writers may index one run at once on PostgreSQL (a launch's end and a watch poll): both find it
    missing and the second insert breaks the primary key. Its rows are committed by then, so the loser
    replaces them again, in a savepoint, instead of failing its whole transaction."""
    if not records:
        return
    try:
        with session.begin_nested():
            _replace(session, store, records, now_ms=now_ms, new=new)
    except Exception as exc:
        if not _unique_violation(exc):
            raise
        with session.begin_nested():
            _replace(session, store, records, now_ms=now_ms, new=False)


def _unique_violation(exc: BaseException) -> bool:
    """SQLAlchemy's IntegrityError, or psycopg's own from a COPY (it bypasses SQLAlchemy)."""
    return isinstance(exc, IntegrityError) or getattr(exc, "sqlstate", None) == "23505"


def _replace(session: Session, store: str, records: Sequence[RunRecord], *, now_ms: int, new: bool) -> None:
    ids = [r.run_id for r in records]
    if not new:
        for chunk in _chunks(ids):
            known = list(
                session.scalars(select(IndexedRun.run_id).where(IndexedRun.store == store, IndexedRun.run_id.in_(chunk)))
            )
            if not known:
                continue  # new runs (most of a sync): nothing to delete
            for model in (IndexedMetric, IndexedParam, IndexedTag, IndexedRun):
                session.execute(delete(model).where(model.store == store, model.run_id.in_(known)))
    runs = (
        [
            {
                "store": store,
                "run_id": r.run_id,
                "experiment_id": r.experiment_id,
                "name": r.name[:256],
                "status": r.status,
                "user": r.user[:256],
                "start_time": r.start_time,
                "end_time": r.end_time,
                "deleted": r.deleted,
                "parent_run_id": r.parent_run_id,
                "last_ts": max((t for _v, _s, t in r.metrics.values()), default=0),
                "refreshed_ms": now_ms,
            }
            for r in records
        ]
    )
    metrics = [
        {"store": store, "run_id": r.run_id, "key": k, "experiment_id": r.experiment_id, "value": v, "step": s,
         "timestamp": t}
        for r in records
        for k, (v, s, t) in r.metrics.items()
    ]  # fmt: skip
    params = [
        {"store": store, "run_id": r.run_id, "key": k, "experiment_id": r.experiment_id, "value": v,
         "short": v[:SHORT], "num": _number(v)}
        for r in records
        for k, v in r.params.items()
    ]  # fmt: skip
    tags = [
        {"store": store, "run_id": r.run_id, "key": k, "experiment_id": r.experiment_id,
         "value": _kept(k, v), "short": v[:SHORT]}
        for r in records
        for k, v in r.tags.items()
    ]  # fmt: skip
    for model, rows in ((IndexedRun, runs), (IndexedMetric, metrics), (IndexedParam, params), (IndexedTag, tags)):
        if rows:
            _insert(session, model.__table__, rows)
    merge_keys(session, store, records)


def _insert(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Many rows at once: COPY on PostgreSQL (psycopg), executemany elsewhere."""
    connection = session.connection()
    if connection.dialect.name != "postgresql" or len(rows) < 100:
        session.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    cursor = connection.connection.driver_connection.cursor()
    quoted = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f"COPY {table.name} ({quoted}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def merge_keys(session: Session, store: str, records: Sequence[RunRecord]) -> None:
    seen: dict[tuple[str, str, str], tuple[int, int | None]] = {}
    for r in records:
        child = r.parent_run_id is not None
        for kind, items in (("metric", {k: v[2] for k, v in r.metrics.items()}), ("param", r.params), ("tag", r.tags)):
            for key, value in items.items():
                ts = int(value) if kind == "metric" else 0
                ident = (r.experiment_id, kind, key)
                first, child_ts = seen.get(ident, (ts, None))
                if child:
                    child_ts = ts if child_ts is None else min(child_ts, ts)
                seen[ident] = (min(first, ts), child_ts)
    if not seen:
        return
    experiments = {ident[0] for ident in seen}
    existing = {
        (k.experiment_id, k.kind, k.key): k
        for k in session.scalars(
            select(IndexedKey).where(IndexedKey.store == store, IndexedKey.experiment_id.in_(experiments))
        )
    }
    for ident, (ts, child_ts) in seen.items():
        known = existing.get(ident)
        if known is None:
            session.add(
                IndexedKey(store=store, experiment_id=ident[0], kind=ident[1], key=ident[2], first_ts=ts,
                           child_ts=child_ts)
            )  # fmt: skip
            continue
        if ts < known.first_ts:
            known.first_ts = ts
        if child_ts is not None and (known.child_ts is None or child_ts < known.child_ts):
            known.child_ts = child_ts
    session.flush()


def rebuild_keys(session: Session, store: str, experiment_id: str) -> None:
    """After a build: the names exactly as the runs now use them (names no run uses disappear)."""
    session.execute(delete(IndexedKey).where(IndexedKey.store == store, IndexedKey.experiment_id == experiment_id))
    child = IndexedRun.parent_run_id.is_not(None)
    for kind, model, ts in (
        ("metric", IndexedMetric, IndexedMetric.timestamp),
        ("param", IndexedParam, None),
        ("tag", IndexedTag, None),
    ):
        first = func.min(ts) if ts is not None else func.min(0)
        child_first = func.min(func.coalesce(ts, 0)).filter(child) if ts is not None else func.min(0).filter(child)
        rows = session.execute(
            select(model.key, first, child_first)
            .join(IndexedRun, and_(IndexedRun.store == model.store, IndexedRun.run_id == model.run_id))
            .where(model.store == store, model.experiment_id == experiment_id, IndexedRun.deleted.is_(False))
            .group_by(model.key)
        ).all()
        if rows:
            session.execute(
                IndexedKey.__table__.insert(),
                [
                    {"store": store, "experiment_id": experiment_id, "kind": kind, "key": key,
                     "first_ts": int(first_ts or 0), "child_ts": None if child_ts is None else int(child_ts)}
                    for key, first_ts, child_ts in rows
                ],
            )  # fmt: skip


def set_deleted(session: Session, store: str, *, experiment_id: str, run_ids: set[str]) -> list[str]:
    """Mark exactly `run_ids` deleted in this experiment; returns ids marked deleted before but not now."""
    before = set(
        session.scalars(
            select(IndexedRun.run_id).where(
                IndexedRun.store == store, IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(True)
            )
        )
    )
    newly = sorted(run_ids - before)
    for chunk in _chunks(newly):
        session.execute(
            update(IndexedRun).where(IndexedRun.store == store, IndexedRun.run_id.in_(chunk)).values(deleted=True)
        )
    return sorted(before - run_ids)


def drop_stale(session: Session, store: str, *, experiment_id: str, before_ms: int) -> int:
    """After a build: remove the runs it didn't see (purged by `mlflow gc`)."""
    gone = list(
        session.scalars(
            select(IndexedRun.run_id).where(
                IndexedRun.store == store,
                IndexedRun.experiment_id == experiment_id,
                IndexedRun.refreshed_ms < before_ms,
                IndexedRun.deleted.is_(False),
            )
        )
    )
    for chunk in _chunks(gone):
        for model in (IndexedMetric, IndexedParam, IndexedTag, IndexedRun):
            session.execute(delete(model).where(model.store == store, model.run_id.in_(chunk)))
    return len(gone)


def sync_state(session: Session, store: str, experiment_id: str) -> SyncState | None:
    return session.get(SyncState, (store, experiment_id))


def stalest_running(session: Session, store: str, experiment_id: str, limit: int) -> list[str]:
    """The running runs refreshed longest ago (for stores that can't say which changed)."""
    return list(
        session.scalars(
            select(IndexedRun.run_id)
            .where(
                IndexedRun.store == store,
                IndexedRun.experiment_id == experiment_id,
                IndexedRun.status.in_(RUNNING_STATUSES),
                IndexedRun.deleted.is_(False),
            )
            .order_by(IndexedRun.refreshed_ms)
            .limit(limit)
        )
    )


def _row(run: IndexedRun) -> RunRow:
    return RunRow(
        run.run_id,
        run.experiment_id,
        run.name,
        run.status,
        run.user,
        run.start_time,
        run.end_time,
        run.deleted,
        run.parent_run_id,
    )


def _count_by(session: Session, store: str, experiment_id: str, column: Any) -> dict[str, int]:
    rows = session.execute(
        select(column, func.count())
        .where(IndexedRun.store == store, IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(False))
        .group_by(column)
    ).all()
    return {value or "": int(count) for value, count in rows}


def count_by_status(session: Session, store: str, experiment_id: str) -> dict[str, int]:
    return _count_by(session, store, experiment_id, IndexedRun.status)


def recount(session: Session, state: SyncState) -> None:
    """The counts a sync keeps on its state, so answers read them instead of counting every run."""
    state.counts = count_by_status(session, state.store, state.experiment_id)
    state.owner_counts = count_by_user(session, state.store, state.experiment_id)


def count_by_user(session: Session, store: str, experiment_id: str) -> dict[str, int]:
    """Runs per owner ("" for runs MLflow recorded no user for), over the runs `count_by_status` counts."""
    return _count_by(session, store, experiment_id, IndexedRun.user)


def _keys(session: Session, store: str, experiment_id: str, kind: str) -> dict[str, tuple[int, int | None]]:
    rows = session.execute(
        select(IndexedKey.key, IndexedKey.first_ts, IndexedKey.child_ts).where(
            IndexedKey.store == store, IndexedKey.experiment_id == experiment_id, IndexedKey.kind == kind
        )
    ).all()
    return {key: (int(ts), None if child is None else int(child)) for key, ts, child in rows}


def metric_keys(session: Session, store: str, experiment_id: str) -> dict[str, tuple[int, int | None]]:
    """Metric names of the experiment -> (first logged by any run, first logged by a child run) in ms."""
    return _keys(session, store, experiment_id, "metric")


def param_keys(session: Session, store: str, experiment_id: str) -> list[str]:
    return list(_keys(session, store, experiment_id, "param"))


def tag_keys(session: Session, store: str, experiment_id: str) -> list[str]:
    return list(_keys(session, store, experiment_id, "tag"))


def max_steps(session: Session, store: str, run_ids: Sequence[str], metric: str) -> dict[str, int]:
    """The step of each run's latest value of `metric` (a hint of how long its history is)."""
    rows = session.execute(
        select(IndexedMetric.run_id, IndexedMetric.step).where(
            IndexedMetric.store == store, IndexedMetric.run_id.in_(list(run_ids)), IndexedMetric.key == metric
        )
    ).all()
    return {run_id: int(step) for run_id, step in rows}


def children_have(session: Session, store: str, experiment_id: str, metric: str) -> bool:
    """Whether any child run (nested under a parent) logged `metric`: then parents aren't ranked by it."""
    key = _keys(session, store, experiment_id, "metric").get(metric)
    return bool(key and key[1] is not None)


def top_runs(
    session: Session,
    store: str,
    *,
    experiment_id: str,
    metric: str,
    limit: int,
    ascending: bool,
    finished_before: int | None = None,
    since: int | None = None,
    exclude_failed: bool = True,
    leaves_only: bool = False,
) -> list[tuple[RunRow, float]]:
    """Runs ranked by their latest value of `metric` (an index range scan that stops at `limit`).
    `leaves_only` leaves out runs that are some other run's parent (a grid search's parent). A run
    whose value is infinite diverged: it is never the best one (MLflow's SQL store keeps ±inf as ±the
    largest float, so those two values count as infinite)."""
    order = IndexedMetric.value.asc() if ascending else IndexedMetric.value.desc()
    query = (
        select(IndexedRun, IndexedMetric.value)
        .join(IndexedMetric, and_(IndexedMetric.store == IndexedRun.store, IndexedMetric.run_id == IndexedRun.run_id))
        .where(
            IndexedMetric.store == store,
            IndexedMetric.experiment_id == experiment_id,
            IndexedMetric.key == metric,
            IndexedMetric.value > -sys.float_info.max,
            IndexedMetric.value < sys.float_info.max,
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
    if leaves_only:
        child = aliased(IndexedRun)
        query = query.where(
            ~select(child.run_id)
            .where(child.store == store, child.parent_run_id == IndexedRun.run_id)
            .exists()
        )
    return [(_row(run), float(value)) for run, value in session.execute(query).all()]


def list_runs(
    session: Session,
    store: str,
    *,
    experiment_id: str,
    status: str | None = None,
    since: int | None = None,
    user: str | None = None,
    tags: Sequence[tuple[str, str]] = (),
    limit: int = 20,
) -> tuple[list[RunRow], int]:
    """Newest runs first matching the filters, and how many match in all."""
    query = select(IndexedRun).where(
        IndexedRun.store == store, IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(False)
    )
    if status:
        query = query.where(IndexedRun.status == status)
    if since is not None:
        query = query.where(IndexedRun.start_time >= since)
    if user:
        query = query.where(func.lower(IndexedRun.user) == user.lower())
    for key, value in tags:
        query = query.where(
            select(IndexedTag.run_id)
            .where(
                IndexedTag.store == store,
                IndexedTag.run_id == IndexedRun.run_id,
                IndexedTag.key == key,
                IndexedTag.short == value[:SHORT],
                IndexedTag.value == value,
            )
            .exists()
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(IndexedRun.start_time.desc()).limit(limit)).all()
    return [_row(r) for r in rows], int(total)


@dataclass(frozen=True)
class Clause:
    """One `find` condition on the index: kind (metrics, params, tags, attributes), key, op, value."""

    kind: str
    key: str
    op: str
    value: str
    numeric: bool


ATTRIBUTE_COLUMNS = {
    "status": IndexedRun.status,
    "run_name": IndexedRun.name,
    "run_id": IndexedRun.run_id,
    "user_id": IndexedRun.user,
    "start_time": IndexedRun.start_time,
    "end_time": IndexedRun.end_time,
}


def _compare(column: Any, op: str, value: Any) -> Any:
    if op == "LIKE":
        return column.like(value)
    return {
        "=": column == value,
        "!=": column != value,
        "<": column < value,
        "<=": column <= value,
        ">": column > value,
        ">=": column >= value,
    }[op]


def _clause(store: str, clause: Clause) -> Any:
    if clause.kind == "attributes":
        column = ATTRIBUTE_COLUMNS[clause.key]
        value: Any = clause.value
        if clause.key in ("start_time", "end_time"):
            value = float(clause.value)
        elif clause.key == "status":
            value = clause.value.upper()
        return _compare(column, clause.op, value)
    if clause.kind == "metrics":
        model: Any = IndexedMetric
        test = _compare(IndexedMetric.value, clause.op, float(clause.value))
    elif clause.kind == "params" and clause.op in ("<", "<=", ">", ">=") and clause.numeric:
        model = IndexedParam
        test = _compare(IndexedParam.num, clause.op, float(clause.value))
    else:
        model = IndexedParam if clause.kind == "params" else IndexedTag
        if clause.op == "LIKE":
            test = model.value.like(clause.value)
        elif clause.op in ("=", "!="):
            test = and_(model.short == clause.value[:SHORT], model.value == clause.value)
            if clause.op == "!=":
                test = model.value != clause.value
        else:
            test = _compare(model.value, clause.op, clause.value)
    return (
        select(model.run_id)
        .where(model.store == store, model.run_id == IndexedRun.run_id, model.key == clause.key, test)
        .exists()
    )


def find_runs(
    session: Session,
    store: str,
    *,
    experiment_id: str,
    clauses: Sequence[Clause],
    order_metric: str | None,
    ascending: bool,
    limit: int,
) -> tuple[list[RunRow], int]:
    """Runs matching every clause, best first by `order_metric` (runs without it left out) or newest
    first, and how many match in all."""
    query = select(IndexedRun).where(
        IndexedRun.store == store, IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(False)
    )
    for clause in clauses:
        query = query.where(_clause(store, clause))
    if order_metric:
        order = aliased(IndexedMetric)
        query = query.join(
            order,
            and_(
                order.store == store,
                order.run_id == IndexedRun.run_id,
                order.experiment_id == experiment_id,
                order.key == order_metric,
                order.value.is_not(None),
            ),
        ).order_by(order.value.asc() if ascending else order.value.desc(), IndexedRun.start_time.desc())
    else:
        query = query.order_by(IndexedRun.start_time.desc())
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    return [_row(r) for r in session.scalars(query.limit(limit)).all()], int(total)


def runs_by_ids(session: Session, store: str, run_ids: Sequence[str]) -> dict[str, RunRow]:
    found: dict[str, RunRow] = {}
    for chunk in _chunks(list(run_ids)):
        for run in session.scalars(select(IndexedRun).where(IndexedRun.store == store, IndexedRun.run_id.in_(chunk))):
            found[run.run_id] = _row(run)
    return found


def runs_by_prefix(session: Session, store: str, prefix: str, limit: int = 20) -> list[RunRow]:
    """Indexed runs whose id starts with `prefix` (a primary-key range scan)."""
    upper = prefix + "g"  # ids are lowercase hex: every id with the prefix sorts below prefix + "g"
    rows = session.scalars(
        select(IndexedRun)
        .where(IndexedRun.store == store, IndexedRun.run_id >= prefix, IndexedRun.run_id < upper)
        .limit(limit)
    ).all()
    return [_row(r) for r in rows]


def metrics_of(session: Session, store: str, run_ids: Sequence[str]) -> dict[str, dict[str, float | None]]:
    found: dict[str, dict[str, float | None]] = {r: {} for r in run_ids}
    for chunk in _chunks(list(run_ids)):
        for run_id, key, value in session.execute(
            select(IndexedMetric.run_id, IndexedMetric.key, IndexedMetric.value).where(
                IndexedMetric.store == store, IndexedMetric.run_id.in_(chunk)
            )
        ):
            found[run_id][key] = value
    return found


def params_of(session: Session, store: str, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    for chunk in _chunks(list(run_ids)):
        for run_id, key, value in session.execute(
            select(IndexedParam.run_id, IndexedParam.key, IndexedParam.value).where(
                IndexedParam.store == store, IndexedParam.run_id.in_(chunk)
            )
        ):
            found[run_id][key] = value
    return found


def names_of(session: Session, store: str, run_ids: Sequence[str]) -> dict[str, str]:
    """Run id -> run name (for showing a run's parent as its group)."""
    ids = [r for r in dict.fromkeys(run_ids) if r]
    if not ids:
        return {}
    rows = session.execute(
        select(IndexedRun.run_id, IndexedRun.name).where(IndexedRun.store == store, IndexedRun.run_id.in_(ids))
    ).all()
    return {run_id: name for run_id, name in rows}


def max_start(session: Session, store: str, experiment_id: str) -> int:
    return int(
        session.scalar(
            select(func.max(IndexedRun.start_time)).where(
                IndexedRun.store == store, IndexedRun.experiment_id == experiment_id
            )
        )
        or 0
    )


def new_state(session: Session, store: str, *, experiment_id: str, name: str, now: datetime) -> SyncState:
    state = SyncState(
        store=store,
        experiment_id=experiment_id,
        name=name,
        ready=False,
        synced_at=now,
        synced_ms=0,
        max_start_time=0,
        full_sync_at=now,
        counts={},
        build_read=0,
        lease_until=0,
    )
    session.add(state)
    session.flush()
    return state


def take_lease(session: Session, store: str, experiment_id: str, *, owner: str, now_ms: int, for_ms: int) -> bool:
    """Claim the experiment's build for `owner` unless someone else holds an unexpired lease.
    A conditional UPDATE, so two workers can't both win."""
    result = session.execute(
        update(SyncState)
        .where(
            SyncState.store == store,
            SyncState.experiment_id == experiment_id,
            or_(SyncState.lease_owner.is_(None), SyncState.lease_owner == owner, SyncState.lease_until < now_ms),
        )
        .values(lease_owner=owner, lease_until=now_ms + for_ms)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def release_lease(session: Session, store: str, experiment_id: str, *, owner: str) -> None:
    session.execute(
        update(SyncState)
        .where(SyncState.store == store, SyncState.experiment_id == experiment_id, SyncState.lease_owner == owner)
        .values(lease_owner=None, lease_until=0)
        .execution_options(synchronize_session=False)
    )


INDEX_TABLES = ("run_index_runs", "run_index_metrics", "run_index_params", "run_index_tags")


def analyze(session: Session) -> None:
    """After a build on PostgreSQL: fresh planner statistics. Without them PostgreSQL plans a
    100k-run table as a tiny one (a ranking with an anti-join took minutes instead of milliseconds).
    Not on SQLite: with statistics that show one store and one experiment, its planner scans the
    runs and sorts instead of walking the (experiment, key, value) index (5 ms -> 60 ms at 10k)."""
    from sqlalchemy import text

    if session.get_bind().dialect.name != "postgresql":
        return
    for table in INDEX_TABLES:
        session.execute(text(f"ANALYZE {table}"))


def states(session: Session) -> list[SyncState]:
    return list(session.scalars(select(SyncState)))
