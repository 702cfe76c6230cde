"""Clean-up proposals: one per owner and experiment, the stale runs it lists, and what became of each.

A proposal is written with its runs (`pending`) before its message is posted, so the message is
rendered from here by whichever worker delivers it. Every answer is one conditional UPDATE from the
state it expects (`pending` -> `deleting`, `deleted` -> `restoring`, …) whose row count says who won:
a button clicked twice, or two people clicking at once, moves each run once and deletes it once.

Run states: pending -> deleting -> deleted -> purged (after the grace period) | restoring -> restored;
pending -> kept | snoozed | skipped (it changed since it was proposed, or MLflow no longer has it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow

OPEN, CLOSED = "open", "closed"
PENDING, DELETING, DELETED, PURGED = "pending", "deleting", "deleted", "purged"
RESTORING, RESTORED, KEPT, SNOOZED, SKIPPED = "restoring", "restored", "kept", "snoozed", "skipped"
REPROPOSED = "reproposed"
"""A snoozed run proposed again once its snooze ended: the newer proposal holds it now (`reproposed_in`)."""
REPROPOSED_NOTE = "proposed again in "
ANSWERED = (DELETED, PURGED, RESTORED, KEPT, SNOOZED, SKIPPED, RESTORING, REPROPOSED)
BUSY = (PENDING, DELETING)
"""A run in one of these states is in a proposal now: a scan doesn't propose it again."""


