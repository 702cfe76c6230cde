"""The MLflow calls of launches: the experiment, the project's files (MLflow Projects' own fetch, so a
git URI is cloned by the worker that runs it), the run a launch logs to, its progress, and its end.
Imported by workers only."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labmate.errors import LabmateError
from labmate.settings import get_settings, is_git_uri, mask_url, project_directory
from tasks import mlflow_io

log = logging.getLogger(__name__)

LAUNCH_TAG = "labmate.launch"
SWEEP_TAG = "labmate.sweep"
TERMINAL = ("FINISHED", "FAILED", "KILLED")


@dataclass
class Snapshot:
    """What MLflow says about a run now: its status, the latest step any metric reached, the latest values."""

    status: str = ""
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)


def ensure_experiment(name: str) -> str:
    """The experiment's id; created if missing (a SQLite store keeps artifacts beside it, as the demo does)."""
    client = mlflow_io.client()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    settings = get_settings()
    location = str(settings.mlflow_artifact_root) if settings.mlflow_tracking_uri.startswith("sqlite:") else None
    from mlflow.exceptions import MlflowException

    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # another worker created it meanwhile
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def fetch_project(uri: str, version: str | None, entry_point: str, params: dict[str, str]) -> tuple[Path, Path | None]:
    """(the project's directory on this machine, the copy to delete after the run or None).

    MLflow Projects' own fetch: a git URI is cloned (at `version`) into a temporary directory by the
    worker that runs it. A directory on this machine (a path or a `file://` URI) is used where it is and
    never deleted; with a `version` it is cloned first, since MLflow would check the version out in the
    user's own repository."""
    from mlflow.exceptions import ExecutionException
    from mlflow.projects.utils import fetch_and_validate_project

    local = local_directory(uri)
    where = mask_url(uri) + (f"@{version}" if version else "")
    if local is None and not is_git_uri(uri):
        raise LabmateError(f"the worker has no directory {where.partition('#')[0]}",
                           hint="a local project's `uri` must name the same directory on the bot and on every worker")
    if local is not None and version is None:
        return Path(fetch_and_validate_project(uri, None, entry_point, params)), None
    subdirectory = uri.partition("#")[2]
    clone = _clone_at(local, version, where) if local is not None and version is not None else None
    try:
        if clone is not None:
            fetched = Path(fetch_and_validate_project(f"{clone}#{subdirectory}" if subdirectory else str(clone),
                                                      None, entry_point, params))
        else:
            fetched = Path(fetch_and_validate_project(uri, version, entry_point, params))
    except ExecutionException as exc:
        if clone is not None:
            shutil.rmtree(clone, ignore_errors=True)
        log.warning("fetching %s failed: %s", uri, exc)  # the whole of git's answer, masked by the log's formatter
        said = re.search(r"stderr: '(?:fatal: )?(.+?)'?\s*$", str(exc), re.S)
        if said:
            reason = said.group(1).strip()
        elif str(exc).startswith("Could not find subdirectory"):
            reason = f"it has no subdirectory {subdirectory}"
        else:
            reason = "git failed"
        raise _not_fetched(where, mask_url(reason)) from None
    if clone is not None:
        return fetched, clone
    copy = fetched
    for _ in Path(subdirectory).parts:  # MLflow's temporary clone is above the subdirectory
        copy = copy.parent
    return fetched, copy


def local_directory(uri: str) -> Path | None:
    """The directory a path or `file://` URI names on this machine (without its `#subdirectory`), or None
    for a git URI or a directory this machine doesn't have."""
    if is_git_uri(uri):
        return None
    path = project_directory(uri)
    return path.resolve() if path.is_dir() else None


def _clone_at(directory: Path, version: str, where: str) -> Path:
    import git

    clone = Path(tempfile.mkdtemp(prefix="labmate-project-"))
    try:
        git.Repo.clone_from(str(directory), str(clone), no_checkout=True).git.checkout(version)
    except git.GitCommandError as exc:
        shutil.rmtree(clone, ignore_errors=True)
        log.warning("cloning %s failed: %s", where, exc)
        reason = (exc.stderr or "").strip().removeprefix("stderr:").strip(" '\n").removeprefix("fatal: ") or "git failed"
        raise _not_fetched(where, reason.splitlines()[0]) from None
    return clone


def _not_fetched(where: str, reason: str) -> LabmateError:
    return LabmateError(
        f"the worker could not fetch {where} ({reason})",
        hint="check the project's `uri` and `version` in labmate.toml, and that the worker can reach the repository",
    )


