"""The one place that talks to MLflow. Imported by workers only.

`run_reader()` gives the run index its pages, and the experiment lookups read names and tags
(`reader.py`: plain SELECTs on MLflow's own tables for SQLite/PostgreSQL stores, the client
otherwise); everything else goes through `MlflowClient`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from labmate.settings import get_settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from models.run_index import RunRecord

DECISIONS_TAG = "labmate.decisions"
PRIMARY_METRIC_TAG = "labmate.primary_metric"
DIRECTION_TAG = "labmate.direction."
"""Experiment tag `labmate.direction.<metric>` = `lower` or `higher` (also asc/desc, min/max)."""
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextmanager
def process_uris(tracking_uri: str, registry_uri: str | None = None) -> Iterator[None]:
    """Point MLflow's process-wide URIs at a store for the duration (mlflow.projects and
    pyfunc.load_model read only those), then restore them: the globals and the environment
    variables mlflow.set_tracking_uri also writes."""
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved_env = {name: os.environ.get(name) for name in URI_VARIABLES}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def open_client(tracking_uri: str, registry_uri: str | None = None) -> MlflowClient:
    """A client whose SQLite stores exist. MLflow creates a store's tables the first time a client
    uses it; two processes doing that at once (two first commands on a new home) made one fail, and
    could leave the store broken for good ("Online migration expected to match one row"). That first
    use happens here, under a file lock beside the database: MLflow has no lock of its own."""
    from mlflow.tracking import MlflowClient

    from models.db import sqlite_file_lock

    registry_uri = registry_uri or tracking_uri
    with sqlite_file_lock(tracking_uri, ".open-lock"):  # the client opens the tracking store
        opened = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    if registry_uri.startswith("sqlite:"):
        with sqlite_file_lock(registry_uri, ".open-lock"):  # the registry's, at its first use
            opened.search_registered_models(max_results=1)
    return opened


@lru_cache(maxsize=4)
def _client(tracking_uri: str) -> MlflowClient:
    return open_client(tracking_uri)


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
    return {"experiment_id": experiment.experiment_id, "summary": f"id {experiment.experiment_id}"}  # shown after its name


# --- Experiments in chat: plain records out, so nothing above this module sees mlflow types. ---

SEARCH_PAGE = 1_000
SKIPPED_TAGS = ("mlflow.log-model.history",)


def _described(experiment_id: str, name: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "experiment_id": experiment_id,
        "name": name,
        "primary_metric": tags.get(PRIMARY_METRIC_TAG),
        "directions": {k[len(DIRECTION_TAG) :]: v for k, v in tags.items() if k.startswith(DIRECTION_TAG)},
    }


def _experiment(experiment: Any) -> dict[str, Any] | None:
    if experiment is None or experiment.lifecycle_stage == "deleted":
        return None
    return _described(experiment.experiment_id, experiment.name, dict(experiment.tags or {}))


def _sql_experiments(**where: str) -> list[dict[str, Any]] | None:
    """From the store's own tables when it is a database we read directly (see `reader.py`), so a
    question answered from the run index doesn't import MLflow; None means: ask the client."""
    from tasks.mlflow_io.reader import SqlReader, sql_engine

    engine = sql_engine(tracking_uri())
    if engine is None:
        return None
    return [_described(e["experiment_id"], e["name"], e["tags"]) for e in SqlReader(engine).experiments(**where)]


def experiment_by_name(name: str) -> dict[str, Any] | None:
    found = _sql_experiments(name=name)
    if found is not None:
        return found[0] if found else None
    return _experiment(client().get_experiment_by_name(name))


def experiment_by_id(experiment_id: str) -> dict[str, Any] | None:
    found = _sql_experiments(experiment_id=experiment_id)
    if found is not None:
        return found[0] if found else None
    try:
        return _experiment(client().get_experiment(experiment_id))
    except Exception as exc:
        if is_missing(exc):
            return None
        raise


def experiments() -> list[dict[str, Any]]:
    """Every active experiment (id, name, tags), for prefixes and suggestions."""
    found = _sql_experiments()
    if found is not None:
        return found
    from mlflow.entities import ViewType

    c = client()
    found: list[dict[str, Any]] = []
    token = None
    while True:
        page = c.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        found.extend(e for e in (_experiment(x) for x in page) if e)
        token = page.token
        if not token:
            return found


def experiment_names() -> list[str]:
    return [e["name"] for e in experiments()]


def experiment_ids() -> list[str]:
    return [e["experiment_id"] for e in experiments()]


