"""Launches of training runs from chat, and the sweeps that group them.

A launch is written (as `queued`) in the transaction of the command that asks for it, before its job
is sent, so `status` and the run card read the truth from here whatever process restarted. Every
change of state is one conditional UPDATE whose row count says whether it happened: a cancel racing
the end of the run, two cancels, or a reaper and a late worker end the launch exactly once.

States: queued -> running -> finished | failed | killed (and queued -> killed | failed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow

QUEUED, RUNNING, FINISHED, FAILED, KILLED = "queued", "running", "finished", "failed", "killed"
ACTIVE = (QUEUED, RUNNING)
ENDED = (FINISHED, FAILED, KILLED)
SUMMARY_PENDING, SUMMARY_DUE = "pending", "due"
TAIL_CHARS = 4000


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64), default="")
    project: Mapped[str] = mapped_column(String(128))
    entry_point: Mapped[str] = mapped_column(String(128))
    grid: Mapped[list[Any]] = mapped_column(JSON, default=list)
    size: Mapped[int] = mapped_column(Integer)
    parallel: Mapped[int] = mapped_column(Integer)
    reply_to: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[str] = mapped_column(String(16), default=SUMMARY_PENDING)
    summary_job: Mapped[str] = mapped_column(String(64), default="")
    """The summary job's id, known from the start (the terminal waits for it)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Launch(Base):
    __tablename__ = "launches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64), default="")
    project: Mapped[str] = mapped_column(String(128))
    entry_point: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    experiment: Mapped[str] = mapped_column(String(256))
    reply_to: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Where its card goes (the command's channel or thread, or a terminal session)."""
    task_id: Mapped[str] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    experiment_id: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    reason: Mapped[str] = mapped_column(Text, default="")
    """Why it failed or was killed, in words for the card."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    worker: Mapped[str] = mapped_column(String(128), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int | None] = mapped_column(Integer, default=None)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    output_tail: Mapped[str] = mapped_column(Text, default="")
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    """Milliseconds per stage from the command to the training process (the launch benchmark reads them)."""
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id"), default=None)
    holds_slot: Mapped[bool] = mapped_column(Boolean, default=True)
    """A sweep's run holds one of the sweep's `parallel` slots from when its job is queued until it ends and
    hands the slot on (False: still waiting for one, or handed on). Always True outside sweeps."""
    stopped_by: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (
        Index("ix_launches_status_channel", "status", "channel"),
        Index("ix_launches_mlflow_run_id", "mlflow_run_id"),
        Index("ix_launches_sweep_id", "sweep_id"),
    )

    @property
    def label(self) -> str:
        return f"L{self.id}"

    @property
    def ended(self) -> bool:
        return self.status in ENDED


_L = Launch.__table__
_S = Sweep.__table__


def create(
    session: Session,
    *,
    user: str,
    channel: str,
    project: str,
    entry_point: str,
    params: dict[str, str],
    experiment: str,
    reply_to: dict[str, Any],
    task_id: str,
    total_steps: int | None = None,
    sweep_id: int | None = None,
    holds_slot: bool = True,
) -> Launch:
    launch = Launch(
        user=user,
        channel=channel,
        project=project,
        entry_point=entry_point,
        params=params,
        experiment=experiment,
        reply_to=reply_to,
        task_id=task_id,
        status=QUEUED,
        reason="",
        created_at=utcnow(),
        worker="",
        attempts=0,
        total_steps=total_steps,
        metrics={},
        output_tail="",
        timings={},
        sweep_id=sweep_id,
        holds_slot=holds_slot,
    )
    session.add(launch)
    session.flush()
    return launch


def get(session: Session, *, launch_id: int) -> Launch | None:
    return session.get(Launch, launch_id)


def ended_before_start(session: Session, *, task_id: str) -> bool:
    """The launch of this job was stopped before any worker took it (a sweep's run cancelled while it
    waited for a slot): its job is never sent, so nothing will answer for it."""
    found = session.execute(select(Launch.status, Launch.started_at).where(Launch.task_id == task_id)).first()
    return found is not None and found.status in ENDED and found.started_at is None


def by_run(session: Session, *, ref: str) -> list[Launch]:
    """Launches whose MLflow run id is `ref` or starts with it."""
    query = select(Launch).where(Launch.mlflow_run_id.startswith(ref.lower(), autoescape=True)).limit(5)
    return list(session.scalars(query))


def start(session: Session, *, launch_id: int, worker: str, restart: bool = False) -> int | None:
    """queued -> running (or, to retry a launch whose worker died, running -> running); returns the
    attempt this is (its number fences off a previous attempt's late writes), or None if it had moved on."""
    allowed = (QUEUED, RUNNING) if restart else (QUEUED,)
    row = session.execute(
        update(_L)
        .where(_L.c.id == launch_id, _L.c.status.in_(allowed))
        .values(status=RUNNING, worker=worker, attempts=_L.c.attempts + 1, started_at=utcnow(), step=None, metrics={},
                mlflow_run_id=None, experiment_id=None, output_tail="")
        .returning(_L.c.attempts)
    ).first()
    return int(row[0]) if row is not None else None


def set_run(
    session: Session, *, launch_id: int, run_id: str, experiment_id: str, timings: dict[str, float] | None = None
) -> None:
    values: dict[str, Any] = {"mlflow_run_id": run_id, "experiment_id": experiment_id}
    if timings is not None:
        values["timings"] = timings
    session.execute(update(_L).where(_L.c.id == launch_id).values(**values))


def set_timings(session: Session, *, launch_id: int, timings: dict[str, float]) -> None:
    session.execute(update(_L).where(_L.c.id == launch_id).values(timings=timings))


def progress(
    session: Session, *, launch_id: int, attempt: int, step: int | None, metrics: dict[str, float], output_tail: str
) -> None:
    session.execute(
        update(_L)
        .where(_L.c.id == launch_id, _L.c.status == RUNNING, _L.c.attempts == attempt)
        .values(step=step, metrics=metrics, output_tail=output_tail[-TAIL_CHARS:])
    )


def end(
    session: Session,
    *,
    launch_id: int,
    status: str,
    reason: str = "",
    output_tail: str | None = None,
    step: int | None = None,
    metrics: dict[str, float] | None = None,
    stopped_by: str | None = None,
    attempt: int | None = None,
) -> bool:
    """Move a queued or running launch to an ended state; False if it had already ended (it stays as it was)
    or, with `attempt`, if a later attempt runs it now."""
    assert status in ENDED
    values: dict[str, Any] = {"status": status, "reason": reason[:2000], "ended_at": utcnow()}
    if output_tail is not None:
        values["output_tail"] = output_tail[-TAIL_CHARS:]
    if step is not None:
        values["step"] = step
    if metrics is not None:
        values["metrics"] = metrics
    if stopped_by is not None:
        values["stopped_by"] = stopped_by
    query = update(_L).where(_L.c.id == launch_id, _L.c.status.in_(ACTIVE))
    if attempt is not None:
        query = query.where(_L.c.attempts == attempt)
    return bool(session.execute(query.values(**values)).rowcount)


def record_output(
    session: Session, *, launch_id: int, attempt: int, output_tail: str, step: int | None, metrics: dict[str, float]
) -> None:
    """What an ended launch's process left (kept whoever ended it: a cancel doesn't lose the output)."""
    values: dict[str, Any] = {"output_tail": output_tail[-TAIL_CHARS:]}
    if step is not None:
        values["step"] = step
    if metrics:
        values["metrics"] = metrics
    session.execute(update(_L).where(_L.c.id == launch_id, _L.c.attempts == attempt).values(**values))


def active(session: Session, *, channel: str | None = None) -> list[Launch]:
    query = select(Launch).where(Launch.status.in_(ACTIVE)).order_by(Launch.id)
    if channel is not None:
        query = query.where(Launch.channel == channel)
    return list(session.scalars(query))


def queue_positions(session: Session) -> dict[int, int]:
    """Each launch waiting in the launch queue -> its place (1 = next), oldest first."""
    ids = session.scalars(
        select(Launch.id).where(Launch.status == QUEUED, Launch.holds_slot.is_(True)).order_by(Launch.created_at, Launch.id)
    )
    return {launch_id: n for n, launch_id in enumerate(ids, 1)}


# -- sweeps ----------------------------------------------------------------------------------------


def create_sweep(
    session: Session,
    *,
    user: str,
    channel: str,
    project: str,
    entry_point: str,
    grid: list[Any],
    size: int,
    parallel: int,
    reply_to: dict[str, Any],
    summary_job: str = "",
) -> Sweep:
    sweep = Sweep(
        user=user, channel=channel, project=project, entry_point=entry_point, grid=grid, size=size,
        parallel=parallel, reply_to=reply_to, summary=SUMMARY_PENDING, summary_job=summary_job, created_at=utcnow(),
    )
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(session: Session, *, sweep_id: int) -> Sweep | None:
    return session.get(Sweep, sweep_id)


def members(session: Session, *, sweep_id: int) -> list[Launch]:
    return list(session.scalars(select(Launch).where(Launch.sweep_id == sweep_id).order_by(Launch.id)))


def take_next(session: Session, *, sweep_id: int) -> Launch | None:
    """The sweep's next waiting run, given a slot by whoever calls this first (a conditional UPDATE on
    `holds_slot`: two runs ending at once never hand their slots to the same one)."""
    while True:
        candidate = session.scalar(
            select(func.min(Launch.id)).where(
                Launch.sweep_id == sweep_id, Launch.status == QUEUED, Launch.holds_slot.is_(False)
            )
        )
        if candidate is None:
            return None
        taken = session.execute(
            update(_L).where(_L.c.id == candidate, _L.c.holds_slot.is_(False), _L.c.status == QUEUED).values(holds_slot=True)
        )
        if taken.rowcount:
            return session.get(Launch, candidate)


def release_slot(session: Session, *, launch_id: int) -> bool:
    """An ended sweep run gives its slot back; True for exactly one caller (then hand it to `take_next`)."""
    result = session.execute(
        update(_L).where(_L.c.id == launch_id, _L.c.holds_slot.is_(True), _L.c.status.in_(ENDED)).values(holds_slot=False)
    )
    return bool(result.rowcount)


def set_member_reply_to(session: Session, *, sweep_id: int, reply_to: dict[str, Any]) -> None:
    session.execute(update(_L).where(_L.c.sweep_id == sweep_id).values(reply_to=reply_to))


def claim_summary(session: Session, *, sweep_id: int) -> bool:
    """True for exactly one caller, once every run of the sweep has ended. Call it in a transaction of its
    own, after the run's end was committed (so two runs ending at once can't each miss the other)."""
    running = exists().where(and_(_L.c.sweep_id == sweep_id, _L.c.status.in_(ACTIVE)))
    result = session.execute(
        update(_S)
        .where(_S.c.id == sweep_id, _S.c.summary == SUMMARY_PENDING, ~running)
        .values(summary=SUMMARY_DUE, ended_at=utcnow())
    )
    return bool(result.rowcount)
