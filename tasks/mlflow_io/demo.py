"""`labmate demo`: fill an MLflow store with a small, real sales-agent experiment and model.

Trains the model of the MLflow Project in ``examples/sales_agent`` (its ``train.py``) a handful of
times with different parameters, in this process: one import of MLflow and scikit-learn serves
all eight runs (a project run per subprocess paid it eight times, most of the demo's time).
Six runs FINISH, one FAILS after 2 of 5 epochs and one FAILS before its first epoch (on purpose:
the failure is the expected outcome, not shown as an error). Only the two runs that get
registered log the agent model. Then model ``sales-agent`` is registered twice:
version from run ``baseline`` (reply templates v1) gets alias ``production``, version from run
``unigram-v2`` (templates v2, better val_f1) gets alias ``candidate``.

Idempotent: demo runs carry tags ``labmate.demo=1`` and ``labmate.demo_key=<spec key>``; a spec
whose run already ended with the expected status is not run again, a run already registered is
not registered again, and aliases are only moved when they point elsewhere.

mlflow is imported inside functions: this module is imported by the Slack-facing process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

def _project_dir() -> Path:
    """The checkout's examples/ (editable installs), else the working directory's (the Docker image
    installs the package into site-packages and keeps examples/ in its WORKDIR)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = root / "examples" / "sales_agent"
        if (candidate / "MLproject").is_file():
            return candidate
    raise DemoError("the sales_agent example is missing: run `labmate demo` from the labmate checkout")


PROJECT_DIR = Path(__file__).resolve().parents[2] / "examples" / "sales_agent"
EXPERIMENT_NAME = "sales-agent"
MODEL_NAME = "sales-agent"
MODEL_ARTIFACT = "agent"
DEMO_TAG = "labmate.demo"
KEY_TAG = "labmate.demo_key"
PRODUCTION_ALIAS = "production"
CANDIDATE_ALIAS = "candidate"


class DemoError(RuntimeError):
    """The demo could not build the expected store (e.g. a run that should finish failed)."""


@dataclass(frozen=True)
class DemoRun:
    key: str
    user: str
    params: dict[str, int | float]

    @property
    def expected_status(self) -> str:
        return "FAILED" if int(self.params.get("fail_at_epoch", -1)) >= 0 else "FINISHED"

    @property
    def run_name(self) -> str:
        return f"demo-{self.key}"


def _params(alpha: float, epochs: int, ngram_max: int, seed: int, **extra: int) -> dict[str, int | float]:
    return {"alpha": alpha, "epochs": epochs, "ngram_max": ngram_max, "seed": seed, **extra}


DEMO_RUNS: tuple[DemoRun, ...] = (
    DemoRun("baseline", "dana", _params(1e-3, 5, 2, 1, reply_version=1)),
    DemoRun("strong-reg", "lee", _params(1e-2, 3, 1, 1, reply_version=1)),
    DemoRun("bigram", "sam", _params(1e-4, 5, 2, 1, reply_version=1)),
    DemoRun("trigram-v2", "dana", _params(3e-4, 5, 3, 2, reply_version=2)),
    DemoRun("unigram-v2", "sam", _params(1e-4, 5, 1, 2, reply_version=2)),
    DemoRun("tiny-alpha-v2", "lee", _params(3e-5, 8, 2, 2, reply_version=2)),
    DemoRun("crash-mid", "lee", _params(1e-4, 5, 2, 3, fail_at_epoch=2)),
    DemoRun("crash-early", "sam", _params(1e-4, 5, 2, 4, fail_at_epoch=0)),
)
# Registered in this order, so production is version 1 (older, worse) and candidate version 2.
REGISTERED: tuple[tuple[str, str], ...] = (("baseline", PRODUCTION_ALIAS), ("unigram-v2", CANDIDATE_ALIAS))


@dataclass
class DemoReport:
    experiment_name: str
    experiment_id: str
    model_name: str
    runs_by_status: dict[str, list[str]] = field(default_factory=dict)  # status -> run ids
    run_ids: dict[str, str] = field(default_factory=dict)  # demo key -> run id
    model_versions: dict[str, str] = field(default_factory=dict)  # demo key -> model version
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> model version
    created_runs: list[str] = field(default_factory=list)  # demo keys run this time
    created_versions: list[str] = field(default_factory=list)
    moved_aliases: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def created(self) -> bool:
        return bool(self.created_runs or self.created_versions or self.moved_aliases)


