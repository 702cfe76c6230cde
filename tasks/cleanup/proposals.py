"""Proposals from a scan: one per owner, written with their runs (and their audit rows) in one
transaction, and the proposal's message, rendered from the knowledge base by whichever worker delivers
it (keyed `cleanup:<id>`: every later state edits the same message)."""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from sqlalchemy.orm import Session

from labmate.settings import get_settings
from models import audit, jobs
from models import cleanup as proposals
from models.db import session_scope
from tasks.cleanup.rules import Stale
from tasks.cleanup.scan import ScanResult, fingerprint, mark_orphans
from tasks.jobs import keyed

log = logging.getLogger(__name__)

TEMPLATE = "cleanup_proposal"
CARD_TASK = "labmate.cleanup.card"
SHOWN = 15
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
ICONS = {
    proposals.PENDING: ":wastebasket:", proposals.DELETING: ":hourglass_flowing_sand:", proposals.DELETED: ":x:",
    proposals.PURGED: ":x:", proposals.KEPT: ":pushpin:", proposals.SNOOZED: ":zzz:", proposals.SKIPPED: ":fast_forward:",
    proposals.RESTORING: ":hourglass_flowing_sand:", proposals.RESTORED: ":leftwards_arrow_with_hook:",
    proposals.REPROPOSED: ":repeat:",
}
WORDS = {
    proposals.PENDING: "", proposals.DELETING: "deleting", proposals.DELETED: "deleted", proposals.PURGED: "removed for good",
    proposals.KEPT: "kept", proposals.SNOOZED: "snoozed", proposals.SKIPPED: "skipped",
    proposals.RESTORING: "restoring", proposals.RESTORED: "restored", proposals.REPROPOSED: "proposed again",
}


def card_key(proposal_id: int) -> str:
    return f"cleanup:{proposal_id}"


def recipient_of(owner: str) -> str:
    """The Slack user an MLflow user's proposal is for ('' when unknown)."""
    mapped = get_settings().cleanup.owners.get(owner)
    if mapped:
        return mapped
    return owner if SLACK_USER.match(owner) else ""


