"""What was posted to Slack, under a key: the delivery ledger.

A reply is posted at most once per key, and a message that changes (a card) is edited under the
same key. The row says `posting` from just before the Web API call until Slack answered with the
message's ts, so a job that was killed in between knows it must look in the channel (by the
message metadata carrying the key) before posting again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow

POSTING, POSTED, UNDELIVERED = "posting", "posted", "undelivered"
IN_FLIGHT = "in_flight"
"""detail flag: False once a post attempt has failed (nobody is posting it now), until the next attempt."""
POSTER = "by"
"""detail: the job posting the message (a redelivery of that job takes over; another job waits for it)."""
FINAL = "final"
"""detail flag: the message shows its final state; intermediate ones delivered late are not applied."""


class DeliveryRecord(Base):
    __tablename__ = "deliveries"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), default="")
    thread_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    ts: Mapped[str | None] = mapped_column(String(32), default=None)
    state: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), default="")
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


_T = DeliveryRecord.__table__


def get(session: Session, *, key: str) -> DeliveryRecord | None:
    return session.get(DeliveryRecord, key)


def start(
    session: Session, *, key: str, channel: str, thread_ts: str | None, digest: str, by: str | None = None
) -> bool:
    """Record that a post is about to be made (by which job); False if the key already has a row."""
    now = utcnow()
    try:
        with session.begin_nested():
            session.execute(
                insert(_T),
                {"key": key, "channel": channel, "thread_ts": thread_ts, "state": POSTING, "digest": digest,
                 "files_done": 0, "error": "", "created_at": now, "updated_at": now,
                 "detail": {POSTER: by} if by else {}},
            )
        return True
    except IntegrityError:
        return False


def posted(
    session: Session, *, key: str, ts: str | None, digest: str, detail: dict[str, Any] | None = None,
    channel: str | None = None,
) -> None:
    values: dict[str, Any] = {"state": POSTED, "ts": ts, "digest": digest, "updated_at": utcnow(), "error": ""}
    if channel:
        values["channel"] = channel
    if detail is not None:
        values["detail"] = detail
    session.execute(update(_T).where(_T.c.key == key).values(**values))


def edited(session: Session, *, key: str, digest: str) -> None:
    session.execute(update(_T).where(_T.c.key == key).values(digest=digest, updated_at=utcnow()))


def not_in_flight(session: Session, *, key: str, value: bool = False) -> None:
    """A post attempt failed: nobody is posting the message now (`value=True`: an attempt starts again)."""
    record = session.get(DeliveryRecord, key)
    if record is not None:
        session.execute(update(_T).where(_T.c.key == key).values(detail={**(record.detail or {}), IN_FLIGHT: value}))


def mark_final(session: Session, *, key: str) -> None:
    """The message shows its final state: intermediate ones delivered late are not applied any more."""
    record = session.get(DeliveryRecord, key)
    if record is not None and not (record.detail or {}).get(FINAL):
        session.execute(update(_T).where(_T.c.key == key).values(detail={**(record.detail or {}), FINAL: True}))


def files_done(session: Session, *, key: str, count: int) -> None:
    session.execute(update(_T).where(_T.c.key == key).values(files_done=count))


def failed(session: Session, *, key: str, error: str) -> None:
    session.execute(update(_T).where(_T.c.key == key).values(state=UNDELIVERED, error=error[:2000], updated_at=utcnow()))


def of_job(session: Session, *, prefix: str) -> list[DeliveryRecord]:
    return list(session.scalars(select(DeliveryRecord).where(DeliveryRecord.key.startswith(prefix, autoescape=True))))
