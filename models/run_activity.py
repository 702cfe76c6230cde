"""What happened in the run index over a window: runs that ended (run watch), and per experiment the runs
started, finished and failed (the daily digest). Index range scans on start and end time: neither reads
every run of an experiment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.run_index import IndexedRun, IndexedTag, RunRow, _chunks, _row

ENDED_STATUSES = ("FINISHED", "FAILED", "KILLED")


def ended_since(session: Session, store: str, *, experiment_id: str, since_ms: int, limit: int) -> list[RunRow]:
    """Runs of the experiment that ended at or after `since_ms` (oldest end first), at most `limit`."""
    rows = session.scalars(
        select(IndexedRun)
        .where(
            IndexedRun.store == store,
            IndexedRun.experiment_id == experiment_id,
            IndexedRun.end_time >= since_ms,
            IndexedRun.status.in_(ENDED_STATUSES),
            IndexedRun.deleted.is_(False),
        )
        .order_by(IndexedRun.end_time, IndexedRun.run_id)
        .limit(limit)
    ).all()
    return [_row(r) for r in rows]


def tags_of(session: Session, store: str, run_ids: Sequence[str], keys: Sequence[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    for chunk in _chunks(list(run_ids)):
        for run_id, key, value in session.execute(
            select(IndexedTag.run_id, IndexedTag.key, IndexedTag.value).where(
                IndexedTag.store == store, IndexedTag.run_id.in_(chunk), IndexedTag.key.in_(list(keys))
            )
        ):
            found[run_id][key] = value
    return found


@dataclass(frozen=True)
class DayCounts:
    started: int = 0
    finished: int = 0
    failed: int = 0
    killed: int = 0

    @property
    def quiet(self) -> bool:
        return not (self.started or self.finished or self.failed or self.killed)


def day_counts(session: Session, store: str, *, experiment_id: str, since_ms: int, until_ms: int) -> DayCounts:
    """Runs started, and runs that ended by status, in [since_ms, until_ms): two grouped range scans."""
    base = (IndexedRun.store == store, IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(False))
    started = session.scalar(
        select(func.count()).where(*base, IndexedRun.start_time >= since_ms, IndexedRun.start_time < until_ms)
    )
    ended = dict(
        session.execute(
            select(IndexedRun.status, func.count())
            .where(*base, IndexedRun.end_time >= since_ms, IndexedRun.end_time < until_ms)
            .group_by(IndexedRun.status)
        ).all()
    )
    return DayCounts(int(started or 0), int(ended.get("FINISHED", 0)), int(ended.get("FAILED", 0)), int(ended.get("KILLED", 0)))
