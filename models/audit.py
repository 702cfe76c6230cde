"""The audit trail: one row per command, allowed or refused, with its outcome."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Integer, Row, String, Table, Text, insert, select, update
from sqlalchemy.orm import Session

from models.base import Base, utcnow

OUTCOMES = ("ok", "queued", "running", "user_error", "refused", "error", "duplicate", "undelivered")
TEXT_CAP = 4000
ID_CAP = 64
"""The user and channel columns' size: an id longer than Slack's is cut, never the row lost."""


AUDIT_EVENTS = Table(
    "audit_events",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, default=utcnow, index=True),
    Column("user", String(64), nullable=False, index=True),
    Column("channel", String(64), nullable=False, default=""),
    Column("source", String(16), nullable=False),
    Column("verb", String(32), nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("outcome", String(16), nullable=False),
    Column("duration_ms", Float, nullable=False, default=0.0),
    Column("error_id", String(16), index=True),
    Column("detail", JSON, nullable=False, default=dict),
    Column("idempotency_key", String(200), index=True),
    # Who really typed the command when it ran as somebody else (the terminal's `--user`).
    Column("actor", String(64)),
)
"""A Core table, not an ORM class: every write is a Core insert or update on the ack path, and
mapping a class cost each process that imports it (the Slack app's start) about 3 ms for nothing."""

AuditRow = Row[Any]
"""A row of the table: its columns are attributes (`row.outcome`)."""


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
        "user": printable(user)[:ID_CAP],
        "channel": printable(channel)[:ID_CAP],
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
    return int(session.execute(insert(AUDIT_EVENTS).returning(AUDIT_EVENTS.c.id), values).scalar_one())


def printable(text: str) -> str:
    """What was typed, storable: PostgreSQL refuses NUL, and no database takes the lone surrogates
    that stand for bytes that weren't UTF-8; each is kept as U+FFFD."""
    text = text.replace("\x00", "\ufffd")
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text


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
    session.execute(update(AUDIT_EVENTS).where(AUDIT_EVENTS.c.id == event_id).values(**values))



def by_idempotency_key(session: Session, *, key: str) -> tuple[int, str] | None:
    """(id, outcome) of the command that claimed this key, if its row says so."""
    row = session.execute(
        select(AUDIT_EVENTS.c.id, AUDIT_EVENTS.c.outcome).where(AUDIT_EVENTS.c.idempotency_key == key).order_by(AUDIT_EVENTS.c.id).limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row else None


def latest(session: Session, *, limit: int = 20) -> list[AuditRow]:
    """The newest rows first."""
    return list(session.execute(select(AUDIT_EVENTS).order_by(AUDIT_EVENTS.c.id.desc()).limit(limit)))


def get(session: Session, *, event_id: int) -> AuditRow | None:
    return session.execute(select(AUDIT_EVENTS).where(AUDIT_EVENTS.c.id == event_id)).first()
