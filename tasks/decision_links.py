"""After a decision names MLflow runs, experiments or model versions: check they exist, record
what they are, and tag them in MLflow with the decision id so the MLflow UI shows it."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from labmate.errors import LabmateError
from models import decision as decisions
from models.db import session_scope
from tasks import mlflow_io
from tasks.jobs import JobTask, Replies, run_job


def _run_id(ref: str, experiment: str | None) -> tuple[str | None, str]:
    """A run as the decision named it (full id, 8+ prefix, or name within `exp:`) -> its full id, or
    None and why not."""
    from labmate.errors import LabmateError
    from tasks.experiments import resolve

    try:
        return resolve.run(ref, experiment).run_id, ""
    except LabmateError as exc:
        why = exc.message.rstrip(".")  # shown in parentheses, inside a sentence; "MLflow …" stays so
        return None, why if why[1:2].isupper() else why[:1].lower() + why[1:]


def _check(kind: str, ref: str, decision_id: int, experiment: str | None = None) -> dict[str, Any]:
    try:
        if kind == "run":
            full, why = _run_id(ref, experiment)
            if full is None:
                return {"missing": True, "reason": why}
            detail = {**mlflow_io.describe_run(full), "run_id": full}
            if not detail.get("missing"):
                mlflow_io.tag_run(full, decision_id)
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
    experiment = next((ref for _id, kind, ref in links if kind == "experiment"), None)
    found, missing = [], []
    for link_id, kind, ref in links:
        detail = _check(kind, ref, decision_id, experiment)
        status = "missing" if detail.get("missing") else "ok"
        # A run named by a prefix or its name is stored by its full id; a model keeps the version or
        # alias it was named by (its detail says which run that version came from).
        full = detail.get("run_id") if kind == "run" else None
        with session_scope() as session:
            decisions.set_link_result(session, link_id=link_id, status=status, detail=detail, ref=full)
        ref = full or ref
        view = {"kind": kind, "ref": ref, "summary": detail.get("summary", ""), "reason": detail.get("reason", "")}
        (missing if status == "missing" else found).append(view)
    return [("links_checked", {"decision_id": decision_id, "found": found, "missing": missing})]


def _checked_or_said(decision_id: int) -> Replies:
    """MLflow down while the links are checked: the decision is saved all the same, so the reply says
    that first, not "ask again" as a question's answer would."""
    try:
        return check_links(decision_id)
    except Exception as exc:
        explained = mlflow_io.client_error(exc)
        if explained is None:
            raise
        raise LabmateError(f"Decision #{decision_id} is saved, but its MLflow links weren't checked: {explained.message}",
                           hint="The decision is complete; only the links' run details are missing.") from exc


@shared_task(name="labmate.decisions.check_links", base=JobTask, bind=True)
def check_links_task(self: Task, decision_id: int, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "check_links", lambda: _checked_or_said(decision_id), reply_to, audit_id)
