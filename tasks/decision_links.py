"""After a decision names MLflow runs, experiments or model versions: check they exist, record
what they are, and tag them in MLflow with the decision id so the MLflow UI shows it."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from models import decision as decisions
from models.db import session_scope
from tasks import mlflow_io
from tasks.jobs import JobTask, Replies, run_job


def _check(kind: str, ref: str, decision_id: int) -> dict[str, Any]:
    try:
        if kind == "run":
            detail = mlflow_io.describe_run(ref)
            if not detail.get("missing"):
                mlflow_io.tag_run(ref, decision_id)
        elif kind == "model":
            detail = mlflow_io.describe_model(ref)
            mlflow_io.tag_model_version(detail["name"], detail["version"], decision_id)
        else:
            detail = mlflow_io.describe_experiment(ref)
    except Exception as exc:
        if not mlflow_io.is_missing(exc):
            raise
        detail = {"missing": True, "reason": f"MLflow has no {kind} `{ref}`"}
    return detail


def check_links(decision_id: int) -> Replies:
    with session_scope() as session:
        links = [(link.id, link.kind, link.ref) for link in decisions.get(session, decision_id=decision_id).links]
    found, missing = [], []
    for link_id, kind, ref in links:
        detail = _check(kind, ref, decision_id)
        status = "missing" if detail.get("missing") else "ok"
        with session_scope() as session:
            decisions.set_link_result(session, link_id=link_id, status=status, detail=detail)
        view = {"kind": kind, "ref": ref, "summary": detail.get("summary", ""), "reason": detail.get("reason", "")}
        (missing if status == "missing" else found).append(view)
    return [("links_checked", {"decision_id": decision_id, "found": found, "missing": missing})]


@shared_task(name="labmate.decisions.check_links", base=JobTask, bind=True)
def check_links_task(self: Task, decision_id: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "check_links", lambda: check_links(decision_id), reply_to, audit_id)
