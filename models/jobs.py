"""The job ledger: one row per background job, keyed by its Celery task id.

It is what makes jobs run once and end: a redelivered message (acks_late), a retry and the
reaper's re-send all carry the same task id, and only the execution that *claims* the row runs.
A command that must enqueue after its own commit writes its job here as `queued` in the same
transaction (the outbox); the reaper sends what was never sent, re-sends what a dead worker left
`running` (its heartbeat stopped), and fails what keeps dying.

States: queued -> running -> (retrying -> running)* -> done | failed | undelivered. A job undelivered
because Slack kept refusing for a while (not for good) keeps a `retry_at`: the reaper queues it again
then (`redeliver`), and it delivers the answer it stored, for up to `LATE_FOR` after its command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Dialect, Index, Integer, String, Text, TypeDecorator, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow

QUEUED, RUNNING, RETRYING = "queued", "running", "retrying"
DONE, FAILED, UNDELIVERED = "done", "failed", "undelivered"
ENDED = (DONE, FAILED, UNDELIVERED)
STALE = timedelta(seconds=20)
"""A running job whose heartbeat is older than this belongs to a dead (or frozen) worker (callers
pass the configured value; this is the default)."""
UNSENT_GRACE = timedelta(seconds=10)
"""An outbox row not marked sent after this long: its command's process could not enqueue it."""
LOST_GRACE = timedelta(minutes=15)
"""A job sent but never started after this long: its message was lost (e.g. a broker restart)."""
RETRY_GRACE = timedelta(seconds=60)
"""A retry that hasn't come back this long after its time: its worker held it (an ETA) and died."""
MAX_RESCUES = 3
LATE_FOR = timedelta(days=1)
"""How long after its command a reply Slack kept refusing (429, 5xx, timeouts) is still tried again:
an `undelivered` job with a `retry_at` is re-sent by the reaper at that time, within this window."""


