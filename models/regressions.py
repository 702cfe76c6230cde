"""Regression runs from chat: one row per run of a suite, and the results of its chunks.

The run is written (as `queued`) in the transaction of the command that asks for it, before its job
is sent. Its chunks store their results here; the chunk that completes the run moves it to
`reporting` with one conditional UPDATE (two chunks finishing together: one wins), and the report job
ends it `passed` or `failed` (the gate's verdict) or `error` (it could not run). Promote is one
conditional UPDATE too: the first press wins, every other one is told.

States: queued -> running -> reporting -> passed | failed; any unfinished state -> error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow

QUEUED, RUNNING, REPORTING = "queued", "running", "reporting"
PASSED, FAILED, ERROR = "passed", "failed", "error"
ACTIVE = (QUEUED, RUNNING, REPORTING)
ENDED = (PASSED, FAILED, ERROR)
NOT_FINISHED = "It could not finish: "
"""How the reason of a run the reaper ended starts (its workers kept dying)."""


class RegressionRun(Base):
    __tablename__ = "regression_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64), default="")
    suite: Mapped[str] = mapped_column(String(128))
    suite_file: Mapped[str] = mapped_column(Text)
    """The suite's file, resolved inside a configured suites folder when the command was checked."""
    suite_digest: Mapped[str] = mapped_column(String(64), default="", server_default="")
    """SHA-256 of that file when the command was checked (empty: not known, runs made before 0014)."""
    targets: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """role -> target as asked (`models:/sales-agent@candidate`)."""
    resolved: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """role -> the exact target run (`models:/sales-agent/3`: an alias moved later doesn't change the report)."""
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    workers: Mapped[int] = mapped_column(Integer, default=1)
    chunks: Mapped[int] = mapped_column(Integer, default=1)
    total: Mapped[int] = mapped_column(Integer, default=0)
    """Conversations × targets."""
    done: Mapped[int] = mapped_column(Integer, default=0)
    failing: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    reason: Mapped[str] = mapped_column(Text, default="")
    """The gate's reasons (failed), or why the run could not finish (error)."""
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """role -> summary (total, passed, failed, errors, pass_rate, p95_latency_ms)."""
    highlights: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the card shows first: new failures and fixes with their first diverging turn."""
    reply_to: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    task_id: Mapped[str] = mapped_column(String(64))
    report_job: Mapped[str] = mapped_column(String(64), default="")
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64), default=None)
    candidate_model: Mapped[str | None] = mapped_column(String(256), default=None)
    candidate_version: Mapped[str | None] = mapped_column(String(32), default=None)
    baseline_version: Mapped[str | None] = mapped_column(String(32), default=None)
    promoted_by: Mapped[str | None] = mapped_column(String(64), default=None)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    promotion: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the promote job did: the alias, the version it pointed at before, the decision logged."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    __table_args__ = (Index("ix_regression_runs_suite_created", "suite", "created_at"),)

    @property
    def label(self) -> str:
        return f"R{self.id}"


class RegressionChunk(Base):
    """One chunk's results (a JSON list of [role, result]); its key makes a redelivered chunk count once."""

    __tablename__ = "regression_chunks"

    run_id: Mapped[int] = mapped_column(ForeignKey("regression_runs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    results: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


_R = RegressionRun.__table__
_C = RegressionChunk.__table__


def create(
    session: Session,
    *,
    user: str,
    channel: str,
    suite: str,
    suite_file: str,
    targets: dict[str, str],
    tags: list[str],
    gate: dict[str, Any],
    workers: int,
    chunks: int,
    total: int,
    reply_to: dict[str, Any],
    task_id: str,
    report_job: str,
    suite_digest: str = "",
) -> RegressionRun:
    run = RegressionRun(
        user=user, channel=channel, suite=suite, suite_file=suite_file, suite_digest=suite_digest, targets=targets, resolved={}, tags=tags,
        gate=gate, workers=workers, chunks=chunks, total=total, done=0, failing=0, status=QUEUED, reason="",
        counts={}, highlights={}, reply_to=reply_to, task_id=task_id, report_job=report_job, promotion={},
        created_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def get(session: Session, *, run_id: int) -> RegressionRun | None:
    return session.get(RegressionRun, run_id)


def start(session: Session, *, run_id: int, resolved: dict[str, str], candidate_model: str | None,
          candidate_version: str | None, baseline_version: str | None) -> bool:
    """queued -> running, with the exact targets; False if it already started or ended."""
    result = session.execute(
        update(_R)
        .where(_R.c.id == run_id, _R.c.status == QUEUED)
        .values(status=RUNNING, resolved=resolved, candidate_model=candidate_model, candidate_version=candidate_version,
                baseline_version=baseline_version, started_at=utcnow())
    )
    return bool(result.rowcount)


def add_chunk(session: Session, *, run_id: int, index: int, results: list[Any]) -> bool:
    """Store a chunk's results and count them; False if this chunk was stored before (a redelivery)."""
    try:
        with session.begin_nested():
            session.execute(insert(_C), {"run_id": run_id, "index": index, "results": results, "created_at": utcnow()})
    except IntegrityError:
        return False
    failing = sum(1 for _, result in results if result.get("status") != "pass")
    session.execute(
        update(_R)
        .where(_R.c.id == run_id)
        .values(done=_R.c.done + len(results), failing=_R.c.failing + failing)
    )
    return True


def chunks_stored(session: Session, *, run_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(_C).where(_C.c.run_id == run_id)) or 0)


def results(session: Session, *, run_id: int) -> list[Any]:
    rows = session.execute(select(_C.c.results).where(_C.c.run_id == run_id).order_by(_C.c.index))
    return [item for (chunk,) in rows for item in chunk]


def to_reporting(session: Session, *, run_id: int) -> bool:
    """running -> reporting once every chunk is stored; True for the one caller that moved it."""
    stored = select(func.count()).select_from(_C).where(_C.c.run_id == run_id).scalar_subquery()
    result = session.execute(
        update(_R).where(_R.c.id == run_id, _R.c.status == RUNNING, _R.c.chunks <= stored).values(status=REPORTING)
    )
    return bool(result.rowcount)


def set_mlflow(session: Session, *, run_id: int, mlflow_run_id: str, experiment_id: str) -> None:
    session.execute(update(_R).where(_R.c.id == run_id).values(mlflow_run_id=mlflow_run_id,
                                                               mlflow_experiment_id=experiment_id))


def finish(session: Session, *, run_id: int, status: str, reason: str, counts: dict[str, Any],
           highlights: dict[str, Any]) -> bool:
    """reporting -> passed | failed."""
    result = session.execute(
        update(_R)
        .where(_R.c.id == run_id, _R.c.status == REPORTING)
        .values(status=status, reason=reason, counts=counts, highlights=highlights, ended_at=utcnow())
    )
    return bool(result.rowcount)


def fail(session: Session, *, run_id: int, reason: str) -> bool:
    """Any unfinished state -> error, with the reason the card shows; False if it had already ended."""
    result = session.execute(
        update(_R).where(_R.c.id == run_id, _R.c.status.in_(ACTIVE)).values(status=ERROR, reason=reason, ended_at=utcnow())
    )
    return bool(result.rowcount)


def claim_promotion(session: Session, *, run_id: int, user: str) -> bool:
    """The first press of Promote wins (a conditional UPDATE); every later or concurrent one gets False."""
    result = session.execute(
        update(_R)
        .where(_R.c.id == run_id, _R.c.status == PASSED, _R.c.promoted_by.is_(None))
        .values(promoted_by=user, promoted_at=utcnow())
    )
    return bool(result.rowcount)


def _locked_promotion(session: Session, run_id: int) -> Any:
    """The run's claim and promotion, its row locked until the transaction ends (PostgreSQL; SQLite
    writes one at a time anyway): a release and a job's last write can't interleave."""
    query = select(_R.c.promoted_by, _R.c.promoted_at, _R.c.promotion).where(_R.c.id == run_id).with_for_update()
    return session.execute(query).first()


def holds_promotion(session: Session, *, run_id: int, token: datetime | None) -> bool:
    """Whether the press a promote job serves (its `promoted_at`, read when the job started) still holds
    the run, unfinished: the reaper may have released it (the job looked dead) and someone pressed again
    since, or re-sent the job, whose copy logged the decision while this one was paused."""
    row = _locked_promotion(session, run_id)
    if row is None or row.promoted_by is None or row.promoted_at != token:
        return False
    # A copy of the job the reaper re-sent while this one was only paused finished the press already.
    return not (row.promotion or {}).get("decision_id")


def release_promotion(
    session: Session, *, run_id: int, stopped: str = "", token: datetime | None = None, moved: bool = True
) -> bool:
    """A promotion that didn't finish: the next press may try again. What an earlier attempt recorded
    before moving the alias (`moving_from`, the version it pointed at) is kept unless `moved` is False
    (the attempt knows the alias isn't at the candidate): if that move happened, the next attempt finds
    the alias at the candidate and still knows which version it replaced, and older runs can't move the
    alias back meanwhile. `stopped` is why, for the card. Nothing changes (False) once the decision is
    logged (its job finished; only its reply wasn't delivered) or, with `token`, when another press holds
    the run now."""
    row = _locked_promotion(session, run_id)
    if row is None or (row.promotion or {}).get("decision_id"):
        return False
    if token is not None and (row.promoted_by is None or row.promoted_at != token):
        return False
    promotion = row.promotion or {}
    kept = {key: promotion[key] for key in ("alias", "moving_from") if key in promotion} if moved else {}
    if stopped:
        kept["stopped"] = stopped
    session.execute(update(_R).where(_R.c.id == run_id).values(promoted_by=None, promoted_at=None, promotion=kept))
    return True


def set_promotion(session: Session, *, run_id: int, promotion: dict[str, Any]) -> None:
    session.execute(update(_R).where(_R.c.id == run_id).values(promotion=promotion))


def newer_failed(session: Session, *, run: RegressionRun) -> RegressionRun | None:
    """The newest later run of the same suite that didn't pass (a reason not to promote)."""
    query = (
        select(RegressionRun)
        .where(RegressionRun.suite == run.suite, RegressionRun.id > run.id,
               RegressionRun.status.in_((FAILED, ERROR)))
        .order_by(RegressionRun.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def newer_promoted(session: Session, *, run: RegressionRun, moving: bool = False) -> RegressionRun | None:
    """The newest later run of the same suite that was promoted (its press accepted; with `moving`, its
    job has started moving the alias): promoting `run` after it would move the alias back to a candidate
    compared with a production that is no longer there."""
    query = (
        select(RegressionRun)
        .where(RegressionRun.suite == run.suite, RegressionRun.id > run.id, RegressionRun.status == PASSED)
        .order_by(RegressionRun.id.desc())
    )
    # A released run that recorded `moving_from` may have moved the alias (its job stopped after the
    # move, before the decision): it counts until a press finishes it.
    found = [newer for newer in session.scalars(query) if newer.promoted_by or "moving_from" in (newer.promotion or {})]
    if moving:
        found = [newer for newer in found if "moving_from" in (newer.promotion or {})]
    return found[0] if found else None


def recent(session: Session, *, suite: str | None, since: datetime | None, limit: int = 20) -> list[RegressionRun]:
    query = select(RegressionRun).order_by(RegressionRun.id.desc()).limit(limit)
    if suite:
        query = query.where(RegressionRun.suite == suite)
    if since is not None:
        query = query.where(RegressionRun.created_at >= since)
    return list(session.scalars(query))


