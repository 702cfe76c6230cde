"""`compare` of two runs with 10,000 logged steps per metric, and the chart on its own.

    .venv/bin/python bench/bench_compare.py [--steps 10000] [--dir /tmp/labmate-bench-compare]

The runs are logged through MLflow's own API (`log_batch`, 1,000 metrics per call). Reported:
compare end to end (resolve both runs, read 2 x 2 histories of 10k points, draw 2 charts), and
one chart rendered from two 10k-point series (median of 5, after one warm-up render).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.config import empty_config  # noqa: E402


def log_run(client, experiment_id: str, name: str, steps: int, shift: float) -> str:  # type: ignore[no-untyped-def]
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, run_name=name, tags={"mlflow.user": "bench"})
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param("alpha", str(shift)), Param("epochs", "1")])
    now = int(time.time() * 1000)
    batch = []
    for step in range(steps):
        f1 = 1 - math.exp(-step / (steps / 5)) * (0.9 - shift) + 0.01 * math.sin(step)
        batch += [Metric("val_f1", f1, now + step, step), Metric("train_loss", 1 - f1, now + step, step)]
        if len(batch) >= 1000:
            client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--dir", default="/tmp/labmate-bench-compare")
    opts = parser.parse_args()
    home = Path(opts.dir)
    home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    empty_config(home / "labmate.toml")
    os.environ.update(LABMATE_HOME=str(home), MLFLOW_TRACKING_URI=uri, LABMATE_CONFIG=str(home / "labmate.toml"))

    from mlflow import MlflowClient

    from labmate.bootstrap import prepare
    from labmate.settings import reset_settings

    reset_settings()
    prepare()
    client = MlflowClient(tracking_uri=uri)
    name = f"compare-{opts.steps}"
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(name, artifact_location=str(home / "artifacts"))
        first = log_run(client, experiment_id, f"a-{opts.steps}", opts.steps, 0.0)
        second = log_run(client, experiment_id, f"b-{opts.steps}", opts.steps, 0.1)
    else:
        runs = client.search_runs([experiment.experiment_id], order_by=["attributes.run_name ASC"])
        first, second = runs[0].info.run_id, runs[1].info.run_id

    from tasks import mlflow_io
    from tasks.experiments import charts
    from tasks.experiments.compare import compare

    series = [(r, mlflow_io.metric_history(r, "val_f1")) for r in (first, second)]
    charts.history(series, metric="val_f1", title="warm-up", path=charts.chart_path("bench", "warmup"))
    chart_times = []
    for _ in range(5):
        started = time.perf_counter()
        charts.history(series, metric="val_f1", title="bench", path=charts.chart_path("bench", "val_f1"))
        chart_times.append(time.perf_counter() - started)
    compare_times = []
    for _ in range(5):
        started = time.perf_counter()
        [(_template, context)] = compare([first[:10], second[:10]])
        compare_times.append(time.perf_counter() - started)
    print(f"steps per metric: {opts.steps:,}; charts per compare: {len(context['files'])}")
    print(f"compare, 2 runs, end to end: median {statistics.median(compare_times) * 1000:.0f} ms "
          f"(min {min(compare_times) * 1000:.0f}, max {max(compare_times) * 1000:.0f})")  # fmt: skip
    print(f"one chart, 2 x {opts.steps:,} points: median {statistics.median(chart_times) * 1000:.0f} ms "
          f"(min {min(chart_times) * 1000:.0f}, max {max(chart_times) * 1000:.0f})")  # fmt: skip


if __name__ == "__main__":
    main()
