"""The one place that talks to MLflow. Imported by workers only."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from labmate.settings import get_settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DECISIONS_TAG = "labmate.decisions"


@lru_cache(maxsize=4)
def _client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def client() -> MlflowClient:
    return _client(get_settings().mlflow_tracking_uri)


def is_missing(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def headline_metrics(metrics: dict[str, float], experiment: str, count: int = 3) -> dict[str, float]:
    """The metrics worth quoting: the experiment's primary one first, then the rest by name."""
    primary = get_settings().primary_metrics.get(experiment)
    names = sorted(metrics, key=lambda n: (n != primary, n))
    return {name: metrics[name] for name in names[:count]}


def append_decision_tag(existing: str | None, decision_id: int) -> str:
    ids = [i for i in (existing or "").split(",") if i]
    if str(decision_id) not in ids:
        ids.append(str(decision_id))
    return ",".join(ids)


def describe_run(run_id: str) -> dict[str, Any]:
    """What a decision records about a run; raises MlflowException when it doesn't exist."""
    c = client()
    run = c.get_run(run_id)
    if run.info.lifecycle_stage == "deleted":
        return {"missing": True, "reason": "the run was deleted"}
    experiment = c.get_experiment(run.info.experiment_id)
    metrics = headline_metrics(dict(run.data.metrics), experiment.name)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    return {
        "experiment_id": run.info.experiment_id,
        "experiment": experiment.name,
        "run_name": run.info.run_name,
        "metrics": metrics,
        "summary": f"{experiment.name} · {run.info.run_name}" + (f" · {shown}" if shown else ""),
    }


def tag_run(run_id: str, decision_id: int) -> None:
    c = client()
    run = c.get_run(run_id)
    c.set_tag(run_id, DECISIONS_TAG, append_decision_tag(run.data.tags.get(DECISIONS_TAG), decision_id))


def describe_model(ref: str) -> dict[str, Any]:
    c = client()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = c.get_model_version_by_alias(name, alias)
    else:
        name, number = ref.split("/", 1)
        version = c.get_model_version(name, number)
    return {
        "name": name,
        "version": version.version,
        "run_id": version.run_id,
        "summary": f"{name} version {version.version}" + (f" (run {version.run_id[:8]})" if version.run_id else ""),
    }


def tag_model_version(name: str, version: str, decision_id: int) -> None:
    c = client()
    current = c.get_model_version(name, version).tags.get(DECISIONS_TAG)
    c.set_model_version_tag(name, version, DECISIONS_TAG, append_decision_tag(current, decision_id))


def describe_experiment(name: str) -> dict[str, Any]:
    experiment = client().get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        return {"missing": True, "reason": "no such experiment"}
    return {"experiment_id": experiment.experiment_id, "summary": f"experiment {experiment.name}"}