def tracking_uri() -> str:
    return get_settings().mlflow_tracking_uri


def store() -> str:
    """The key the run index files this tracking store's runs under."""
    from models.run_index import store_key

    return store_key(tracking_uri())


def run_reader() -> Any:
    from tasks.mlflow_io.reader import ClientReader, SqlReader, sql_engine

    engine = sql_engine(tracking_uri())
    return SqlReader(engine) if engine is not None else ClientReader(client(), run_record)


FILE_STORE_FIX = (
    "Point MLFLOW_TRACKING_URI at a database store (run `mlflow migrate-filestore` to move the runs, then use "
    "`sqlite:///mlflow.db` or your server), or set MLFLOW_ALLOW_FILE_STORE=true where labmate's workers run."
)


def user_error(exc: BaseException) -> Any:
    """An MLflow failure the person asking can act on, as a LabmateError (MLflow's reason and the
    fix in one line); None for anything else."""
    from labmate.errors import LabmateError
    from labmate.settings import mask_url

    text = str(exc).strip()
    uri = mask_url(tracking_uri())  # the message goes to chat
    if "filesystem tracking backend" in text or (uri.startswith("file:") and "Mlflow" in type(exc).__name__):
        reason = text.split(". ")[0].rstrip(".")
        return LabmateError(f"MLflow refuses the tracking store `{uri}`: {reason}.", hint=FILE_STORE_FIX)
    lowered = text.lower()
    if any(s in lowered for s in ("max retries exceeded", "connection refused", "failed to establish")):
        return LabmateError(
            f"MLflow at `{uri}` can't be reached right now ({type(exc).__name__}).",
            hint="Check that the tracking server is up and MLFLOW_TRACKING_URI is right, then ask again.",
        )
    return None


def client_error(exc: BaseException) -> Any:
    """`user_error` for a failure of MLflow's own client (MLflow's errors, its HTTP client's), for code
    that also meets the knowledge base's errors: a database "connection refused" there is not MLflow's."""
    if not type(exc).__module__.startswith(("mlflow", "requests", "urllib3")):
        return None
    return user_error(exc)


def _value(value: float) -> float | None:
    return None if value != value else float(value)  # NaN -> None


def run_record(run: Any) -> RunRecord:
    from models.run_index import RunRecord

    info, data = run.info, run.data
    metric_objs = getattr(data, "_metric_objs", None) or []
    if metric_objs:
        metrics = {m.key: (_value(m.value), int(m.step or 0), int(m.timestamp or 0)) for m in metric_objs}
    else:
        metrics = {k: (_value(v), 0, 0) for k, v in data.metrics.items()}
    tags = {k: v for k, v in data.tags.items() if k not in SKIPPED_TAGS}
    return RunRecord(
        run_id=info.run_id,
        experiment_id=info.experiment_id,
        name=info.run_name or "",
        status=info.status,
        user=tags.get("mlflow.user") or info.user_id or "",
        start_time=int(info.start_time or 0),
        end_time=int(info.end_time) if info.end_time else None,
        deleted=info.lifecycle_stage == "deleted",
        metrics=metrics,
        params=dict(data.params),
        tags=tags,
    )


def search_records(
    experiment_ids: list[str],
    filter_string: str = "",
    *,
    order_by: list[str] | None = None,
    max_results: int | None = None,
    view: Any = None,
) -> list[RunRecord]:
    """Runs matching an MLflow filter, as plain records (all pages unless `max_results`)."""
    from mlflow.entities import ViewType

    c = client()
    view = ViewType.ACTIVE_ONLY if view is None else view
    records: list[RunRecord] = []
    token = None
    while True:
        page_size = min(SEARCH_PAGE, max_results - len(records)) if max_results else SEARCH_PAGE
        page = c.search_runs(
            experiment_ids, filter_string, run_view_type=view, max_results=page_size, order_by=order_by, page_token=token
        )
        records.extend(run_record(run) for run in page)
        token = page.token
        if not token or (max_results and len(records) >= max_results):
            return records


def get_record(run_id: str) -> RunRecord | None:
    try:
        return run_record(client().get_run(run_id))
    except Exception as exc:
        if is_missing(exc):
            return None
        raise


