"""Decisions the team logged, their tags and their links to MLflow, and full-text search over them.

No `from __future__ import annotations` here: with it, SQLAlchemy evaluates every `Mapped[...]`
annotation from its string at class creation, a few milliseconds of each Slack process's start.
"""

from datetime import UTC, datetime
from typing import Any

from msgspec import Struct
from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, selectinload

from models.base import Base, utcnow
from models.errors import AlreadySuperseded, NotFound

LINK_KINDS = ("run", "experiment", "model")


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    permalink: Mapped[str | None] = mapped_column(Text, default=None)
    source_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    superseded_by: Mapped[int | None] = mapped_column(
        ForeignKey("decisions.id", ondelete="SET NULL"), default=None, index=True
    )
    tags: Mapped[list["DecisionTag"]] = relationship(
        back_populates="decision", cascade="all, delete-orphan", lazy="selectin", order_by="DecisionTag.tag"
    )
    links: Mapped[list["DecisionLink"]] = relationship(
        back_populates="decision", cascade="all, delete-orphan", lazy="selectin", order_by="DecisionLink.id"
    )

    __table_args__ = (Index("uq_decisions_source", "channel", "source_ts", unique=True),)

    @property
    def tag_names(self) -> list[str]:
        return [t.tag for t in self.tags]


class DecisionTag(Base):
    __tablename__ = "decision_tags"

    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision: Mapped[Decision] = relationship(back_populates="tags")

    __table_args__ = (Index("ix_decision_tags_tag", "tag", "decision_id"),)


class DecisionLink(Base):
    """A decision's reference to an MLflow run, experiment or registered model version.

    `status` is `pending` until the link job checks it, then `ok` or `missing`; `detail`
    holds what the job learned (the run's experiment and headline metrics).
    """

    __tablename__ = "decision_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(256), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decision: Mapped[Decision] = relationship(back_populates="links")


class LinkRef(Struct, frozen=True):
    kind: str
    ref: str


class NewDecision(Struct, frozen=True):
    text: str
    author: str
    channel: str = ""
    tags: tuple[str, ...] = ()
    links: tuple[LinkRef, ...] = ()
    permalink: str | None = None
    source_ts: str | None = None
    created_at: datetime | None = None
    extra: dict[str, Any] = {}


def _utc(value: datetime) -> datetime:
    """SQLite keeps the wall-clock text of a datetime: store UTC so times compare across zones."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def create(session: Session, *, new: NewDecision) -> Decision:
    """Add a decision with its tags and links; flushed so it has an id."""
    decision = Decision(
        text=new.text,
        author=new.author,
        channel=new.channel,
        permalink=new.permalink,
        source_ts=new.source_ts,
        created_at=_utc(new.created_at or utcnow()),
    )
    decision.tags = [DecisionTag(tag=t) for t in dict.fromkeys(new.tags)]
    decision.links = [DecisionLink(kind=link.kind, ref=link.ref) for link in dict.fromkeys(new.links)]
    session.add(decision)
    session.flush()
    return decision


def get(session: Session, *, decision_id: int) -> Decision:
    """The decision with that id, or NotFound."""
    decision = session.get(Decision, decision_id)
    if decision is None:
        raise NotFound(f"decision #{decision_id}")
    return decision


def get_many(session: Session, *, ids: list[int]) -> list[Decision]:
    if not ids:
        return []
    rows = session.scalars(
        select(Decision).where(Decision.id.in_(ids)).options(selectinload(Decision.tags))
    ).all()
    by_id = {d.id: d for d in rows}
    return [by_id[i] for i in ids if i in by_id]


def supersede(session: Session, *, old_id: int, new: NewDecision) -> tuple[Decision, Decision]:
    """Record `new` as the replacement of decision `old_id`; returns (old, new).

    The replacement claims the old decision with a conditional UPDATE, so of two supersedes racing
    for one decision exactly one wins; the other raises AlreadySuperseded (roll back its insert)."""
    old = get(session, decision_id=old_id)
    replacement = create(session, new=new)
    claimed = session.execute(
        update(Decision)
        .where(Decision.id == old_id, Decision.superseded_by.is_(None))
        .values(superseded_by=replacement.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        winner = session.scalar(select(Decision.superseded_by).where(Decision.id == old_id))
        raise AlreadySuperseded(old_id, winner)
    session.refresh(old)
    return old, replacement


def create_from_source(session: Session, *, new: NewDecision) -> tuple[Decision, bool]:
    """The decision logged from a Slack message: (decision, True) when this call created it, or the
    one already logged from that message and False. The database's unique (channel, source_ts)
    decides when several people log the same message at once."""
    assert new.source_ts, "a logged message has a source ts"
    existing = find_by_source(session, channel=new.channel, source_ts=new.source_ts)
    if existing is not None:
        return existing, False
    try:
        with session.begin_nested():
            return create(session, new=new), True
    except IntegrityError:
        pass
    existing = find_by_source(session, channel=new.channel, source_ts=new.source_ts)
    if existing is None:
        raise
    return existing, False


def find_by_source(session: Session, *, channel: str, source_ts: str) -> Decision | None:
    """The decision logged from that Slack message, if any (reactions and shortcuts don't log twice)."""
    return session.scalars(
        select(Decision).where(Decision.channel == channel, Decision.source_ts == source_ts).limit(1)
    ).first()


def set_permalink(session: Session, *, channel: str, source_ts: str, permalink: str) -> None:
    """The message's permalink, looked up after the decision was stored; never replaces one already set."""
    session.execute(
        update(Decision)
        .where(Decision.channel == channel, Decision.source_ts == source_ts, Decision.permalink.is_(None))
        .values(permalink=permalink)
        .execution_options(synchronize_session=False)
    )


def linked_to(session: Session, *, kind: str, refs: list[str]) -> dict[str, list[Decision]]:
    """Decisions linked to each of these refs (e.g. run ids), newest first."""
    if not refs:
        return {}
    rows = session.execute(
        select(DecisionLink.ref, Decision)
        .join(Decision, Decision.id == DecisionLink.decision_id)
        .where(DecisionLink.kind == kind, DecisionLink.ref.in_(refs))
        .order_by(Decision.created_at.desc())
    ).all()
    found: dict[str, list[Decision]] = {}
    for ref, decision in rows:
        found.setdefault(ref, []).append(decision)
    return found


def set_link_result(
    session: Session, *, link_id: int, status: str, detail: dict[str, Any], ref: str | None = None
) -> None:
    """Record the link check; `ref` replaces what was typed (a run prefix or name) by the full id."""
    link = session.get(DecisionLink, link_id)
    if link is None:
        raise NotFound(f"decision link {link_id}")
    link.status = status
    link.detail = {**detail, "typed": link.ref} if ref and ref != link.ref else detail
    if ref:
        link.ref = ref
