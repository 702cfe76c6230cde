"""Keep the run index (models.run_index) current with MLflow, reading only what changed.

**Build** (the first question about an experiment, and a refresh every FULL_EVERY): the runs are
read in keyset pages of PAGE runs, oldest first, and each page is written in its own transaction
together with the cursor and the progress. Memory holds one page; a build stopped by a time limit
or a dead worker resumes from its cursor. One builder at a time per experiment, by a lease row
(a conditional UPDATE); whoever asks while another builds waits for it instead of building twice.

**Incremental sync** (a query on an index older than MAX_AGE, and the periodic job): re-reads
runs that started since the newest one indexed, runs that ended since the last sync started, and
the running runs whose newest metric timestamp in MLflow is newer than the index's (one grouped
query; stores that can't say are refreshed ROTATE runs per pass, stalest first), plus the ids of
deleted runs. Freshness is measured from when a sync *finished*; the next sync's high-water mark
from when it *started*, so nothing that changed during a long sync is missed.

**Runs labmate saw end** (a launch it supervised, a watch poll's notices): written to the index at once
(`runs_ended`, `write`), so an answer inside MAX_AGE never contradicts what labmate has just said. Every
write keeps a run the index holds from a *later* read (its `refreshed_ms`): a sync that read a run before
it ended never puts it back as running.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import run_index
from models.db import session_scope
from models.errors import Conflict
from tasks import mlflow_io

log = logging.getLogger(__name__)

MAX_AGE = timedelta(seconds=60)
FULL_EVERY = timedelta(hours=6)
CLOCK_SLACK_MS = 5 * 60 * 1000
PAGE = 2000
LEASE_MS = 60_000
ROTATE = 500
WAIT_POLL_S = 0.25


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    primary_metric: str | None = None
    """From the experiment's MLflow tag `labmate.primary_metric`, if it has one."""
    directions: tuple[tuple[str, str], ...] = ()
    """From its MLflow tags `labmate.direction.<metric>`."""
    store: str = field(default="")

    def __post_init__(self) -> None:
        if not self.store:
            object.__setattr__(self, "store", mlflow_io.store())


@dataclass
class SyncStats:
    full: bool = False
    read: int = 0
    skipped: bool = False


