"""The run index against MLflow as teams run it: an `mlflow server` over HTTP started here, and
MLflow and the knowledge base on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labmate.settings import reset_settings
from tests.conftest import POSTGRES_URL, service_or_skip
from tests.experiments.conftest import Store, add_run
from tests.ports import free_port


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on a SQLite backend, on loopback; stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", str(root / "art"),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    import requests

    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture
def remote(mlflow_server: str, migrated: str, monkeypatch: pytest.MonkeyPatch, lab_home: Path) -> Store:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    reset_settings()
    client = MlflowClient(tracking_uri=mlflow_server)
    name = f"remote-{uuid.uuid4().hex[:8]}"
    store = Store(mlflow_server, lab_home, client, client.create_experiment(name))
    for i, f1s in enumerate(([0.5, 0.6, 0.7], [0.6, 0.7, 0.9], [0.4, 0.5, 0.55])):
        add_run(store, f"run-{i}", user="dana", params={"alpha": 10.0**-i, "seed": 1}, f1s=f1s, start_hour=i)
    store.runs["__name__"] = name
    return store


class Calls:
    """Counts the HTTP requests MLflow's client makes (instrumentation around the real call)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import mlflow.utils.rest_utils as rest_utils

        self.paths: list[str] = []
        real = rest_utils.http_request

        def counted(host_creds, endpoint, method, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.paths.append(endpoint)
            return real(host_creds, endpoint, method, *args, **kwargs)

        monkeypatch.setattr(rest_utils, "http_request", counted)


def test_compare_over_http_batches_its_requests(remote: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.experiments.compare import compare

    calls = Calls(monkeypatch)
    ids = [remote.runs["run-0"], remote.runs["run-1"][:8]]
    [(_t, ctx)] = compare(ids)
    assert [r["name"] for r in ctx["runs"]] == ["run-0", "run-1"] and len(ctx["files"]) == 3
    histories = [p for p in calls.paths if "history" in p]
    assert histories == ["/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"] * 3  # one per metric, both runs
    assert not any(p.endswith("/metrics/get-history") for p in calls.paths)
    assert len(calls.paths) <= 7, calls.paths


def test_summary_find_and_sync_over_http(remote: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.experiments import resolve, sync
    from tasks.experiments.query import find
    from tasks.experiments.summary import summary
    from tasks.experiments.sync import refresh

    monkeypatch.setattr(sync, "PAGE", 2)  # pages on start time overlap at their boundary: none may be lost
    add_run(remote, "run-3", user="sam", params={"alpha": 1.0, "seed": 1}, f1s=[0.1], start_hour=3)

    name = remote.runs["__name__"]
    [(_t, ctx)] = summary(name, "val_f1", 3)
    assert [r["name"] for r in ctx["runs"]] == ["run-1", "run-0", "run-2"] and ctx["total"] == 4
    [(_t, found)] = find(name, [{"name": "alpha", "op": "<", "value": "0.5", "numeric": True}], "val_f1", None, 5)
    assert [r["name"] for r in found["runs"]] == ["run-1", "run-2"]
    live = remote.client.create_run(remote.experiment_id, run_name="live")
    remote.client.log_metric(live.info.run_id, "val_f1", 0.95)
    from datetime import UTC, datetime, timedelta

    refresh(resolve.experiment(name), now=datetime.now(UTC) + timedelta(minutes=2))
    [(_t, after)] = summary(name, "val_f1", 1)
    assert after["runs"][0]["name"] == "live" and after["runs"][0]["status"] == "RUNNING"


@pytest.fixture
def postgres_mlflow(postgres_url: str, monkeypatch: pytest.MonkeyPatch, lab_home: Path) -> Iterator[Store]:
    """The knowledge base on PostgreSQL and MLflow's store in its own PostgreSQL database."""
    from mlflow import MlflowClient

    from bench import mlflow_stores

    base = service_or_skip("PostgreSQL", POSTGRES_URL)
    name = f"mlflow_test_{uuid.uuid4().hex[:10]}"
    url = mlflow_stores.postgres_database(base, name)
    uri = url.replace("postgresql://", "postgresql+psycopg://")
    monkeypatch.setenv("LABMATE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reset_settings()
    client = MlflowClient(tracking_uri=uri)
    store = Store(uri, lab_home, client, client.create_experiment("pg-agent"))
    yield store
    from tasks.mlflow_io.reader import sql_engine

    engine = sql_engine(uri)
    if engine is not None:
        engine.dispose()
    client._tracking_client.store.engine.dispose()  # MLflow's own pool, before the database goes
    mlflow_stores.drop_postgres_database(base, name)


@pytest.mark.postgres
def test_index_on_postgresql_for_a_postgresql_mlflow_store(postgres_mlflow: Store) -> None:
    from bench import mlflow_stores
    from tasks import mlflow_io
    from tasks.experiments import resolve, sync
    from tasks.experiments.query import find
    from tasks.experiments.summary import summary
    from tasks.mlflow_io.reader import SqlReader

    assert isinstance(mlflow_io.run_reader(), SqlReader)
    mlflow_stores.insert(postgres_mlflow.uri, postgres_mlflow.experiment_id, 120, seed=3)
    [(_t, ctx)] = summary("pg-agent", "val_f1", 3)
    assert ctx["total"] == 120 and sum(c["count"] for c in ctx["counts"]) == 120
    parents = {"run-0", "run-50", "run-100"}  # the generator nests runs 1-10 under run-0, and so on
    assert not parents & {r["name"] for r in ctx["runs"]}
    [(_t, found)] = find("pg-agent", [{"name": "alpha", "op": "<", "value": "0.001", "numeric": True}], "val_f1", None, 5)
    assert found["runs"] and all(r["metrics"] for r in found["runs"])
    experiment = resolve.experiment("pg-agent")
    assert sync.progress(experiment).ready and sync.progress(experiment).read == 120
