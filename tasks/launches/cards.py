"""A launch's run card, from its row in the knowledge base (any worker can render it), and, once the run
has ended, from MLflow: the final metrics, a chart, and the comparison with the experiment's best.

Intermediate states are rendered coarsely (elapsed time in tens of seconds, then minutes) so the card
changes, and is edited, only when something a reader would notice changed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labmate.launch_text import aware as _aware
from labmate.launch_text import bar, elapsed, number, ordered_metrics
from labmate.launch_text import took as took_text
from labmate.settings import get_settings
from models import launches
from models.db import session_scope
from tasks.jobs import keyed

log = logging.getLogger(__name__)

ICONS = {
    launches.QUEUED: ":hourglass_flowing_sand:",
    launches.RUNNING: ":runner:",
    launches.FINISHED: ":white_check_mark:",
    launches.FAILED: ":x:",
    launches.KILLED: ":octagonal_sign:",
}
TEMPLATE = "launch_card"


def card_key(launch_id: int) -> str:
    return f"launch:{launch_id}"


def _run_url(experiment_id: str | None, run_id: str | None) -> str:
    base = get_settings().mlflow_ui_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base and experiment_id and run_id else ""


def view(launch: launches.Launch, *, position: int | None = None, primary: str | None = None) -> dict[str, Any]:
    """The card's plain context from a launch row."""
    now = datetime.now(UTC)
    created, started, ended = _aware(launch.created_at), _aware(launch.started_at), _aware(launch.ended_at)
    if launch.status == launches.QUEUED:
        waited = (now - created).total_seconds() if created else 0.0
        when = f"queued for {elapsed(waited)}"
    elif started is not None:
        took = ((ended or now) - started).total_seconds()
        when = f"ran for {took_text(took)}" if ended else f"running for {elapsed(took)}"
    else:
        when = ""
    primary = primary or get_settings().primary_metrics.get(launch.experiment)
    return {
        "id": launch.id,
        "label": launch.label,
        "project": launch.project,
        "entry_point": launch.entry_point,
        "user": launch.user,
        "status": launch.status,
        "icon": ICONS.get(launch.status, ""),
        "reason": launch.reason,
        "stopped_by": launch.stopped_by or "",
        "params": [{"key": k, "value": v} for k, v in launch.params.items()],
        "experiment": launch.experiment,
        "run_id": launch.mlflow_run_id or "",
        "run_short": (launch.mlflow_run_id or "")[:8],
        "run_url": _run_url(launch.experiment_id, launch.mlflow_run_id),
        "when": when,
        "progress": bar(_steps_done(launch), launch.total_steps),
        "metrics": ordered_metrics(launch.metrics or {}, primary),
        "output": launch.output_tail if launch.status in (launches.FAILED, launches.KILLED) else "",
        "position": position,
        "sweep": f"S{launch.sweep_id}" if launch.sweep_id else "",
        "active": launch.status in launches.ACTIVE,
        "attempts": launch.attempts,
        "best": None,
        "files": [],
        "final": launch.status in launches.ENDED,
    }


def load(launch_id: int) -> tuple[launches.Launch, int | None]:
    with session_scope() as session:
        launch = launches.get(session, launch_id=launch_id)
        if launch is None:
            raise LookupError(f"launch {launch_id} does not exist")
        position = launches.queue_positions(session).get(launch_id) if launch.status == launches.QUEUED else None
        session.expunge(launch)
    return launch, position


def current(launch_id: int, *, primary: str | None = None) -> tuple[dict[str, Any], launches.Launch]:
    launch, position = load(launch_id)
    return view(launch, position=position, primary=primary), launch


def final_extras(launch: launches.Launch, context: dict[str, Any]) -> None:
    """The ended run, from MLflow: its primary metric's history as a chart and the experiment's previous
    best. Best effort: a card without a chart beats no card."""
    if not launch.mlflow_run_id or not launch.experiment_id:
        return
    try:
        from tasks.experiments import charts, resolve
        from tasks.mlflow_io import launch as mlflow_launch

        metrics = launch.metrics or {}
        primary = mlflow_launch.primary_metric(launch.experiment, launch.experiment_id, list(metrics))
        context["metrics"] = ordered_metrics(metrics, primary)
        if not primary:
            return
        ascending = resolve.lower_is_better(primary)
        before = int(_aware(launch.started_at).timestamp() * 1000) if launch.started_at else None
        best = mlflow_launch.previous_best(
            launch.experiment_id, primary, ascending=ascending, exclude=[launch.mlflow_run_id], before_ms=before
        )
        value = metrics.get(primary)
        series = [(launch.label, mlflow_launch.history(launch.mlflow_run_id, primary))]
        finished = value is not None and launch.status == launches.FINISHED
        if best is not None:
            compared = {"metric": primary, "name": best["name"], "value": number(best["value"]),
                        "url": _run_url(launch.experiment_id, best["run_id"]), "first": False, "delta": "", "better": False}
            if finished and value is not None:
                delta = value - best["value"]
                compared.update(delta=f"{delta:+.4g}", better=(delta < 0) if ascending else (delta > 0))
            context["best"] = compared
            series.append((f"previous best ({best['name']})", mlflow_launch.history(best["run_id"], primary)))
        elif finished:
            context["best"] = {"metric": primary, "name": "", "value": "", "url": "", "first": True, "delta": "",
                               "better": True}
        path = Path(get_settings().charts_dir) / f"launch-{launch.label}-{_safe(primary)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        made = charts.history(series, metric=primary, title=f"{launch.label} {launch.project}: {primary}", path=path)
        if made:
            context["files"] = [{"path": str(made), "title": f"{launch.label} · {primary}"}]
    except Exception:
        log.warning("could not add the final metrics of %s to its card", launch.label, exc_info=True)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[:60]


def reply(launch_id: int) -> tuple[str, dict[str, Any]]:
    """The card as a job's reply: delivered under the launch's key, to where the launch was asked for."""
    context, launch = current(launch_id)
    if context["final"]:
        final_extras(launch, context)
    return keyed(TEMPLATE, context, key=card_key(launch_id), reply_to=launch.reply_to, final=context["final"])


def _steps_done(launch: launches.Launch) -> int | None:
    """A run that finished at step total-1 counted its steps from 0 (`for step in range(steps)`, MLflow's
    default): it did them all. While it runs the latest step is all there is to go by."""
    step, total = launch.step, launch.total_steps
    if launch.status == launches.FINISHED and step is not None and total and step == total - 1:
        return total
    return step
