"""The audit trail: one row per command, allowed or refused, with its outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow

OUTCOMES = ("ok", "queued", "running", "user_error", "refused", "error", "duplicate", "undelivered")
TEXT_CAP = 4000


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(16))
    verb: Mapped[str] = mapped_column(String(32), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(16))
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    error_id: Mapped[str | None] = mapped_column(String(16), default=None, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None, index=True)
    actor: Mapped[str | None] = mapped_column(String(64), default=None)
    """Who really typed the command when it ran as somebody else (the terminal's `--user`)."""


def record(
    session: Session,
    *,
    user: str,
    channel: str,
    source: str,
    verb: str,
    text: str,
    outcome: str,
    duration_ms: float,
    error_id: str | None = None,
    detail: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
) -> int:
    """Insert the row and return its id (a Core insert: this runs on every command's ack path)."""
    values = {
        "at": utcnow(),
        "user": user,
        "channel": channel,
        "source": source,
        "verb": verb,
        "text": printable(text)[:TEXT_CAP],
        "outcome": outcome,
        "duration_ms": duration_ms,
        "error_id": error_id,
        "detail": detail or {},
        "idempotency_key": idempotency_key,
        "actor": actor,
    }
    return int(session.execute(insert(_TABLE).returning(_TABLE.c.id), values).scalar_one())


def printable(text: str) -> str:
    """PostgreSQL refuses NUL in text: the audit keeps what was typed, with NUL shown as U+FFFD."""
    return text.replace("\x00", "\ufffd")


def set_outcome(
    session: Session,
    *,
    event_id: int,
    outcome: str,
    error_id: str | None = None,
    duration_ms: float | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """A job finished: the command's row gets its final outcome."""
    values: dict[str, object] = {"outcome": outcome}
    if detail:
        values["detail"] = detail
    if error_id:
        values["error_id"] = error_id
    if duration_ms is not None:
        values["duration_ms"] = duration_ms
    session.execute(update(_TABLE).where(_TABLE.c.id == event_id).values(**values))


_TABLE = AuditEvent.__table__


def by_idempotency_key(session: Session, *, key: str) -> tuple[int, str] | None:
    """(id, outcome) of the command that claimed this key, if its row says so."""
    row = session.execute(
        select(_TABLE.c.id, _TABLE.c.outcome).where(_TABLE.c.idempotency_key == key).order_by(_TABLE.c.id).limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row else None


def latest(session: Session, *, limit: int = 20) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)))