def git_commit(directory: Path) -> str | None:
    from mlflow.utils.git_utils import get_git_commit

    try:
        return get_git_commit(str(directory))
    except Exception:
        return None


def create_run(
    experiment_id: str,
    *,
    run_name: str,
    user: str,
    source: str,
    entry_point: str,
    params: dict[str, str],
    commit: str | None,
    launch_label: str,
    sweep_label: str | None,
) -> str:
    """The run the training process logs into (it finds it through MLFLOW_RUN_ID), tagged as MLflow
    Projects tags its runs, with the parameters as launched."""
    from mlflow.entities import Param

    tags = {
        "mlflow.user": user,
        "mlflow.source.name": source,
        "mlflow.source.type": "PROJECT",
        "mlflow.project.entryPoint": entry_point,
        LAUNCH_TAG: launch_label,
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if sweep_label:
        tags[SWEEP_TAG] = sweep_label
    client = mlflow_io.client()
    run = client.create_run(experiment_id, tags=tags, run_name=run_name)
    if params:
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    return str(run.info.run_id)


def run_env(run_id: str, experiment_id: str) -> dict[str, str]:
    """What MLflow Projects gives its run process, so `mlflow.start_run()` there continues this run."""
    return {
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "MLFLOW_TRACKING_URI": get_settings().mlflow_tracking_uri,
    }


def snapshot(run_id: str) -> Snapshot:
    """One `get_run`: the status and the latest value and step of every metric (no history read)."""
    run = mlflow_io.client().get_run(run_id)
    found = Snapshot(status=str(run.info.status))
    objects = getattr(run.data, "_metric_objs", None) or []
    if objects:
        for metric in objects:
            if metric.value == metric.value:
                found.metrics[metric.key] = float(metric.value)
                found.steps[metric.key] = int(metric.step or 0)
    else:
        found.metrics = {k: float(v) for k, v in run.data.metrics.items() if v == v}
    found.step = max(found.steps.values()) if found.steps else None
    return found


def end_run(run_id: str, status: str) -> None:
    """Make MLflow say what the launch says (the training process may have ended its run otherwise, or not
    at all when it was killed)."""
    client = mlflow_io.client()
    current = client.get_run(run_id).info.status
    if current != status:
        client.set_terminated(run_id, status=status)


def history(run_id: str, metric: str) -> list[tuple[int, float]]:
    return mlflow_io.metric_history(run_id, metric)


def primary_metric(experiment: str, experiment_id: str, logged: list[str]) -> str | None:
    """labmate.toml's primary metric for the experiment, else its MLflow tag, else the first metric logged."""
    configured = get_settings().primary_metrics.get(experiment)
    if configured:
        return configured
    tagged = mlflow_io.client().get_experiment(experiment_id).tags.get(mlflow_io.PRIMARY_METRIC_TAG)
    if tagged:
        return str(tagged)
    return sorted(logged)[0] if logged else None


def previous_best(
    experiment_id: str, metric: str, *, ascending: bool, exclude: list[str], before_ms: int | None
) -> dict[str, Any] | None:
    """The best FINISHED run of the experiment by `metric` that started before `before_ms`, other than `exclude`;
    of tied runs the first (MLflow's own tie-break is the newest: a run that was "not better" became the
    next one's previous best, while `best` named the first)."""
    direction = "ASC" if ascending else "DESC"
    where = "attributes.status = 'FINISHED'"
    if before_ms:
        where += f" and attributes.start_time < {int(before_ms)}"
    records = mlflow_io.search_records(
        [experiment_id], where, order_by=[f"metrics.`{metric}` {direction}", "attributes.start_time ASC"],
        max_results=len(exclude) + 5,
    )
    for record in records:
        value = record.metrics.get(metric)
        if record.run_id in exclude or value is None or value[0] is None:
            continue
        return {"run_id": record.run_id, "name": record.name or record.run_id[:8], "value": float(value[0])}
    return None


def final_metrics(run_ids: list[str]) -> dict[str, dict[str, float]]:
    """Each run's latest metric values (for a sweep's summary)."""
    found: dict[str, dict[str, float]] = {}
    for run_id in run_ids:
        try:
            found[run_id] = snapshot(run_id).metrics
        except Exception as exc:
            log.warning("could not read run %s: %s", run_id, exc)
            found[run_id] = {}
    return found