class Proposal(Base):
    __tablename__ = "cleanup_proposals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store: Mapped[str] = mapped_column(String(16))
    experiment_id: Mapped[str] = mapped_column(String(32))
    experiment: Mapped[str] = mapped_column(String(500))
    owner: Mapped[str] = mapped_column(String(256))
    """The runs' MLflow user."""
    recipient: Mapped[str] = mapped_column(String(64), default="")
    """The Slack user it is for (may answer it), when known."""
    reply_to: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OPEN)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    job_key: Mapped[str] = mapped_column(String(64), default="")
    """The scan job that made it: a redelivered scan answers with the proposals it already made."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_cleanup_proposals_status", "status", "recipient"),
        Index("ix_cleanup_proposals_job_key", "job_key"),
    )

    @property
    def label(self) -> str:
        return f"P{self.id}"


class Candidate(Base):
    __tablename__ = "cleanup_candidates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("cleanup_proposals.id", ondelete="CASCADE"))
    store: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str] = mapped_column(String(32))
    run_name: Mapped[str] = mapped_column(String(256), default="")
    rule: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    fingerprint: Mapped[str] = mapped_column(String(200), default="")
    """The run as it was when proposed (status, end, newest metric): a run that changed since is skipped."""
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    note: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str | None] = mapped_column(String(64), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    snoozed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    __table_args__ = (
        Index("ix_cleanup_candidates_proposal", "proposal_id"),
        Index("ix_cleanup_candidates_run", "store", "run_id", "state"),
        Index("uq_cleanup_candidates_proposal_run", "proposal_id", "run_id", unique=True),
        # One open proposal per run, whatever scans race: the database refuses the second. That is a
        # partial unique index (`state IN ('pending', 'deleting')`) that migration 0008 alone creates:
        # declaring it here needs `postgresql_where`, which makes every process that imports this
        # module load SQLAlchemy's PostgreSQL dialect (~25 ms), on SQLite too.
    )


class Activity(Base):
    """What a RUNNING run looked like when a scan last saw it: its parameters and tags (a digest), and since
    when they have been so. MLflow keeps no time for a parameter or tag, so a change is dated when a scan
    first sees it; an orphan is a run silent in metrics, parameters and tags alike."""

    __tablename__ = "cleanup_activity"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    since_ms: Mapped[int] = mapped_column(BigInteger)


_C = Candidate.__table__
_P = Proposal.__table__


def create(
    session: Session,
    *,
    store: str,
    experiment_id: str,
    experiment: str,
    owner: str,
    recipient: str,
    reply_to: dict[str, Any],
    created_by: str,
    job_key: str = "",
    runs: Sequence[dict[str, str]],
) -> Proposal:
    """A proposal and its runs (each: run_id, run_name, rule, reason, fingerprint), flushed."""
    proposal = Proposal(
        store=store, experiment_id=experiment_id, experiment=experiment, owner=owner, recipient=recipient,
        reply_to=reply_to, status=OPEN, created_by=created_by, job_key=job_key, created_at=utcnow(),
    )
    session.add(proposal)
    session.flush()
    session.execute(
        _C.insert(),
        [{"proposal_id": proposal.id, "store": store, "state": PENDING, "note": "", **run} for run in runs],
    )
    # The older proposal's snoozed rows of these runs are answered by this one now: left snoozed, a
    # Delete on the older card would collide with this one's (one busy row per run) and do nothing.
    run_ids = [run["run_id"] for run in runs]
    for i in range(0, len(run_ids), 500):
        session.execute(
            update(_C)
            .where(_C.c.store == store, _C.c.run_id.in_(run_ids[i : i + 500]), _C.c.state == SNOOZED,
                   _C.c.proposal_id != proposal.id)
            .values(state=REPROPOSED, note=REPROPOSED_NOTE + proposal.label)
        )  # fmt: skip
    return proposal


def reproposed_in(candidate: Candidate) -> str:
    """The proposal that took over a `reproposed` run (`P12`)."""
    return candidate.note.removeprefix(REPROPOSED_NOTE)


def reproposed_into(session: Session, *, proposal: Proposal) -> list[int]:
    """The older proposals whose snoozed runs `proposal` took over."""
    return list(session.scalars(
        select(Candidate.proposal_id).distinct()
        .where(Candidate.store == proposal.store, Candidate.state == REPROPOSED,
               Candidate.note == REPROPOSED_NOTE + proposal.label)
    ))  # fmt: skip


def made_by_job(session: Session, *, job_key: str) -> list[Proposal]:
    return list(session.scalars(select(Proposal).where(Proposal.job_key == job_key).order_by(Proposal.id)))


def get(session: Session, *, proposal_id: int) -> Proposal | None:
    return session.get(Proposal, proposal_id)


def candidates(session: Session, *, proposal_id: int) -> list[Candidate]:
    return list(session.scalars(select(Candidate).where(Candidate.proposal_id == proposal_id).order_by(Candidate.id)))


def open_proposals(session: Session, *, recipient: str | None = None) -> list[Proposal]:
    """With `recipient`: the proposals that person answers: theirs, or sent to them (a run without a
    Slack owner goes to an admin, who saw it in a DM but not on Home)."""
    query = select(Proposal).where(Proposal.status == OPEN).order_by(Proposal.id)
    found = list(session.scalars(query))
    if recipient is None:
        return found
    return [p for p in found if recipient in (p.recipient, p.owner) or _sent_to(p, recipient)]


def _sent_to(proposal: Proposal, user: str) -> bool:
    """An owner without a Slack id: the proposal went to an admin in Slack (not a terminal's asker)."""
    reply_to = proposal.reply_to or {}
    return not proposal.recipient and reply_to.get("source") == "slack" and reply_to.get("user") == user


def by_run(session: Session, *, store: str, ref: str, states: Sequence[str]) -> list[Candidate]:
    """Candidates whose run id is `ref` or starts with it, in these states, newest first."""
    query = (
        select(Candidate)
        .where(Candidate.store == store, Candidate.run_id.startswith(ref.lower(), autoescape=True),
               Candidate.state.in_(list(states)))
        .order_by(Candidate.id.desc())
        .limit(10)
    )
    return list(session.scalars(query))


def excluded(session: Session, *, store: str, now: datetime) -> set[str]:
    """Runs a scan must not propose: in an open proposal, or snoozed (or restored) until later."""
    rows = session.scalars(
        select(Candidate.run_id).where(
            Candidate.store == store,
            or_(Candidate.state.in_(BUSY), Candidate.state.in_((SNOOZED, RESTORED)) & (Candidate.snoozed_until > now)),
        )
    )
    return set(rows)


def answer(
    session: Session, *, candidate_ids: Sequence[int], from_states: Sequence[str], to_state: str, by: str, **values: Any
) -> list[int]:
    """Move these runs from any of `from_states` to `to_state` for `by`; returns the ids this call moved
    (a run another click already moved is not among them)."""
    if not candidate_ids:
        return []
    now = utcnow()
    rows = session.execute(
        update(_C)
        .where(_C.c.id.in_(list(candidate_ids)), _C.c.state.in_(list(from_states)))
        .values(state=to_state, decided_by=by, decided_at=now, **values)
        .returning(_C.c.id)
    ).all()
    return sorted(int(r[0]) for r in rows)


def settle(session: Session, *, candidate_id: int, from_state: str, to_state: str, **values: Any) -> bool:
    """A job's step on one run (deleting -> deleted, …): True for exactly one caller."""
    result = session.execute(
        update(_C).where(_C.c.id == candidate_id, _C.c.state == from_state).values(state=to_state, **values)
    )
    return bool(result.rowcount)


def refresh_candidate(session: Session, *, candidate_id: int, reason: str, fingerprint: str) -> None:
    """A run changed by the clean-up itself (an orphan marked FAILED): proposed as it is now."""
    session.execute(update(_C).where(_C.c.id == candidate_id, _C.c.state == PENDING)
                    .values(reason=reason, fingerprint=fingerprint))


def close_if_answered(session: Session, *, proposal_id: int) -> bool:
    """The proposal is closed once none of its runs waits for an answer."""
    waiting = select(_C.c.id).where(_C.c.proposal_id == proposal_id, _C.c.state.in_((PENDING,))).exists()
    result = session.execute(update(_P).where(_P.c.id == proposal_id, _P.c.status == OPEN, ~waiting).values(status=CLOSED))
    return bool(result.rowcount)


def due_for_purge(session: Session, *, store: str, grace: timedelta, now: datetime, limit: int = 500) -> list[Candidate]:
    return list(
        session.scalars(
            select(Candidate)
            .where(Candidate.store == store, Candidate.state == DELETED, Candidate.deleted_at <= now - grace)
            .order_by(Candidate.deleted_at)
            .limit(limit)
        )
    )


def activity_since(session: Session, *, store: str, seen: dict[str, tuple[str, int]], now_ms: int) -> dict[str, int]:
    """For running runs seen now (run id -> (digest of its parameters and tags, its newest metric or start)):
    since when each has been as it is. A digest that changed since the last scan dates from now."""
    known = {
        a.run_id: a
        for a in session.scalars(select(Activity).where(Activity.store == store, Activity.run_id.in_(list(seen))))
    } if seen else {}
    since: dict[str, int] = {}
    for run_id, (digest, logged) in seen.items():
        row = known.get(run_id)
        if row is None:
            session.add(Activity(store=store, run_id=run_id, digest=digest, since_ms=logged))
            since[run_id] = logged
        elif row.digest != digest:
            row.digest, row.since_ms = digest, now_ms
            since[run_id] = now_ms
        else:
            since[run_id] = max(row.since_ms, logged)
    session.flush()
    return since
