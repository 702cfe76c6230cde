"""MLflow for regression runs from chat: resolving model targets in the registry, logging a run's report
(experiment `labmate-regressions`), and moving a model alias when a candidate is promoted."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labmate.errors import NotFoundError
from tasks import mlflow_io
from tasks.mlflow_io.launch import ensure_experiment

EXPERIMENT = "labmate-regressions"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")
RUN_URI = re.compile(r"^runs:/(?P<run>[^/]+)(?:/.*)?$")


@dataclass(frozen=True)
class Resolved:
    uri: str
    """The exact target: `models:/name/3` for an alias (a later move of the alias doesn't change what runs)."""
    model: str | None = None
    version: str | None = None


def resolve(uri: str) -> Resolved:
    """A model target as the registry knows it; NotFoundError says what is missing. Other targets pass as they are."""
    client = mlflow_io.client()
    model = MODEL_URI.match(uri)
    if model:
        name, alias, version = model.group("name"), model.group("alias"), model.group("version")
        try:
            client.get_registered_model(name)
        except Exception as exc:
            if mlflow_io.is_missing(exc):
                raise NotFoundError(f"`{uri}` is not in the model registry: there is no registered model `{name}`.",
                                    hint=_models_hint(client)) from None
            raise
        try:
            if alias is not None:
                found = client.get_model_version_by_alias(name, alias)
            elif version is not None and version.isdigit():
                found = client.get_model_version(name, version)
            else:  # a stage (models:/name/Production) is MLflow's own to resolve
                return Resolved(uri, name, None)
        except Exception as exc:
            if mlflow_io.is_missing(exc):
                what = f"alias `@{alias}`" if alias is not None else f"version {version}"
                raise NotFoundError(f"`{uri}` is not in the model registry: `{name}` has no {what}.",
                                    hint=_versions_hint(client, name)) from None
            raise
        return Resolved(f"models:/{name}/{found.version}", name, str(found.version))
    run = RUN_URI.match(uri)
    if run:
        try:
            client.get_run(run.group("run"))
        except Exception as exc:
            if mlflow_io.is_missing(exc):
                raise NotFoundError(f"`{uri}` names no MLflow run: there is no run `{run.group('run')}`.") from None
            raise
    return Resolved(uri)


def _models_hint(client: Any) -> str:
    try:
        names = sorted(m.name for m in client.search_registered_models(max_results=20))
    except Exception:
        return ""
    return ("Registered models: " + ", ".join(f"`{n}`" for n in names) + ".") if names else "No model is registered yet."


def _versions_hint(client: Any, name: str) -> str:
    try:
        model = client.get_registered_model(name)
        versions = sorted((v.version for v in client.search_model_versions(f"name='{name}'")), key=int)
    except Exception:
        return ""
    aliases = ", ".join(f"`@{a}` (v{v})" for a, v in sorted((model.aliases or {}).items()))
    return f"`{name}` has versions {', '.join(map(str, versions)) or 'none'}" + (f"; aliases {aliases}." if aliases else ".")


def create_run(*, label: str, suite: str, user: str) -> tuple[str, str]:
    """The MLflow run a regression run's report is logged to; (run id, experiment id)."""
    client = mlflow_io.client()
    experiment_id = ensure_experiment(EXPERIMENT)
    run = client.create_run(experiment_id, run_name=f"{suite}-{label}",
                            tags={"mlflow.user": user, "labmate.regression": label, "labmate.suite": suite})
    return run.info.run_id, experiment_id


def discard_run(run_id: str) -> None:
    """A report run made by a job that then failed: its retry makes its own, and this one would stay
    RUNNING in the regressions experiment forever."""
    mlflow_io.client().delete_run(run_id)


def log_report(run_id: str, report: dict[str, Any], *, suite: str, tags: list[str], files: dict[str, Path]) -> None:
    """Params (suite, targets, gate), metrics (pass rate and p95 latency per target, new failures, fixes) and
    the report files as artifacts; then the run is FINISHED."""
    from mlflow.entities import Metric, Param

    client = mlflow_io.client()
    params = {"suite": suite, "gate": _short(report["verdict"]["gate"]), "tags": ",".join(tags) or "(all)"}
    params.update({f"target.{role}": uri for role, uri in report["targets"].items()})
    metrics: dict[str, float] = {
        "new_failures": float(len(report["new_failures"])), "fixes": float(len(report["fixes"])),
        "passed": 1.0 if report["verdict"]["passed"] else 0.0,
    }
    for role, summary in report["summary"].items():
        metrics[f"{role}.pass_rate"] = float(summary["pass_rate"])
        metrics[f"{role}.errors"] = float(summary["errors"])
        if summary["p95_latency_ms"] is not None:
            metrics[f"{role}.p95_latency_ms"] = float(summary["p95_latency_ms"])
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)[:500]) for k, v in params.items()])
    for path in files.values():
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")


def _short(gate: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(gate.items()))


def report_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="labmate-regress-"))


def alias_version(name: str, alias: str) -> str | None:
    found = mlflow_io.client().get_registered_model(name).aliases.get(alias)
    return None if found is None else str(found)


def move_alias(name: str, alias: str, version: str) -> str | None:
    """Point `alias` at `version`; returns the version it pointed at before (None: it was new)."""
    client = mlflow_io.client()
    before = client.get_registered_model(name).aliases.get(alias)
    if before is not None and str(before) == str(version):
        return str(before)
    client.set_registered_model_alias(name, alias, str(version))
    return None if before is None else str(before)


def run_url(experiment_id: str | None, run_id: str | None) -> str:
    from labmate.settings import get_settings

    base = get_settings().mlflow_ui_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base and experiment_id and run_id else ""