def destination(recipient: str, asked_from: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where a proposal goes: the terminal that asked; else the configured channel; else a DM to its owner;
    else the first admin; else the channel of whoever asked. None: nowhere (logged)."""
    settings = get_settings()
    if asked_from is not None and asked_from.get("source") == "shell":
        return {k: v for k, v in asked_from.items() if k not in ("audit", "ephemeral")}
    if settings.cleanup.channel:
        return {"channel": settings.cleanup.channel, "source": "slack", "user": recipient}
    if recipient:
        return {"channel": recipient, "source": "slack", "user": recipient}
    if settings.access.admins:
        admin = settings.access.admins[0]
        return {"channel": admin, "source": "slack", "user": admin}
    if asked_from is not None and asked_from.get("channel"):
        return {"channel": asked_from["channel"], "source": "slack", "user": asked_from.get("user", "")}
    return None


def make(result: ScanResult, *, created_by: str, job_key: str = "", asked_from: dict[str, Any] | None = None,
         outbox: bool = False) -> list[int]:
    """One proposal per owner of the scan's stale runs, then the orphans they hold marked FAILED; with
    `outbox`, each card's job is stored with its proposal and sent after that (or by the reaper).
    Returns the proposals' ids."""
    by_owner: dict[str, list[Stale]] = defaultdict(list)
    for item in result.stale:
        by_owner[item.run.user or "(unknown)"].append(item)
    experiment = result.experiment
    made: list[int] = []
    card_jobs: list[str] = []
    older: set[int] = set()
    with session_scope() as session:
        for owner, items in sorted(by_owner.items()):
            recipient = recipient_of(owner)
            reply_to = destination(recipient, asked_from)
            if reply_to is None:
                log.warning("clean-up: nowhere to send the proposal for %s's %d runs in %s (set [cleanup] channel)",
                            owner, len(items), experiment.name)
                continue
            runs = [
                {"run_id": s.run.run_id, "run_name": s.run.name[:256], "rule": s.rule, "reason": s.reason,
                 "fingerprint": fingerprint(s.run.status, s.run.end_time, s.run.last_activity)}
                for s in items
            ]
            proposal = proposals.create(
                session, store=experiment.store, experiment_id=experiment.experiment_id, experiment=experiment.name,
                owner=owner, recipient=recipient, reply_to=reply_to, created_by=created_by, job_key=job_key, runs=runs,
            )
            audit.record(
                session, user=recipient or owner, channel=str(reply_to.get("channel", "")),
                source=str(reply_to.get("source", "slack")), verb="cleanup.proposal",
                text=f"{proposal.label}: {len(runs)} stale run{'' if len(runs) == 1 else 's'} of {experiment.name} proposed for deletion",
                outcome="ok", duration_ms=0.0,
                detail={"proposal": proposal.id, "runs": [r["run_id"] for r in runs], "by": created_by},
            )
            made.append(proposal.id)
            older.update(proposals.reproposed_into(session, proposal=proposal))
            if outbox:
                card_jobs.append(_card_job(session, f"cleanup-card:{proposal.id}", proposal.id, reply_to))
        card_jobs += store_card_edits(session, older - set(made))  # their cards say where those runs went
    with session_scope() as session:
        orphans = [(c.id, c.run_id, c.reason) for pid in made for c in proposals.candidates(session, proposal_id=pid)
                   if c.rule == "orphans"]
    mark_orphans(experiment.store, orphans)
    send_card_edits(card_jobs)
    return made


def store_card_edits(session: Session, proposal_ids: Iterable[int]) -> list[str]:
    """Outbox jobs that edit these proposals' messages to show their runs as they are now, written in the
    transaction that changed them (a Delete or Restore's job edits its card itself; a beat job or a newer
    proposal changes an older card's runs). A proposal answered in the terminal has no message to edit."""
    keys: list[str] = []
    for proposal_id in sorted(set(proposal_ids)):
        proposal = proposals.get(session, proposal_id=proposal_id)
        if proposal is None or proposal.reply_to.get("source") == "shell":
            continue
        keys.append(_card_job(session, f"cleanup-card:{proposal_id}:{uuid.uuid4().hex}", proposal_id,
                              dict(proposal.reply_to)))
    return keys


def _card_job(session: Session, key: str, proposal_id: int, reply_to: dict[str, Any]) -> str:
    jobs.add_queued(session, key=key, task=CARD_TASK,
                    kwargs={"proposal_id": proposal_id, "reply_to": reply_to, "audit_id": None}, audit_id=None)
    return key


def send_card_edits(keys: list[str]) -> None:
    """After the commit: one the broker doesn't take now is sent by the reaper."""
    if keys:
        from tasks.maintenance import send_stored

        send_stored(keys)


def _run_url(experiment_id: str, run_id: str) -> str:
    base = get_settings().mlflow_ui_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else ""


def view(proposal: proposals.Proposal, candidates: list[proposals.Candidate]) -> dict[str, Any]:
    settings = get_settings().cleanup
    pending = [c for c in candidates if c.state == proposals.PENDING]
    busy = [c for c in candidates if c.state in (proposals.DELETING, proposals.RESTORING)]
    counts: dict[str, int] = defaultdict(int)
    for c in candidates:
        counts[WORDS[c.state] or "waiting"] += 1
    runs = [
        {"name": c.run_name or c.run_id[:8], "short": c.run_id[:8], "run_id": c.run_id,
         "url": _run_url(proposal.experiment_id, c.run_id), "reason": c.reason, "state": c.state,
         "icon": ICONS.get(c.state, ""), "word": WORDS.get(c.state, c.state), "note": c.note, "by": c.decided_by or ""}
        for c in candidates[:SHOWN]
    ]
    return {
        "id": proposal.id, "label": proposal.label, "experiment": proposal.experiment, "owner": proposal.owner,
        "recipient": proposal.recipient, "runs": runs, "hidden": max(0, len(candidates) - SHOWN),
        "total": len(candidates), "pending": len(pending), "counts": dict(counts),
        "grace_days": f"{settings.grace_days:g}", "snooze_days": f"{settings.snooze_days:g}",
        "created": proposal.created_at.replace(tzinfo=proposal.created_at.tzinfo or UTC).strftime("%Y-%m-%d"),
        "final": not pending and not busy,
    }


def card(proposal_id: int) -> tuple[str, dict[str, Any]]:
    """The proposal's message as a job's reply: under its own key, to where the proposal went."""
    with session_scope() as session:
        proposal = proposals.get(session, proposal_id=proposal_id)
        if proposal is None:
            raise LookupError(f"clean-up proposal {proposal_id} does not exist")
        context = view(proposal, proposals.candidates(session, proposal_id=proposal_id))
        reply_to = dict(proposal.reply_to)
    return keyed(TEMPLATE, context, key=card_key(proposal_id), reply_to=reply_to, final=context["final"])
