"""Run watch and the daily digest in the knowledge base.

- `Watch`: an experiment watched in a channel (one row per store, experiment and channel).
- `WatchNotice`: one row per (watch, run, change): written *before* its message is delivered, so the
  same change is never announced twice (a unique key, whoever inserts first wins). Rows announced
  together share a `message_key`: one notice per run, or one grouped message for a burst.
- `Digest`: one row per (channel, local day): the digest job inserts it before posting, so two
  beat processes (or two `digest --now` at once) post one digest.
- `Alert`: one row per thing an admin is told once (a digest channel the bot is not in).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow

ENDED = "ended"
BEST = "best"
PENDING, DELIVERED, UNDELIVERED = "pending", "delivered", "undelivered"
QUIET = "quiet"
"""A digest of a day with nothing to say, not posted (`quiet = "none"`)."""


class Watch(Base):
    __tablename__ = "watches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store: Mapped[str] = mapped_column(String(16))
    experiment_id: Mapped[str] = mapped_column(String(32))
    experiment: Mapped[str] = mapped_column(String(500))
    channel: Mapped[str] = mapped_column(String(64))
    reply_to: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Where its notices go (a channel, or a terminal session)."""
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    since_ms: Mapped[int] = mapped_column(BigInteger)
    """Runs that ended before this (ms) are not announced: the watch started then, or the last poll did."""
    polled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Polls in a row that could not read MLflow (logged; reset by the next good poll)."""

    __table_args__ = (UniqueConstraint("store", "experiment_id", "channel"),)


class WatchNotice(Base):
    __tablename__ = "watch_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    watch_id: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(32))
    change: Mapped[str] = mapped_column(String(16))
    """The run's new status (FINISHED, FAILED, KILLED) or `best`."""
    message_key: Mapped[str] = mapped_column(String(120), index=True)
    state: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the notice says about the run, as read when it was noticed."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("watch_id", "run_id", "change"),)


class Digest(Base):
    __tablename__ = "digests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    day: Mapped[str] = mapped_column(String(10))
    """The channel's local date the digest covers the day before (YYYY-MM-DD)."""
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    outcome: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    covered_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    """The end of the window the digest covered (set when it is made; counts once it is delivered or quiet)."""

    __table_args__ = (UniqueConstraint("channel", "day"),)


class Alert(Base):
    __tablename__ = "admin_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- watches ---------------------------------------------------------------------------------


def add(
    session: Session, *, store: str, experiment_id: str, experiment: str, channel: str, reply_to: dict[str, Any],
    user: str, since_ms: int,
) -> tuple[Watch, bool]:
    """The watch of this experiment in this channel, and whether it is new (a second `watch` keeps the first)."""
    found = get(session, store=store, experiment_id=experiment_id, channel=channel)
    if found is not None:
        return found, False
    watch = Watch(store=store, experiment_id=experiment_id, experiment=experiment, channel=channel, reply_to=reply_to,
                  created_by=user, since_ms=since_ms)  # fmt: skip
    try:
        with session.begin_nested():
            session.add(watch)
            session.flush()
    except IntegrityError:
        found = get(session, store=store, experiment_id=experiment_id, channel=channel)
        assert found is not None
        return found, False
    return watch, True


def get(session: Session, *, store: str, experiment_id: str, channel: str) -> Watch | None:
    return session.scalar(
        select(Watch).where(Watch.store == store, Watch.experiment_id == experiment_id, Watch.channel == channel)
    )


def in_channel(session: Session, *, channel: str) -> list[Watch]:
    return in_channels(session, channels=(channel,))


def in_channels(session: Session, *, channels: tuple[str, ...]) -> list[Watch]:
    """One channel's watches under each of its names (its id, and `#name` for one set up by name)."""
    return list(session.scalars(select(Watch).where(Watch.channel.in_(channels)).order_by(Watch.experiment, Watch.id)))


def all_watches(session: Session, *, store: str | None = None) -> list[Watch]:
    query = select(Watch).order_by(Watch.id)
    if store is not None:
        query = query.where(Watch.store == store)
    return list(session.scalars(query))


def remove(session: Session, *, watch_id: int) -> None:
    session.execute(delete(WatchNotice).where(WatchNotice.watch_id == watch_id))
    session.execute(delete(Watch).where(Watch.id == watch_id))


def polled(session: Session, *, watch_id: int, since_ms: int, now: datetime) -> None:
    """A good poll: later polls look from `since_ms` (never backwards), failures reset."""
    session.execute(
        update(Watch)
        .where(Watch.id == watch_id)
        .values(since_ms=func.max(Watch.since_ms, since_ms) if _sqlite(session) else func.greatest(Watch.since_ms, since_ms),
                polled_at=now, failures=0)
        .execution_options(synchronize_session=False)
    )  # fmt: skip


