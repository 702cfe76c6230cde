"""MLflow calls and time per command against a real `mlflow server` (HTTP), beside the same
commands on the same store read directly (SQLite).

    .venv/bin/python bench/bench_rest.py [--runs 10000] [--dir /tmp/labmate-bench-rest]

One SQLite MLflow store with --runs runs (bench/mlflow_stores.py: 5 % running, nested runs) plus
two runs with 1,000-step histories for `compare`; an `mlflow server` is started on loopback over
it. Each command runs in process (the job functions the worker runs) twice per transport: the
first `summary` builds the index; every other figure is the second, warm run. HTTP requests are
counted by wrapping MLflow's `rest_utils.http_request` (the real call is made); direct reads are
counted as SQL statements on MLflow's database.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import mlflow_stores  # noqa: E402
from bench.config import empty_config  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db: Path, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    import requests

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
         f"sqlite:///{db}", "--default-artifact-root", str(root / "art"), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"),
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as docker-compose.yml runs it
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("mlflow server did not start; see " + str(root / "server.log"))


class Counting:
    def __init__(self) -> None:
        import mlflow.utils.rest_utils as rest_utils

        self.calls: Counter[str] = Counter()
        real = rest_utils.http_request

        def counted(host_creds, endpoint, method, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.calls[endpoint.rsplit("/", 2)[-2] + "/" + endpoint.rsplit("/", 1)[-1]] += 1
            return real(host_creds, endpoint, method, *args, **kwargs)

        rest_utils.http_request = counted
        self.statements = 0

    def count_sql(self, engine: Any) -> None:
        from sqlalchemy import event

        def before(*_args: Any) -> None:
            self.statements += 1

        event.listen(engine, "before_cursor_execute", before)

    def reset(self) -> None:
        self.calls.clear()
        self.statements = 0


def log_history_runs(uri: str, experiment_id: str) -> list[str]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=uri)
    ids = []
    for name, shift in (("hist-a", 0.0), ("hist-b", 0.1)):
        run = client.create_run(experiment_id, run_name=name)
        now = int(time.time() * 1000)
        for start in range(0, 1000, 500):
            batch = []
            for step in range(start, start + 500):
                batch += [Metric("val_f1", shift + step / 2000, now + step, step), Metric("train_loss", 1 - step / 2000, now + step, step)]
            client.log_batch(run.info.run_id, metrics=batch)
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return ids


def commands(history_ids: list[str]) -> list[tuple[str, Callable[[], Any]]]:
    from tasks.experiments.compare import compare
    from tasks.experiments.query import find, runs
    from tasks.experiments.summary import best, summary

    param = [{"name": "alpha", "op": "<", "value": "0.001", "numeric": True}]
    return [
        ("summary (first: builds the index)", lambda: summary("bench", "val_f1", 5)),
        ("summary", lambda: summary("bench", "val_f1", 5)),
        ("best", lambda: best("bench", "val_f1", None)),
        ("find where alpha < 0.001 order by val_f1", lambda: find("bench", param, "val_f1", None, 10)),
        ("runs status:failed", lambda: runs("bench", "FAILED", None, None, [])),
        ("compare 2 runs (8-char prefixes), 2 metrics × 1,000 steps", lambda: compare([i[:8] for i in history_ids])),
    ]


def run_all(label: str, uri: str, home: Path, counting: Counting, history_ids: list[str]) -> dict[str, tuple[int, float]]:
    from labmate.bootstrap import prepare
    from labmate.settings import reset_settings
    from tasks.experiments import resolve
    from tasks.mlflow_io.reader import sql_engine

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    empty_config(home / "labmate.toml")
    os.environ.update(LABMATE_HOME=str(home), MLFLOW_TRACKING_URI=uri, LABMATE_CONFIG=str(home / "labmate.toml"))
    reset_settings()
    resolve.forget_cache()
    prepare()
    engine = sql_engine(uri)
    if engine is not None:
        counting.count_sql(engine)
        from tasks import mlflow_io

        counting.count_sql(mlflow_io.client()._tracking_client.store.engine)  # MLflow's own reads too
    figures: dict[str, tuple[int, float]] = {}
    for name, command in commands(history_ids):
        if name != "summary (first: builds the index)":
            command()  # warm
        counting.reset()
        started = time.perf_counter()
        command()
        elapsed = time.perf_counter() - started
        calls = sum(counting.calls.values()) if engine is None else counting.statements
        figures[name] = (calls, elapsed)
        detail = dict(counting.calls) if engine is None else f"{counting.statements} SQL statements"
        print(f"  {label:5} {name}: {calls} calls, {elapsed * 1000:.0f} ms  {detail}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--dir", default="/tmp/labmate-bench-rest")
    opts = parser.parse_args()
    root = Path(opts.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    db = root / "mlflow.db"
    uri = f"sqlite:///{db}"
    experiment_id = mlflow_stores.create_experiment(uri, "bench")
    mlflow_stores.insert(uri, experiment_id, opts.runs, seed=5)
    history_ids = log_history_runs(uri, experiment_id)
    server, url = start_server(db, root)
    counting = Counting()
    try:
        print(f"{opts.runs:,} runs; mlflow server at {url}")
        direct = run_all("sql", uri, root / "kb-direct", counting, history_ids)
        remote = run_all("http", url, root / "kb-http", counting, history_ids)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("\n| command | `mlflow server` (HTTP): requests | time | SQLite read directly: SQL statements | time |")
    print("|---|---:|---:|---:|---:|")
    for name in direct:
        print(f"| {name} | {remote[name][0]} | {remote[name][1] * 1000:,.0f} ms | {direct[name][0]} | "
              f"{direct[name][1] * 1000:,.0f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