def run_demo(
    tracking_uri: str,
    *,
    registry_uri: str | None = None,
    artifact_location: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoReport:
    """Build (or complete) the demo in the given store and describe what is there.

    ``artifact_location`` defaults to ``<db dir>/mlartifacts`` for ``sqlite:///`` stores, so an
    embedded store keeps its artifacts next to the database (never in the current directory).
    While it runs it temporarily sets mlflow's global tracking/registry URIs and PATH (mlflow
    Projects reads both), so do not run it concurrently with other mlflow work in one process.
    """

    from models.db import sqlite_file_lock
    from tasks.mlflow_io import open_client

    say = progress or (lambda _msg: None)
    started = time.monotonic()
    registered = {key for key, _alias in REGISTERED}
    # Two demos at once would both train every run; the second waits, then finds the runs made.
    with sqlite_file_lock(tracking_uri, ".demo-lock"), _mlflow_uris(tracking_uri, registry_uri), _quiet_mlflow():
        client = open_client(tracking_uri, registry_uri)
        experiment_id = _ensure_experiment(client, artifact_location or _default_artifacts(tracking_uri))
        report = DemoReport(EXPERIMENT_NAME, experiment_id, MODEL_NAME)
        for number, spec in enumerate(DEMO_RUNS, start=1):
            step = f"[{number}/{len(DEMO_RUNS)}]"
            run = _existing_run(client, experiment_id, spec)
            if run is None:
                say(f"{step} training {spec.key} as {spec.user}: {_format_params(spec.params)}")
                run = _train(client, experiment_id, spec, log_model=spec.key in registered)
                report.created_runs.append(spec.key)
                say(f"{step} {spec.key}: {_describe_outcome(run, spec)}")
            else:
                say(f"{step} {spec.key}: already there, {_describe_outcome(run, spec)}")
            report.run_ids[spec.key] = run.info.run_id
        _register(client, report, say)
        report.runs_by_status = _runs_by_status(client, experiment_id)
    report.seconds = round(time.monotonic() - started, 1)
    say(f"demo ready in {report.seconds}s ({'created' if report.created else 'nothing new'})")
    return report


@contextmanager
def _mlflow_uris(tracking_uri: str, registry_uri: str | None) -> Iterator[None]:
    """mlflow.projects reads the process-global URIs (and hands them to the run subprocess)."""
    from tasks.mlflow_io import process_uris

    with process_uris(tracking_uri, registry_uri):
        yield


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Logging the demo's agent makes MLflow warn that `predict` has no type hints and that the
    model is pickled (both true, both by design here); on the demo's output they read like
    problems. Silence those two, here and in the subprocess MLflow starts while logging a model."""
    import logging

    saved = {name: os.environ.get(name) for name in ("PYTHONWARNINGS", "MLFLOW_LOGGING_LEVEL")}
    os.environ["PYTHONWARNINGS"] = "ignore::UserWarning"
    os.environ["MLFLOW_LOGGING_LEVEL"] = "ERROR"
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pyfunc_log.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _default_artifacts(tracking_uri: str) -> str | None:
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or ":memory:" in tracking_uri:
        return None
    db_path = Path(tracking_uri[len(prefix) :].split("?", 1)[0]).resolve()
    return str(db_path.parent / "mlartifacts")


def _ensure_experiment(client: MlflowClient, artifact_location: str | None) -> str:
    """The demo experiment, tagged so summaries rank it by val_f1 (see tasks/experiments/summary.py)."""
    from tasks.mlflow_io import PRIMARY_METRIC_TAG

    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        tags = {DEMO_TAG: "1", PRIMARY_METRIC_TAG: "val_f1"}
        return client.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location, tags=tags)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if experiment.tags.get(PRIMARY_METRIC_TAG) != "val_f1":
        client.set_experiment_tag(experiment.experiment_id, PRIMARY_METRIC_TAG, "val_f1")
    return experiment.experiment_id


def _existing_run(client: MlflowClient, experiment_id: str, spec: DemoRun) -> Run | None:
    """The newest demo run of this spec that ended as expected (stale/broken ones are ignored)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KEY_TAG}` = '{spec.key}' and attributes.status = '{spec.expected_status}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _training_module() -> Any:
    """examples/sales_agent/train.py, imported once (it imports MLflow, pandas and scikit-learn)."""
    cached = sys.modules.get("labmate_demo_train")
    if cached is not None:
        return cached
    path = _project_dir() / "train.py"
    spec = importlib.util.spec_from_file_location("labmate_demo_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.dont_write_bytecode  # train.py turns .pyc writing off for its own directory's sake
    show = warnings.showwarning
    sys.dont_write_bytecode = True  # and its own .pyc would land in the project too (issue 9's review)
    try:
        # Defining the agent class makes MLflow warn about `predict`'s type hints through its own
        # "once" filter, which overrides any filter of ours: drop that one message on its way out.
        warnings.showwarning = lambda message, *args, **kwargs: (
            None if "type hints" in str(message) else show(message, *args, **kwargs)
        )
        spec.loader.exec_module(module)
    finally:
        warnings.showwarning = show
        sys.dont_write_bytecode = saved
    sys.modules["labmate_demo_train"] = module
    return module


def _train(client: MlflowClient, experiment_id: str, spec: DemoRun, *, log_model: bool) -> Run:
    import mlflow

    train = _training_module()
    args = train.parse_args([f"--{name.replace('_', '-')}={value}" for name, value in spec.params.items()])
    tags = {DEMO_TAG: "1", KEY_TAG: spec.key, "mlflow.user": spec.user, "mlflow.source.name": "examples/sales_agent/train.py"}
    run_id = None
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=spec.run_name, tags=tags) as active:
            run_id = active.info.run_id
            train.fit_and_log(args, log_model=log_model)
    except train.InjectedFailure:
        pass  # the failure this run was made for: MLflow has marked it FAILED
    if run_id is None:
        raise DemoError(f"demo run {spec.key} could not be started")
    run = client.get_run(run_id)
    _check_outcome(client, run, spec)
    return run


def _check_outcome(client: MlflowClient, run: Run, spec: DemoRun) -> None:
    """A crash run must fail exactly at its injected epoch, not from some unrelated error."""
    status = run.info.status
    if status != spec.expected_status:
        raise DemoError(f"demo run {spec.key} ({run.info.run_id}) ended {status}, expected {spec.expected_status}")
    fail_at = int(spec.params.get("fail_at_epoch", -1))
    if fail_at >= 0:
        steps = len(client.get_metric_history(run.info.run_id, "val_f1"))
        if steps != fail_at:
            raise DemoError(f"demo run {spec.key} failed after {steps} epochs, expected {fail_at}")


def _register(client: MlflowClient, report: DemoReport, say: Callable[[str], None]) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            MODEL_NAME,
            tags={DEMO_TAG: "1"},
            description="Demo sales assistant: TF-IDF + SGD intent classifier with templated replies.",
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    versions = {mv.run_id: mv.version for mv in client.search_model_versions(f"name = '{MODEL_NAME}'")}
    for key, alias in REGISTERED:
        run_id = report.run_ids[key]
        version = versions.get(run_id)
        if version is None:
            version = _create_version(client, run_id, key)
            report.created_versions.append(version)
            say(f"registered {MODEL_NAME} v{version} from {key}")
        report.model_versions[key] = str(version)
        current = client.get_registered_model(MODEL_NAME).aliases.get(alias)  # int in mlflow 3
        if current is None or str(current) != str(version):
            client.set_registered_model_alias(MODEL_NAME, alias, str(version))
            report.moved_aliases.append(alias)
            say(f"alias {alias} -> v{version}")
        report.aliases[alias] = str(version)


def _create_version(client: MlflowClient, run_id: str, key: str) -> str:
    outputs = client.get_run(run_id).outputs
    model_ids = [output.model_id for output in (outputs.model_outputs if outputs else [])]
    if not model_ids:
        raise DemoError(f"demo run {key} ({run_id}) logged no model")
    model_version = client.create_model_version(
        MODEL_NAME,
        source=f"models:/{model_ids[-1]}",
        run_id=run_id,
        model_id=model_ids[-1],
        tags={DEMO_TAG: "1", KEY_TAG: key},
        description=f"labmate demo: trained by run {key}",
    )
    return str(model_version.version)


def _runs_by_status(client: MlflowClient, experiment_id: str) -> dict[str, list[str]]:
    by_status: dict[str, list[str]] = {}
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{DEMO_TAG}` = '1'", max_results=1000)
    for run in runs:
        by_status.setdefault(run.info.status, []).append(run.info.run_id)
    return by_status


def _format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in params.items())


def _format_f1(run: Run) -> str:
    f1 = run.data.metrics.get("val_f1")
    return "" if f1 is None else f" (val_f1={f1:.3f})"


def _describe_outcome(run: Run, spec: DemoRun) -> str:
    fail_at = int(spec.params.get("fail_at_epoch", -1))
    if fail_at >= 0 and run.info.status == "FAILED":
        when = "before its first epoch" if fail_at == 0 else f"after {fail_at} epochs"
        return f"failed {when}, as planned (the demo needs failed runs to show){_format_f1(run)}"
    return f"{run.info.status.lower()}{_format_f1(run)}"
