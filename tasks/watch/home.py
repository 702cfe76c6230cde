"""The App Home tab: what the viewing user has queued and running, the latest decisions, the team's
best run per watched experiment, and the user's
pending clean-up proposals. Built from the knowledge base and the run index when the tab is opened."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from labmate import launch_text
from labmate.settings import get_settings
from models import decision as decisions
from models import launches
from models import watch as watches
from models.db import session_scope
from tasks import mlflow_io
from tasks.experiments import sync
from tasks.experiments.sync import Experiment
from tasks.jobs import Replies
from tasks.watch.add import current_best

log = logging.getLogger(__name__)
TEMPLATE = "home"
LATEST_DECISIONS = 5
SHOWN_LAUNCHES = 10


def cleanup_proposals(user: str) -> list[dict[str, Any]]:
    """The user's clean-up proposals waiting for an answer (`{"experiment", "runs", "label"}`); the tab
    shows them with the proposal's own Delete / Keep / Snooze buttons."""
    from models import cleanup as proposals

    with session_scope() as session:
        shown = []
        for proposal in proposals.open_proposals(session, recipient=user):
            pending = [c for c in proposals.candidates(session, proposal_id=proposal.id) if c.state == proposals.PENDING]
            if pending:
                shown.append({"experiment": proposal.experiment, "runs": len(pending), "label": proposal.label})
        return shown


def _launches(user: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    with session_scope() as session:
        mine = [launch for launch in launches.active(session) if launch.user == user][:SHOWN_LAUNCHES]
        positions = launches.queue_positions(session)
        shown = []
        for launch in mine:
            where, when = launch_text.where_and_when(launch, positions.get(launch.id), now, waiting="waiting for a slot")
            shown.append({"label": launch.label, "project": launch.project, "entry_point": launch.entry_point,
                          "status": launch.status, "where": where, "when": when})  # fmt: skip
    return shown


def _decisions() -> list[dict[str, Any]]:
    with session_scope() as session:
        rows = session.scalars(
            select(decisions.Decision).order_by(decisions.Decision.created_at.desc()).limit(LATEST_DECISIONS)
        ).all()
        return [{"id": d.id, "text": d.text, "author": d.author, "when": d.created_at,
                 "superseded": d.superseded_by is not None} for d in rows]  # fmt: skip


def _experiment(experiment_id: str, name: str, store: str) -> Experiment:
    """With its MLflow tags (declared primary metric and directions) when MLflow answers; else from labmate.toml."""
    try:
        found = mlflow_io.experiment_by_id(experiment_id)
    except Exception as exc:
        log.info("home: MLflow unreachable (%s); ranking %s by labmate.toml", exc, name)
        found = None
    if found is None:
        return Experiment(experiment_id, name, store=store)
    return Experiment(found["experiment_id"], found["name"], found.get("primary_metric"),
                      tuple(sorted((found.get("directions") or {}).items())), store=store)  # fmt: skip


def _bests() -> list[dict[str, Any]]:
    store = mlflow_io.store()
    with session_scope() as session:
        watched = {w.experiment_id: w.experiment for w in watches.all_watches(session, store=store)}
    shown = []
    for experiment_id, name in sorted(watched.items(), key=lambda item: item[1].casefold()):
        experiment = _experiment(experiment_id, name, store)
        best = current_best(experiment) if sync.progress(experiment).ready else None
        shown.append({"experiment": experiment.name, "best": best})
    return shown


def build(user: str) -> Replies:
    return [(TEMPLATE, {
        "user": user,
        "command": get_settings().command,
        "launches": _launches(user),
        "decisions": _decisions(),
        "bests": _bests(),
        "cleanup": cleanup_proposals(user),
        "snooze_days": f"{get_settings().cleanup.snooze_days:g}",
        "updated": datetime.now(UTC),
    })]  # fmt: skip
