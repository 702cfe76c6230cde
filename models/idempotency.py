"""Keys of requests already handled, so a Slack retry produces no second answer or job."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import DateTime, String, delete, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


def claim(session: Session, *, key: str) -> None:
    """Insert the key; a duplicate fails with IntegrityError (Conflict from session_scope)."""
    session.execute(insert(IdempotencyKey.__table__), {"key": key, "created_at": utcnow()})


def claimed(session: Session, *, key: str) -> bool:
    return session.get(IdempotencyKey, key) is not None


def prune(session: Session, *, older_than: timedelta = timedelta(days=2)) -> int:
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - older_than))
    return int(result.rowcount or 0)
