"""`summary` on experiments of 1k, 10k and 100k runs, beside MLflow's own ranked search.

    .venv/bin/python bench/bench_summary.py [--sizes 1000,10000,100000] [--dir /tmp/labmate-bench]

Runs are bulk-inserted straight into MLflow's SQLite schema (tables runs, tags, params, metrics,
latest_metrics -- the rows `MlflowClient.log_batch` writes, without its per-run round trips), so a
100k-run experiment takes seconds to make. Each size then measures:

* MLflow: `search_runs([exp], order_by=["metrics.val_f1 DESC"], max_results=10)` in a subprocess,
  stopped after --mlflow-timeout seconds;
* first summary: builds the run index for the experiment (a full read through `search_runs`);
* summary: warm index, median of 5 (includes the chart and 5 metric-history reads);
* incremental: 10 runs added or ended, index older than 60 s -> sync + summary.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = 5
USERS = ("dana", "sam", "lee", "kim")
MLFLOW_QUERY = """
import sys, time
from mlflow import MlflowClient
c = MlflowClient(tracking_uri=sys.argv[1])
t = time.perf_counter()
runs = c.search_runs([sys.argv[2]], order_by=["metrics.val_f1 DESC"], max_results=10)
print(time.perf_counter() - t, runs[0].info.run_id)
"""


def make_experiment(db: Path, uri: str, name: str, runs: int, artifacts: Path) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    experiment_id = client.create_experiment(name, artifact_location=str(artifacts / name))
    insert_runs(db, experiment_id, runs, artifacts / name)
    return experiment_id


def insert_runs(db: Path, experiment_id: str, count: int, artifacts: Path, *, start_ms: int | None = None) -> list[str]:
    rng = random.Random(int(experiment_id) * 7919 + count)
    base = start_ms or int(time.time() * 1000) - count * 60_000
    runs, tags, params, metrics, latest = [], [], [], [], []
    ids = []
    for i in range(count):
        run_id = uuid.uuid4().hex
        ids.append(run_id)
        start = base + i * 60_000
        failed = rng.random() < 0.05
        status = "FAILED" if failed else "FINISHED"
        user = rng.choice(USERS)
        runs.append(
            (run_id, f"run-{i}", "LOCAL", "bench", "", user, status, start, start + 50_000, None, "", "active",
             f"{artifacts}/{run_id}/artifacts", experiment_id)
        )  # fmt: skip
        tags += [(("mlflow.user"), user, run_id), ("mlflow.runName", f"run-{i}", run_id)]
        alpha = rng.choice((1e-2, 1e-3, 1e-4, 3e-5))
        params += [
            ("alpha", str(alpha), run_id),
            ("epochs", "5", run_id),
            ("ngram_max", str(rng.randint(1, 3)), run_id),
        ]
        params.append(("seed", str(rng.randint(1, 5)), run_id))
        quality = rng.random()
        steps = 1 if failed else STEPS
        for step in range(1, steps + 1):
            ts = start + step * 1000
            f1 = round(quality * step / STEPS, 6)
            values = {"train_loss": round(1 - f1, 6), "val_f1": f1, "val_accuracy": round(min(1.0, f1 + 0.05), 6)}
            for key, value in values.items():
                metrics.append((key, value, ts, run_id, step, False))
                if step == steps:
                    latest.append((key, value, ts, step, False, run_id))
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, deleted_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            runs,
        )
        conn.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
        conn.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
        conn.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)", metrics
        )
        conn.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)", latest
        )
    return ids


def mlflow_ranked_search(uri: str, experiment_id: str, timeout: float) -> str:
    started = time.perf_counter()
    try:
        out = subprocess.run(
            [sys.executable, "-c", MLFLOW_QUERY, uri, experiment_id],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout:.0f} s"
    query = float(out.stdout.split()[0])
    return f"{query:.2f} s (query only; {time.perf_counter() - started:.1f} s with interpreter start)"


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dir", default="/tmp/labmate-bench")
    parser.add_argument("--mlflow-timeout", type=float, default=60.0)
    opts = parser.parse_args()
    root = Path(opts.dir)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from datetime import UTC, datetime

    from labmate.bootstrap import prepare
    from labmate.settings import reset_settings
    from tasks.experiments import resolve
    from tasks.experiments.summary import summary
    from tasks.experiments.sync import ensure_fresh

    print("| runs | MLflow search_runs(order_by=metrics.val_f1 DESC, max_results=10) | first summary (builds index) "
          "| summary, warm index (median of 5) | 10 runs changed: sync + summary |")  # fmt: skip
    print("|---:|---|---:|---:|---:|")
    for size in (int(s) for s in opts.sizes.split(",")):
        # one store (MLflow db + labmate KB) per size: MLflow's ranked search cost depends on
        # the whole store, so sizes sharing a store would blur each other's figures
        home = root / f"runs-{size}"
        home.mkdir(parents=True, exist_ok=True)
        db = home / "mlflow.db"
        uri = f"sqlite:///{db}"
        os.environ.update(LABMATE_HOME=str(home), MLFLOW_TRACKING_URI=uri, LABMATE_CONFIG=str(home / "labmate.toml"))
        reset_settings()
        prepare()
        name = f"bench-{size}"
        t = time.perf_counter()
        experiment_id = make_experiment(db, uri, name, size, home / "artifacts")
        made = time.perf_counter() - t
        mlflow_time = mlflow_ranked_search(uri, experiment_id, opts.mlflow_timeout)
        first = timed(lambda: summary(name, "val_f1", 5))  # noqa: B023
        warm = statistics.median(timed(lambda: summary(name, "val_f1", 5)) for _ in range(5))  # noqa: B023
        insert_runs(db, experiment_id, 10, home / "artifacts", start_ms=int(time.time() * 1000))
        experiment = resolve.experiment(name)
        later = datetime.now(UTC) + timedelta(seconds=61)
        sync = timed(lambda: ensure_fresh(experiment, now=later))  # noqa: B023
        after = timed(lambda: summary(name, "val_f1", 5))  # noqa: B023
        print(
            f"| {size:,} | {mlflow_time} | {first:.2f} s | {warm * 1000:.0f} ms | {(sync + after) * 1000:.0f} ms "
            f"(sync {sync * 1000:.0f} ms) |",
            flush=True,
        )
        print(f"<!-- {name}: generated in {made:.1f} s -->", file=sys.stderr)


if __name__ == "__main__":
    main()