@dataclass(frozen=True)
class Progress:
    ready: bool
    read: int = 0
    expected: int | None = None
    building: bool = False


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _cursor(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    start, _, run_id = text.partition(":")
    return int(start), run_id


def progress(experiment: Experiment) -> Progress:
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        if state is None:
            return Progress(ready=False)
        return Progress(state.ready, state.build_read, state.build_expected, state.build_cursor is not None)


def _ensure_state(experiment: Experiment, now: datetime) -> None:
    try:
        with session_scope() as session:
            run_index.remember_store(session, store=experiment.store, uri=mlflow_io.tracking_uri())
            if run_index.sync_state(session, experiment.store, experiment.experiment_id) is None:
                run_index.new_state(
                    session, experiment.store, experiment_id=experiment.experiment_id, name=experiment.name, now=now
                )
    except Conflict:
        pass  # another worker made it first


def build(
    experiment: Experiment,
    *,
    owner: str | None = None,
    budget_s: float = 90.0,
    on_chunk: Callable[[Progress], None] | None = None,
) -> bool | None:
    """Build (or refresh) the experiment's index in chunks until done or `budget_s` is spent.
    True: done; False: stopped by the budget (resumable); None: another worker holds the lease."""
    owner = owner or uuid.uuid4().hex
    deadline = time.monotonic() + budget_s
    store, eid = experiment.store, experiment.experiment_id
    _ensure_state(experiment, datetime.now(UTC))
    reader = mlflow_io.run_reader()
    with session_scope() as session:
        if not run_index.take_lease(session, store, eid, owner=owner, now_ms=_ms(datetime.now(UTC)), for_ms=LEASE_MS):
            return None
        state = run_index.sync_state(session, store, eid)
        assert state is not None
        if state.build_cursor is None:
            state.build_cursor = ""
            state.build_started_ms = _ms(datetime.now(UTC))
            state.build_read = 0
            state.build_expected = reader.count(eid)
        cursor, started_ms, first = _cursor(state.build_cursor), state.build_started_ms, not state.ready
    try:
        while True:
            page = reader.page(eid, cursor, PAGE)
            now_ms = _ms(datetime.now(UTC))
            try:
                with session_scope() as session:
                    state = run_index.sync_state(session, store, eid)
                    assert state is not None
                    if state.lease_owner != owner:
                        return None  # stalled past the lease: another worker took the build over
                    rows = page if first else _newest(session, store, page, started_ms)
                    run_index.upsert(session, store, rows, now_ms=started_ms, new=first)
                    if page:
                        last = max(page, key=lambda r: r.run_id) if reader.ordered_by_id else page[-1]
                        cursor = (last.start_time, last.run_id)
                        state.build_cursor = f"{cursor[0]}:{cursor[1]}"
                        state.build_read += len(page)
                    state.lease_until = now_ms + LEASE_MS
                    read, expected = state.build_read, state.build_expected
            except Conflict:
                return None  # the worker that took the lease over wrote this page first
            if on_chunk:
                on_chunk(Progress(False, read, expected, True))
            # a short page ends a walk of run ids; pages on start time overlap at their boundary
            # (a run already read is dropped), so only an empty one ends those
            if not page or (reader.ordered_by_id and len(page) < PAGE):
                _finish_build(experiment, reader, started_ms)
                return True
            if time.monotonic() > deadline:
                log.info("index of %s: %s runs so far; continuing later", experiment.name, read)
                return False
    finally:
        with session_scope() as session:
            run_index.release_lease(session, store, eid, owner=owner)


def _finish_build(experiment: Experiment, reader: object, started_ms: int) -> None:
    store, eid = experiment.store, experiment.experiment_id
    deleted = reader.deleted_ids(eid)  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    with session_scope() as session:
        run_index.analyze(session)  # first: the queries below plan on the tables' real sizes
        restored = run_index.set_deleted(session, store, experiment_id=eid, run_ids=deleted)
        if restored:
            run_index.upsert(session, store, reader.records(eid, restored), now_ms=started_ms)  # type: ignore[attr-defined]
        run_index.drop_stale(session, store, experiment_id=eid, before_ms=started_ms)
        run_index.rebuild_keys(session, store, eid)
        state = run_index.sync_state(session, store, eid)
        assert state is not None
        run_index.recount(session, state)
        # the first sync re-reads every run started since the build began: a run created while it
        # ran may sort before its cursor
        state.max_start_time = min(run_index.max_start(session, store, eid), started_ms)
        state.synced_ms = started_ms
        state.synced_at = now
        state.full_sync_at = now
        state.name = experiment.name
        state.ready = True
        state.build_cursor = None


def wait_until_ready(
    experiment: Experiment, *, budget_s: float, on_chunk: Callable[[Progress], None] | None = None
) -> bool:
    """Build the index here, or wait for the worker that holds the build, for up to `budget_s`.
    Helping rather than only waiting means a question never waits on a build stuck in a queue."""
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        done = build(experiment, owner=owner, budget_s=max(0.0, deadline - time.monotonic()), on_chunk=on_chunk)
        if done:
            return True
        if done is False:
            return False
        if progress(experiment).ready:
            return True
        time.sleep(WAIT_POLL_S)
    return progress(experiment).ready


def ensure_fresh(
    experiment: Experiment, *, max_age: timedelta = MAX_AGE, now: datetime | None = None, full: bool = False
) -> SyncStats:
    """For a query: an index built at least once and synced within `max_age`. An index never built
    is built here (callers that must answer fast use `progress` and `wait_until_ready` first)."""
    now = now or datetime.now(UTC)
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        ready = state is not None and state.ready
        fresh = ready and state is not None and now - _aware(state.synced_at) < max_age
    if not ready or full:
        if full and ready:
            start_refresh(experiment)
            build(experiment, budget_s=3600)
        else:
            wait_until_ready(experiment, budget_s=3600)
        return SyncStats(full=True)
    if fresh:
        return SyncStats(skipped=True)
    return refresh(experiment, now=now)


def refresh(experiment: Experiment, *, now: datetime | None = None) -> SyncStats:
    """The incremental sync of an index that has been built."""
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    store, eid = experiment.store, experiment.experiment_id
    reader = mlflow_io.run_reader()
    with session_scope() as session:
        state = run_index.sync_state(session, store, eid)
        if state is None or not state.ready:
            return SyncStats(skipped=True)
        since_start = state.max_start_time - CLOCK_SLACK_MS
        since_end = state.synced_ms - CLOCK_SLACK_MS
    records = {r.run_id: r for r in reader.changed(eid, since_start, since_end)}
    # running runs that logged a value since the last sync began (ended and deleted ones are caught
    # by `changed` and `deleted_ids`); a store that can't say refreshes its stalest running runs
    changed_running = reader.running_changed(eid, since_end)
    if changed_running is None:
        with session_scope() as session:
            changed_running = run_index.stalest_running(session, store, eid, ROTATE)
    reread = [r for r in changed_running if r not in records]
    for record in reader.records(eid, reread) if reread else []:
        records[record.run_id] = record
    deleted = reader.deleted_ids(eid)
    now_ms = _ms(now)
    try:
        with session_scope() as session:
            run_index.upsert(session, store, _newest(session, store, list(records.values()), now_ms), now_ms=now_ms)
            restored = run_index.set_deleted(session, store, experiment_id=eid, run_ids=deleted)
            if restored:
                run_index.upsert(session, store, reader.records(eid, restored), now_ms=now_ms)
            state = run_index.sync_state(session, store, eid)
            assert state is not None
            run_index.recount(session, state)
            state.max_start_time = max(state.max_start_time, run_index.max_start(session, store, eid))
            state.synced_ms = now_ms
            state.synced_at = now + timedelta(seconds=time.perf_counter() - started)
            state.name = experiment.name
    except Conflict:
        return SyncStats(read=len(records), skipped=True)  # a concurrent sync wrote the same runs
    return SyncStats(read=len(records))


def _newest(session: Session, store: str, records: Sequence[run_index.RunRecord], read_ms: int) -> list[run_index.RunRecord]:
    """These records, less the runs the index already holds from a read that began after `read_ms`
    (a run that ended while this sync read it was written, ended, by the later read)."""
    ids = [r.run_id for r in records]
    newer: set[str] = set()
    for i in range(0, len(ids), 500):
        newer.update(
            session.scalars(
                select(run_index.IndexedRun.run_id).where(
                    run_index.IndexedRun.store == store,
                    run_index.IndexedRun.run_id.in_(ids[i : i + 500]),
                    run_index.IndexedRun.refreshed_ms > read_ms,
                )
            )
        )
    return [r for r in records if r.run_id not in newer] if newer else list(records)


def write(session: Session, experiment: Experiment, records: Sequence[run_index.RunRecord], *, read_ms: int) -> None:
    """Runs read from MLflow at `read_ms` (ms; taken before the read), written to a built index with its
    counts by status. The high-water marks and the freshness are left to the syncs: this is not one."""
    store, eid = experiment.store, experiment.experiment_id
    run_index.upsert(session, store, _newest(session, store, records, read_ms), now_ms=read_ms)
    state = run_index.sync_state(session, store, eid)
    if state is not None and records:
        run_index.recount(session, state)


def runs_ended(experiment: Experiment, run_ids: Sequence[str]) -> int:
    """Runs labmate saw end (a launch it supervised, once MLflow has its end): re-read from MLflow and
    written to the experiment's index now, so the next answer, even one inside MAX_AGE that reads only the
    index, agrees with the card. An index not built yet is left alone (its build reads them). Returns how
    many runs were written."""
    ids = [r for r in run_ids if r]
    if not ids:
        return 0
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        if state is None or not state.ready:
            return 0
    read_ms = _ms(datetime.now(UTC))
    records = mlflow_io.run_reader().records(experiment.experiment_id, ids)
    try:
        with session_scope(write=True) as session:
            write(session, experiment, records, read_ms=read_ms)
    except Conflict:
        return 0  # a concurrent sync wrote the same runs
    return len(records)


def counts(experiment: Experiment) -> dict[str, int]:
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        return dict(state.counts) if state is not None else {}


def owner_counts(experiment: Experiment) -> dict[str, int]:
    """Runs per owner as of the last sync (counted now for a state no sync has filled yet)."""
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        if state is not None and state.owner_counts is not None:
            return dict(state.owner_counts)
        return run_index.count_by_user(session, experiment.store, experiment.experiment_id)


def indexed_experiments(store: str | None = None) -> list[tuple[Experiment, bool, bool]]:
    """(experiment, ready, full refresh due) for every experiment of this store someone asked about."""
    store = store or mlflow_io.store()
    now = datetime.now(UTC)
    with session_scope() as session:
        rows = [
            (s.experiment_id, s.name, s.ready and s.build_cursor is None, now - _aware(s.full_sync_at) >= FULL_EVERY)
            for s in run_index.states(session)
            if s.store == store
        ]
    return [(Experiment(eid, name, store=store), ready, due) for eid, name, ready, due in rows]


def start_refresh(experiment: Experiment) -> None:
    """Mark a full re-read of a built index (answers keep coming from it meanwhile)."""
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        if state is not None and state.build_cursor is None:
            state.build_cursor = ""
            state.build_started_ms = _ms(datetime.now(UTC))
            state.build_read = 0
