"""Hostile-text contexts for the regression templates (tests/units/test_render.py renders every template).
The card's contexts come from the real `cards.view` of rows holding hostile text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from models import regressions


def _row(text: str, **kw: Any) -> regressions.RegressionRun:
    now = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
    item = {"key": text[:40], "turn": 2, "user": text, "baseline": text, "candidate": None,
            "failure": {"turn": 2, "user": text, "reply": text, "why": text}}
    base: dict[str, Any] = {
        "id": 12, "user": "U999", "channel": "C1", "suite": text[:60], "suite_file": "conversations/x.yaml",
        "targets": {"baseline": f"models:/{text[:20]}@production", "candidate": "models:/m@candidate"},
        "resolved": {"baseline": "models:/m/1", "candidate": "models:/m/2"}, "tags": [text[:20]], "gate": {},
        "workers": 2, "chunks": 4, "total": 48, "done": 20, "failing": 3, "status": regressions.RUNNING, "reason": "",
        "counts": {}, "highlights": {}, "reply_to": {}, "task_id": "t", "report_job": "t/report",
        "mlflow_run_id": None, "mlflow_experiment_id": None, "candidate_model": None, "candidate_version": None,
        "baseline_version": None, "promoted_by": None, "promoted_at": None, "promotion": {},
        "created_at": now - timedelta(minutes=3), "started_at": now - timedelta(minutes=2), "ended_at": None,
    }
    counts = {"total": 24, "passed": 20, "failed": 3, "errors": 1, "pass_rate": 20 / 24, "p95_latency_ms": 12.5}
    ended = {
        "done": 48, "ended_at": now, "counts": {"baseline": counts, "candidate": counts},
        "highlights": {"new_failures": [item] * 5, "fixes": [item], "failures": [], "more": {"new_failures": 7},
                       "notes": [text]},
        "mlflow_run_id": "0a1b2c3d4e5f", "mlflow_experiment_id": "3", "candidate_model": "m", "candidate_version": "2",
    }
    if kw.pop("ended", False):
        base.update(ended)
    base.update(kw)
    return regressions.RegressionRun(**base)


def regress_contexts(text: str) -> dict[str, list[dict[str, Any]]]:
    from tasks.regressions import cards

    run = {"label": "R12", "suite": text[:60], "status": "failed", "user": "U999", "ago": "3 min", "pass_rate": "75%",
           "progress": "48/48", "new_failures": 2, "fixes": 1, "reason": text, "candidate": text, "promoted_by": ""}
    return {
        "regress_card": [
            cards.view(_row(text, status=regressions.RUNNING)),
            cards.view(_row(text, status=regressions.QUEUED, done=0)),
            cards.view(_row(text, ended=True, status=regressions.FAILED, reason=f"{text}\n{text}")),
            cards.view(_row(text, ended=True, status=regressions.PASSED)),
            cards.view(_row(text, ended=True, status=regressions.PASSED, promoted_by="U1",
                            promotion={"alias": "production", "before": "1", "already": False, "decision_id": 4})),
            cards.view(_row(text, status=regressions.ERROR, reason=text, ended_at=datetime.now(UTC))),
        ],
        "regress_queued": [{"label": "R12", "suite": text[:60], "file": text, "conversations": 24,
                            "targets": [{"role": "candidate", "uri": text}], "tags": [text[:20]], "chunks": 3,
                            "workers": 2}],
        "regressions_list": [{"runs": [run, {**run, "status": "running", "promoted_by": "U1"}], "suite": text[:30],
                              "since": True}, {"runs": [], "suite": "", "since": False}],
        "regress_promoting": [{"label": "R12", "model": text[:60], "version": "2", "alias": text[:20]}],
        "regress_promoted": [
            {"label": "R12", "model": text[:60], "version": "2", "alias": "production", "before": "1", "already": False,
             "decision_id": 4},
            {"label": "R12", "model": text[:60], "version": "2", "alias": "production", "before": "", "already": True,
             "decision_id": 4},
        ],
    }
