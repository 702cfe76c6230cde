"""The run index queries of the clean-up scan: only the runs a rule could match, and the runs that
protect others, each one indexed query; never every run of the experiment."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select

from models.run_index import Clause, IndexedMetric, IndexedRun, IndexedTag, _chunks, _clause

FAILED = ("FAILED", "KILLED")
KEEP_FALSE = ("false", "0", "no", "")


def _facts_query(store: str, experiment_id: str) -> Any:
    has_metrics = (
        select(IndexedMetric.run_id)
        .where(IndexedMetric.store == store, IndexedMetric.run_id == IndexedRun.run_id)
        .exists()
    )
    return select(
        IndexedRun.run_id, IndexedRun.status, IndexedRun.user, IndexedRun.start_time, IndexedRun.end_time,
        IndexedRun.last_ts, has_metrics.label("has_metrics"), IndexedRun.parent_run_id, IndexedRun.name,
    ).where(IndexedRun.store == store, IndexedRun.experiment_id == experiment_id, IndexedRun.deleted.is_(False))


def facts(row: Any) -> dict[str, Any]:
    return {
        "run_id": row.run_id, "status": row.status, "user": row.user, "start_time": int(row.start_time or 0),
        "end_time": None if row.end_time is None else int(row.end_time), "last_activity": int(row.last_ts or 0),
        "has_metrics": bool(row.has_metrics), "parent_run_id": row.parent_run_id, "name": row.name,
    }


def failed_without_metrics(session: Any, store: str, experiment_id: str, *, ended_before: int) -> list[dict[str, Any]]:
    no_metric = ~select(IndexedMetric.run_id).where(
        IndexedMetric.store == store, IndexedMetric.run_id == IndexedRun.run_id
    ).exists()
    query = _facts_query(store, experiment_id).where(
        IndexedRun.status.in_(FAILED), no_metric, func.coalesce(IndexedRun.end_time, IndexedRun.start_time) <= ended_before
    )
    return [facts(r) for r in session.execute(query)]


def silent_running(session: Any, store: str, experiment_id: str, *, silent_since: int) -> list[dict[str, Any]]:
    query = _facts_query(store, experiment_id).where(
        IndexedRun.status == "RUNNING", IndexedRun.start_time <= silent_since, IndexedRun.last_ts <= silent_since
    )
    return [facts(r) for r in session.execute(query)]


def finished_before(session: Any, store: str, experiment_id: str, *, ended_before: int) -> list[dict[str, Any]]:
    query = _facts_query(store, experiment_id).where(
        IndexedRun.status == "FINISHED", IndexedRun.end_time <= ended_before
    )
    return [facts(r) for r in session.execute(query)]


def matching(
    session: Any, store: str, experiment_id: str, clauses: Sequence[Clause], *, started_before: int
) -> list[dict[str, Any]]:
    """Runs matching every clause of a team filter (the `find` clauses, on the index)."""
    query = _facts_query(store, experiment_id).where(IndexedRun.start_time <= started_before)
    for clause in clauses:
        query = query.where(_clause(store, clause))
    return [facts(r) for r in session.execute(query)]


def kept(session: Any, store: str, experiment_id: str) -> set[str]:
    """Runs tagged `keep` (any value but false/0/no)."""
    rows = session.scalars(
        select(IndexedTag.run_id).where(
            IndexedTag.store == store, IndexedTag.experiment_id == experiment_id, IndexedTag.key == "keep",
            func.lower(IndexedTag.short).not_in(KEEP_FALSE),
        )
    )
    return set(rows)


def parents_of(session: Any, store: str, run_ids: Iterable[str]) -> dict[str, str | None]:
    """Each run's parent, and theirs, up to the top (a few queries: one per level of nesting)."""
    found: dict[str, str | None] = {}
    todo = [r for r in dict.fromkeys(run_ids) if r]
    while todo:
        level: list[str] = []
        for chunk in _chunks(todo):
            for run_id, parent in session.execute(
                select(IndexedRun.run_id, IndexedRun.parent_run_id).where(
                    IndexedRun.store == store, IndexedRun.run_id.in_(list(chunk))
                )
            ):
                found[run_id] = parent
                if parent and parent not in found:
                    level.append(parent)
        todo = [r for r in dict.fromkeys(level) if r not in found]
    return found


CLEANUP_RECORD = ("cleanup", "cleaned % stale runs from %")
"""The tag and text of the clean-up's own record of a deletion (tasks/cleanup/work.py writes it)."""


def decision_run_refs(session: Any) -> list[str]:
    """What decisions link as runs: full ids once their link was checked, what was typed before. The
    clean-up's own record of the runs it deleted is not a reason to keep one: a run restored from it is
    proposed again once its snooze has passed (docs/cleanup.md), not spared for good."""
    from models.decision import Decision, DecisionLink, DecisionTag

    tag, text = CLEANUP_RECORD
    records = (select(Decision.id).join(DecisionTag, DecisionTag.decision_id == Decision.id)
               .where(DecisionTag.tag == tag, Decision.text.like(text)))
    query = select(DecisionLink.ref).where(DecisionLink.kind == "run", DecisionLink.decision_id.not_in(records))
    return list(session.scalars(query.distinct()))


def mark_deleted(session: Any, store: str, run_ids: Iterable[str], *, deleted: bool = True) -> None:
    """What the clean-up deleted or restored, in the index at once (the next sync would say the same)."""
    from sqlalchemy import update

    for chunk in _chunks(list(run_ids)):
        session.execute(
            update(IndexedRun).where(IndexedRun.store == store, IndexedRun.run_id.in_(list(chunk))).values(deleted=deleted)
        )