class BrokerJSON(TypeDecorator[Any]):
    """JSON as the broker carries a job's arguments (kombu's encoding: datetimes survive the round trip)."""

    impl = Text
    cache_ok = True

    # kombu is imported on first use: a command that stores no job shouldn't pay for it at start-up.
    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        from kombu.utils.json import dumps

        return None if value is None else dumps(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        from kombu.utils.json import loads

        return None if value is None else loads(value)


class JobRecord(Base):
    __tablename__ = "jobs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(128))
    kwargs: Mapped[dict[str, Any]] = mapped_column(BrokerJSON, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Executions started (a delivery retry is one too)."""
    rescues: Mapped[int] = mapped_column(Integer, default=0)
    """Times the reaper handed the job on because its worker died."""
    worker: Mapped[str] = mapped_column(String(128), default="")
    audit_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    replies: Mapped[str | None] = mapped_column(Text, default=None)
    """The job's answer (kombu JSON), kept once computed so a retried delivery doesn't redo the work."""

    __table_args__ = (Index("ix_jobs_state_heartbeat", "state", "heartbeat_at"),)


_T = JobRecord.__table__


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to start a job: `owned` (run it), `ended` (already answered: skip), or
    `busy` (another live execution has it: look again later)."""

    status: str
    attempt: int = 0
    state: str = ""
    audit_id: int | None = None


def add_queued(session: Session, *, key: str, task: str, kwargs: dict[str, Any], audit_id: int | None) -> None:
    """The outbox row: written in the same transaction as the command that needs the job."""
    session.execute(
        insert(_T),
        {"key": key, "task": task, "kwargs": kwargs, "state": QUEUED, "attempts": 0, "rescues": 0, "worker": "",
         "audit_id": audit_id, "created_at": utcnow(), "error": ""},
    )


def mark_sent(session: Session, *, keys: list[str]) -> None:
    session.execute(update(_T).where(_T.c.key.in_(keys), _T.c.state == QUEUED).values(enqueued_at=utcnow()))


def claim(
    session: Session,
    *,
    key: str,
    task: str,
    kwargs: dict[str, Any],
    worker: str,
    audit_id: int | None = None,
    stale: timedelta = STALE,
    retry: bool = False,
) -> Claim:
    """Start the job if nobody else runs it. One conditional UPDATE (or INSERT for a job that has
    no row yet), so two executions racing for one job can't both win.

    `retry`: this execution is the job's own Celery retry. Only an execution that is ending sends
    one, so a row still `running` (its last execution couldn't record more: the database was down)
    is this job's to take over."""
    now = utcnow()
    running = _T.c.state == RUNNING
    owned = session.execute(
        update(_T)
        .where(
            _T.c.key == key,
            or_(
                _T.c.state.in_((QUEUED, RETRYING)),
                and_(running, _T.c.heartbeat_at < now - stale),
                and_(running, retry),
            ),
        )
        .values(state=RUNNING, attempts=_T.c.attempts + 1, worker=worker, heartbeat_at=now, retry_at=None)
        .returning(_T.c.attempts, _T.c.audit_id)
    ).first()
    if owned is not None:
        return Claim("owned", int(owned[0]), RUNNING, owned[1])
    try:
        with session.begin_nested():
            session.execute(
                insert(_T),
                {"key": key, "task": task, "kwargs": kwargs, "state": RUNNING, "attempts": 1, "rescues": 0, "worker": worker,
                 "audit_id": audit_id, "created_at": now, "enqueued_at": now, "heartbeat_at": now, "error": ""},
            )
        return Claim("owned", 1, RUNNING, audit_id)
    except IntegrityError:
        pass
    row = session.execute(select(_T.c.state, _T.c.audit_id).where(_T.c.key == key)).first()
    state = str(row[0]) if row else ""
    return Claim("ended" if state in ENDED else "busy", 0, state, row[1] if row else None)


def set_audit(session: Session, *, key: str, audit_id: int) -> None:
    session.execute(update(_T).where(_T.c.key == key).values(audit_id=audit_id))


def heartbeat(session: Session, *, keys: list[str]) -> None:
    if keys:
        session.execute(update(_T).where(_T.c.key.in_(keys), _T.c.state == RUNNING).values(heartbeat_at=utcnow()))


def set_retrying(session: Session, *, key: str, retry_at: datetime, error: str) -> None:
    session.execute(update(_T).where(_T.c.key == key).values(state=RETRYING, retry_at=retry_at, error=error[:2000]))


def save_replies(session: Session, *, key: str, replies: str) -> None:
    session.execute(update(_T).where(_T.c.key == key).values(replies=replies))


def finish(
    session: Session, *, key: str, state: str, error: str = "", attempt: int | None = None,
    retry_at: datetime | None = None,
) -> bool:
    """End the job; False when it is no longer this execution's to end: it already ended, or (given
    `attempt`) a later execution took it over while this one was frozen. `retry_at`: an undelivered
    job's next try (see `redeliver`)."""
    query = update(_T).where(_T.c.key == key, _T.c.state.not_in(ENDED))
    if attempt is not None:
        query = query.where(_T.c.attempts == attempt)
    result = session.execute(
        query.values(state=state, finished_at=utcnow(), error=error[:2000], heartbeat_at=None, retry_at=retry_at)
    )
    return bool(result.rowcount)


def get(session: Session, *, key: str) -> JobRecord | None:
    return session.get(JobRecord, key)


def orphans(
    session: Session, *, now: datetime | None = None, stale: timedelta = STALE, limit: int = 100
) -> list[JobRecord]:
    """Jobs nobody will finish on their own: never sent, lost, left running by a dead worker, or a
    retry that never came back."""
    now = now or utcnow()
    query = (
        select(JobRecord)
        .where(
            or_(
                and_(JobRecord.state == QUEUED, JobRecord.enqueued_at.is_(None), JobRecord.created_at < now - UNSENT_GRACE),
                and_(JobRecord.state == QUEUED, JobRecord.enqueued_at < now - LOST_GRACE),
                and_(JobRecord.state == RUNNING, JobRecord.heartbeat_at < now - stale),
                and_(JobRecord.state == RETRYING, JobRecord.retry_at < now - RETRY_GRACE),
                and_(JobRecord.state == UNDELIVERED, JobRecord.retry_at < now, JobRecord.created_at > now - LATE_FOR),
            )
        )
        .order_by(JobRecord.created_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def requeue(session: Session, *, job: JobRecord) -> bool:
    """Hand an orphan back to the queue (as not yet sent: `mark_sent` once it is); False if its
    state moved meanwhile (another reaper, or the job itself woke up)."""
    result = session.execute(
        update(_T)
        .where(_T.c.key == job.key, _T.c.state == job.state, _T.c.attempts == job.attempts)
        .values(state=QUEUED, enqueued_at=None, heartbeat_at=None, rescues=_T.c.rescues + 1)
    )
    return bool(result.rowcount)


def redeliver(session: Session, *, job: JobRecord) -> bool:
    """Queue an undelivered job again at its `retry_at` (as not yet sent: `mark_sent` once it is). Not a
    rescue: its worker didn't die, Slack refused. False if another reaper took it first."""
    result = session.execute(
        update(_T)
        .where(_T.c.key == job.key, _T.c.state == UNDELIVERED, _T.c.attempts == job.attempts)
        .values(state=QUEUED, enqueued_at=None, retry_at=None, finished_at=None)
    )
    return bool(result.rowcount)


def give_up(session: Session, *, job: JobRecord, error: str) -> bool:
    result = session.execute(
        update(_T)
        .where(_T.c.key == job.key, _T.c.state == job.state, _T.c.attempts == job.attempts)
        .values(state=FAILED, finished_at=utcnow(), error=error[:2000], heartbeat_at=None)
    )
    return bool(result.rowcount)
