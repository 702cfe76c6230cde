"""Runs -> plain dicts for the exp_* templates: names, owners, groups, links, linked decisions."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime
from typing import Any

from labmate.settings import get_settings
from models import decision as decisions
from models.db import session_scope


def ui_base() -> str:
    return get_settings().mlflow_ui_url.rstrip("/")


def run_url(experiment_id: str, run_id: str) -> str:
    base = ui_base()
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else ""


def experiment_url(experiment_id: str) -> str:
    base = ui_base()
    return f"{base}/#/experiments/{experiment_id}" if base else ""


def when(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def logged(value: float) -> float:
    """What the run logged: MLflow's SQL stores keep an infinity as the largest float, so a diverged
    run's `inf` comes back as 1.798e+308."""
    return math.copysign(math.inf, value) if abs(value) == sys.float_info.max else value


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{logged(value):.4g}"


def signed(value: float) -> str:
    return f"{logged(value):+.4g}"


def run_view(run: Any, experiment_id: str, groups: dict[str, str] | None = None) -> dict[str, Any]:
    """A run for templates, from an index row or a run record (both have these attributes). The
    full id is in `run_id` (shown in the answer and its link); `group` is its parent run's name."""
    parent = getattr(run, "parent_run_id", None)
    return {
        "run_id": run.run_id,
        "short": run.run_id[:8],
        "name": run.name or run.run_id[:8],
        "status": run.status,
        "user": run.user,
        "started": when(run.start_time),
        "url": run_url(experiment_id, run.run_id),
        "group": ((groups or {}).get(parent) or parent[:8]) if parent else "",
        "decisions": [],
    }


def attach_decisions(views: list[dict[str, Any]]) -> None:
    """Every answer that lists runs shows the decisions linked to them."""
    ids = [v["run_id"] for v in views]
    if not ids:
        return
    with session_scope() as session:
        linked = decisions.linked_to(session, kind="run", refs=ids)
        for view in views:
            view["decisions"] = [
                {"id": d.id, "text": d.text, "superseded_by": d.superseded_by}
                for d in linked.get(view["run_id"], [])[:3]
            ]
