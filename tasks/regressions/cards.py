"""A regression run's card, from its row in the knowledge base (any worker can render it): queued, then
running with done/total and a bar, then the verdict with new failures and fixes first."""

from __future__ import annotations

from typing import Any

from labmate.launch_text import bar, since
from labmate.launch_text import took as took_text
from labmate.settings import get_settings
from models import regressions
from models.db import session_scope
from tasks.jobs import keyed

TEMPLATE = "regress_card"
ICONS = {
    regressions.QUEUED: ":hourglass_flowing_sand:",
    regressions.RUNNING: ":runner:",
    regressions.REPORTING: ":runner:",
    regressions.PASSED: ":white_check_mark:",
    regressions.FAILED: ":x:",
    regressions.ERROR: ":warning:",
}
WORDS = {
    regressions.QUEUED: "queued",
    regressions.RUNNING: "running",
    regressions.REPORTING: "writing the report",
    regressions.PASSED: "passed",
    regressions.FAILED: "failed",
    regressions.ERROR: "could not finish",
}


def card_key(run_id: int) -> str:
    return f"regress:{run_id}"


def _run_url(experiment_id: str | None, run_id: str | None) -> str:
    base = get_settings().mlflow_ui_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base and experiment_id and run_id else ""


def _targets(run: regressions.RegressionRun) -> list[dict[str, Any]]:
    shown = []
    for role, uri in run.targets.items():
        counts = run.counts.get(role) or {}
        exact = run.resolved.get(role, "")
        p95 = counts.get("p95_latency_ms")
        shown.append({
            "role": role, "uri": uri, "exact": exact if exact and exact != uri else "",
            "passed": counts.get("passed"), "total": counts.get("total"),
            "failed": counts.get("failed"), "errors": counts.get("errors"),
            "pass_rate": f"{counts['pass_rate']:.0%}" if "pass_rate" in counts else "",
            "p95": f"{p95:.0f} ms" if p95 is not None else "",
        })
    return shown


def view(run: regressions.RegressionRun) -> dict[str, Any]:
    final = run.status in regressions.ENDED
    if run.status == regressions.QUEUED:
        when = "waiting for a worker"
    elif final:
        took = since(run.started_at) - since(run.ended_at) if run.started_at and run.ended_at else 0.0
        when = f"took {took_text(took)}" if run.started_at else ""
    else:
        when = ""
    settings = get_settings()
    alias = settings.regress.promote_alias
    # compared with the alias's own version: promoting would move nothing (it logged "Promoted v2 … (it already was)")
    same = (bool(run.candidate_version) and run.baseline_version == run.candidate_version
            and run.targets.get("baseline", "") == f"models:/{run.candidate_model}@{alias}")
    promotable = (run.status == regressions.PASSED and bool(run.candidate_version) and not run.promoted_by and not same)
    highlights = run.highlights or {}
    return {
        "id": run.id,
        "label": run.label,
        "suite": run.suite,
        "user": run.user,
        "status": run.status,
        "words": WORDS.get(run.status, run.status),
        "icon": ICONS.get(run.status, ""),
        "tags": list(run.tags),
        "targets": _targets(run),
        "progress": bar(run.done, run.total) if run.status in (regressions.RUNNING, regressions.REPORTING) else "",
        "failing": run.failing,
        "done": run.done,
        "total": run.total,
        "when": when,
        "reasons": [r for r in run.reason.split("\n") if r] if run.status == regressions.FAILED else [],
        "error": run.reason if run.status == regressions.ERROR else "",
        "notes": list(highlights.get("notes") or []),
        "new_failures": list(highlights.get("new_failures") or []),
        "fixes": list(highlights.get("fixes") or []),
        "failures": list(highlights.get("failures") or []),
        "more": dict(highlights.get("more") or {}),
        "mlflow_run": run.mlflow_run_id or "",
        "mlflow_short": (run.mlflow_run_id or "")[:8],
        "mlflow_url": _run_url(run.mlflow_experiment_id, run.mlflow_run_id),
        "experiment": "labmate-regressions",
        "promotable": promotable,
        "alias_there": same and run.status == regressions.PASSED and not run.promoted_by,
        "promoters_named": bool(settings.regress.promoters or settings.access.admins),  # else no one may press it
        "alias": alias,
        "model": run.candidate_model or "",
        "version": run.candidate_version or "",
        "promoted_by": run.promoted_by or "",
        "promotion": {"alias": alias, "before": None, "already": False, "decision_id": None, "stopped": "",
                      **(run.promotion or {})},
        "final": final,
        # a run that could not run ends its command as the user's error (`labmate say` exits 1)
        "outcome": "user_error" if run.status == regressions.ERROR else "ok",
    }


def load(run_id: int) -> regressions.RegressionRun:
    with session_scope() as session:
        run = regressions.get(session, run_id=run_id)
        if run is None:
            raise LookupError(f"regression run {run_id} does not exist")
        session.expunge(run)
    return run


def reply(run_id: int) -> tuple[str, dict[str, Any]]:
    """The card as a job's reply: delivered under the run's key, to where the run was asked for."""
    run = load(run_id)
    context = view(run)
    return keyed(TEMPLATE, context, key=card_key(run_id), reply_to=run.reply_to, final=context["final"])
