"""A small MLflow store per test: experiment `sales-agent` with finished, failed and deleted runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labmate.settings import reset_settings
from tests.conftest import built_once

BASE_MS = 1_795_000_000_000  # 2026-11-18
HOUR = 3_600_000


@dataclass
class Store:
    uri: str
    root: Path
    client: Any
    experiment_id: str = ""
    runs: dict[str, str] = field(default_factory=dict)  # run name -> run id


def _history(client: Any, run_id: str, start: int, f1s: list[float]) -> None:
    from mlflow.entities import Metric

    metrics = []
    for step, f1 in enumerate(f1s, 1):
        ts = start + step * 1000
        metrics += [
            Metric("val_f1", f1, ts, step),
            Metric("train_loss", 1.0 - f1, ts, step),
            Metric("val_accuracy", f1 + 0.05, ts, step),
        ]
    client.log_batch(run_id, metrics=metrics)


def add_run(
    store: Store,
    name: str,
    *,
    user: str,
    params: dict[str, Any],
    f1s: list[float],
    start_hour: int,
    status: str = "FINISHED",
    experiment_id: str | None = None,
) -> str:
    c = store.client
    start = BASE_MS + start_hour * HOUR
    run = c.create_run(
        experiment_id or store.experiment_id, start_time=start, tags={"mlflow.user": user, "team": "nlp"}, run_name=name
    )
    run_id = run.info.run_id
    from mlflow.entities import Param

    c.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    if f1s:
        _history(c, run_id, start, f1s)
    c.set_terminated(run_id, status=status, end_time=start + HOUR)
    store.runs[name] = run_id
    return run_id


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MLflow's schema takes seconds to create; tests copy this empty store instead."""

    def build(folder: Path) -> None:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()

    return built_once(tmp_path_factory, "mlflow-template", build) / "mlflow.db"


@pytest.fixture
def mlflow_store(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch, migrated: str, empty_mlflow_db: Path
) -> Iterator[Store]:
    from mlflow import MlflowClient

    root = lab_home / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_mlflow_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reset_settings()
    client = MlflowClient(tracking_uri=uri)
    yield Store(uri, root, client)
    reset_settings()


@pytest.fixture
def sales(mlflow_store: Store) -> Store:
    """sales-agent: 4 finished runs (improving over time), 1 failed with partial history, 1 deleted."""
    s = mlflow_store
    s.experiment_id = s.client.create_experiment("sales-agent", artifact_location=str(s.root / "artifacts"))
    common = {"epochs": 3, "seed": 1}
    add_run(
        s,
        "baseline",
        user="dana",
        params={**common, "alpha": 0.001, "ngram_max": 2},
        f1s=[0.6, 0.7, 0.75],
        start_hour=0,
    )
    add_run(
        s, "bigram", user="sam", params={**common, "alpha": 0.0001, "ngram_max": 2}, f1s=[0.65, 0.78, 0.8], start_hour=2
    )
    add_run(
        s,
        "unigram-v2",
        user="sam",
        params={**common, "alpha": 0.0001, "ngram_max": 1},
        f1s=[0.7, 0.82, 0.86],
        start_hour=4,
    )
    add_run(
        s,
        "strong-reg",
        user="lee",
        params={**common, "alpha": 0.01, "ngram_max": 1},
        f1s=[0.5, 0.55, 0.6],
        start_hour=6,
    )
    add_run(
        s,
        "crash-mid",
        user="lee",
        params={**common, "alpha": 0.0001, "ngram_max": 2},
        f1s=[0.6],
        start_hour=8,
        status="FAILED",
    )
    gone = add_run(
        s, "deleted-one", user="lee", params={**common, "alpha": 0.5, "ngram_max": 2}, f1s=[0.99], start_hour=9
    )
    s.client.delete_run(gone)
    s.client.create_experiment("sales-agent-old", artifact_location=str(s.root / "artifacts-old"))
    return s