def poll_failed(session: Session, *, watch_id: int) -> int:
    session.execute(
        update(Watch).where(Watch.id == watch_id).values(failures=Watch.failures + 1)
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    return int(session.scalar(select(Watch.failures).where(Watch.id == watch_id)) or 0)


def _sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


# --- notices ---------------------------------------------------------------------------------


def claim_notices(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert notices whose (watch, run, change) is new; rows another poll inserted first are left
    as they are (theirs is the message that announces them). Returns how many were new."""
    if not rows:
        return 0
    if _sqlite(session):
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    now = utcnow()
    values = [{"state": PENDING, "created_at": now, **row} for row in rows]
    result = session.execute(
        insert(WatchNotice).values(values).on_conflict_do_nothing(index_elements=["watch_id", "run_id", "change"])
    )
    return int(result.rowcount or 0)


def pending(session: Session, *, watch_id: int | None = None, limit: int = 500) -> list[WatchNotice]:
    query = select(WatchNotice).where(WatchNotice.state == PENDING).order_by(WatchNotice.id).limit(limit)
    if watch_id is not None:
        query = query.where(WatchNotice.watch_id == watch_id)
    return list(session.scalars(query))


def by_message(session: Session, *, message_key: str) -> list[WatchNotice]:
    return list(session.scalars(select(WatchNotice).where(WatchNotice.message_key == message_key).order_by(WatchNotice.id)))


def mark_delivered(session: Session, *, message_keys: list[str], state: str = DELIVERED) -> None:
    if message_keys:
        session.execute(
            update(WatchNotice).where(WatchNotice.message_key.in_(message_keys)).values(state=state)
            .execution_options(synchronize_session=False)
        )  # fmt: skip


def bests_since(session: Session, *, since: datetime) -> list[WatchNotice]:
    return list(
        session.scalars(
            select(WatchNotice).where(WatchNotice.change == BEST, WatchNotice.created_at >= since).order_by(WatchNotice.id)
        )
    )


# --- digests and alerts ----------------------------------------------------------------------


def claim_digest(session: Session, *, channel: str, day: str) -> bool:
    """True for the one caller that may post this channel's digest of `day` (a unique row)."""
    try:
        with session.begin_nested():
            session.add(Digest(channel=channel, day=day))
            session.flush()
    except IntegrityError:
        return False
    return True


def release_digest(session: Session, *, channel: str, day: str) -> None:
    """Give up a claim whose post didn't reach Slack, so a later try (a re-run, or beat at its time) makes it."""
    session.execute(
        delete(Digest).where(Digest.channel == channel, Digest.day == day, Digest.state.in_((PENDING, UNDELIVERED)))
        .execution_options(synchronize_session=False)
    )  # fmt: skip


def digest_done(session: Session, *, channel: str, day: str, state: str, outcome: str = "") -> None:
    session.execute(
        update(Digest).where(Digest.channel == channel, Digest.day == day).values(state=state, outcome=outcome[:2000])
        .execution_options(synchronize_session=False)
    )  # fmt: skip


def digest_of(session: Session, *, channel: str, day: str) -> Digest | None:
    return session.scalar(select(Digest).where(Digest.channel == channel, Digest.day == day))


def set_covered(session: Session, *, channel: str, day: str, until: datetime) -> None:
    session.execute(
        update(Digest).where(Digest.channel == channel, Digest.day == day).values(covered_until=until)
        .execution_options(synchronize_session=False)
    )  # fmt: skip


def last_covered(session: Session, *, channel: str, before_day: str) -> datetime | None:
    """Where the channel's last digest that reached it (posted, or a quiet day) before `before_day` ended."""
    return session.scalar(
        select(func.max(Digest.covered_until)).where(
            Digest.channel == channel, Digest.day < before_day, Digest.state.in_((DELIVERED, QUIET))
        )
    )


def alert_once(session: Session, *, key: str) -> bool:
    """True the first time `key` is raised: the caller tells an admin; later calls say nothing."""
    try:
        with session.begin_nested():
            session.add(Alert(key=key[:200]))
            session.flush()
    except IntegrityError:
        return False
    return True


def prune_polls(session: Session, *, task: str, before: datetime) -> int:
    """The job ledger's rows of ended watch polls older than `before` (a beat job leaves one a minute)."""
    from models.jobs import ENDED, JobRecord

    result = session.execute(
        delete(JobRecord).where(JobRecord.task == task, JobRecord.state.in_(ENDED), JobRecord.created_at < before)
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    return int(result.rowcount or 0)