def find_records(prefix: str, name: str, experiment_ids: list[str] | None = None) -> list[RunRecord]:
    """Runs whose id starts with `prefix` (when given) or whose name is `name`, in these experiments
    (all active ones when None), deleted runs included so the answer can say so."""
    from mlflow.entities import ViewType

    from tasks.mlflow_io.reader import SqlReader

    source = run_reader()
    if isinstance(source, SqlReader):
        return source.find(prefix, name, experiment_ids)
    ids = experiment_ids if experiment_ids is not None else globals()["experiment_ids"]()
    if not ids:
        return []
    found: dict[str, RunRecord] = {}
    quoted = name.replace("'", "\\'")
    searches = [f"attributes.run_name = '{quoted}'"] if name else []
    if prefix:
        searches.insert(0, f"attributes.run_id LIKE '{prefix}%'")
    for filter_string in searches:
        for r in search_records(ids, filter_string, max_results=20, view=ViewType.ALL):
            found[r.run_id] = r
    return list(found.values())


def records_by_ids(run_ids: list[str]) -> list[RunRecord]:
    """Full records of runs by id, across experiments, in one search per 100 ids."""
    ids = experiment_ids()
    records: list[RunRecord] = []
    from mlflow.entities import ViewType

    for i in range(0, len(run_ids), 100):
        quoted = ", ".join(f"'{r}'" for r in run_ids[i : i + 100])
        records.extend(search_records(ids, f"attributes.run_id IN ({quoted})", view=ViewType.ALL))
    return records


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs in step order; NaN dropped."""
    history = client().get_metric_history(run_id, key)
    points = [(int(m.step), float(m.value)) for m in history if m.value == m.value]
    points.sort()
    return points


def metric_histories(
    run_ids: list[str], key: str, max_points: int = 1000, steps: dict[str, int] | None = None
) -> dict[str, list[tuple[int, float]]]:
    """Each run's history of `key`, at most about `max_points` points per run (for charts).

    Short histories (by the `steps` hint: each run's latest step) come in one bulk read; long
    ones are sampled by MLflow in SQL (`get_metric_history_bulk_interval`, what its UI charts
    use), so a 100k-step history costs about what a 1k one does.
    """
    found: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in run_ids}
    store = getattr(getattr(client(), "_tracking_client", None), "store", None)
    if type(store).__name__ == "RestStore":
        remote = _rest_histories(store, run_ids, key, max_points)
        if remote is not None:
            return remote
        return {run_id: _thin(metric_history(run_id, key), max_points) for run_id in run_ids}
    bulk = getattr(store, "get_metric_history_bulk", None)
    sample = getattr(store, "get_metric_history_bulk_interval", None)
    short = steps is not None and all(steps.get(r, max_points) < max_points for r in run_ids)
    metrics: list[Any] | None = None
    if short and bulk is not None:
        limit = max_points * len(run_ids)
        metrics = list(bulk(run_ids, key, limit))
        if len(metrics) >= limit:
            metrics = None  # longer than the hint said: sample instead
    if metrics is None and sample is not None:
        metrics = list(sample(run_ids, key, max_points, None, None))
    if metrics is None:
        return {run_id: metric_history(run_id, key) for run_id in run_ids}
    for metric in metrics:
        if metric.value == metric.value:
            found[metric.run_id].append((int(metric.step), float(metric.value)))
    for points in found.values():
        points.sort()
    return found


REST_BULK_RUNS = 100  # what the server's get-history-bulk-interval accepts per request


def _rest_histories(
    store: Any, run_ids: list[str], key: str, max_points: int
) -> dict[str, list[tuple[int, float]]] | None:
    """All runs' histories of one metric in one request per 100 runs, sampled by the server (the
    endpoint MLflow's UI charts use). The client's own `get_metric_history_bulk_interval` reads
    every run's history twice over REST, one request per run each time. None if the server
    doesn't offer the endpoint."""
    from mlflow.utils.rest_utils import http_request

    found: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in run_ids}
    for i in range(0, len(run_ids), REST_BULK_RUNS):
        params = {"run_ids": run_ids[i : i + REST_BULK_RUNS], "metric_key": key, "max_results": min(max_points, 2500)}
        try:
            response = http_request(
                store.get_host_creds(), "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval", "GET", params=params
            )
        except Exception:
            return None
        if response.status_code != 200:
            return None
        for metric in response.json().get("metrics", []):
            value = metric.get("value")
            if isinstance(value, int | float) and value == value and metric.get("run_id") in found:
                found[metric["run_id"]].append((int(metric.get("step", 0)), float(value)))
    for points in found.values():
        points.sort()
    return found


def _thin(points: list[tuple[int, float]], most: int) -> list[tuple[int, float]]:
    if len(points) <= most:
        return points
    step = -(-len(points) // most)
    return points[::step]
