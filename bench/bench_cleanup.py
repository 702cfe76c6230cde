"""The clean-up scan on a store of 100,000 runs, beside MLflow's own `search_runs` for the same query,
measured in the same run.

    .venv/bin/python bench/bench_cleanup.py                 # 100,000 runs
    .venv/bin/python bench/bench_cleanup.py --runs 10000

The store (bench/mlflow_stores.py, SQLite): 5 % RUNNING, 5 % FAILED, every 50th run a grid-search parent,
started over the last ~28 hours, plus 1 % FAILED runs that logged no metric. The rules: failed runs without
a metric (1 h), orphans (RUNNING, silent 12 h), a team filter (`metrics.val_f1 < 0.05 and params.alpha =
'0.01'`, 0.5 days), the top 5 by val_f1 protected.

* labmate: `scan()` on the run index (built once before, not timed: the first question about an experiment
  builds it), each time after an incremental sync (`refresh`, timed with it), median of --repeat;
* MLflow: the same selection through `search_runs`: failed runs ended before the threshold (then their
  metrics checked), running runs started before it (then their metrics' timestamps checked), the team
  filter, and the top 5 by val_f1, all pages; median of --repeat, interleaved with ours.

The target: the scan under 10 s at 100,000 runs, reading only the runs the rules select.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import mlflow_stores  # noqa: E402
from bench.config import empty_config  # noqa: E402

HOUR = 3_600_000
TOML = """
[primary_metrics]
bench = "val_f1"

[cleanup.experiments.bench]
failed_hours = 1
orphan_hours = 12
rules = ["failed", "orphans", "filters"]
filters = [{ filter = "metrics.val_f1 < 0.05 and params.alpha = '0.01'", days = 0.5 }]
top_k = 5
"""


def add_failed_without_metrics(db: Path, experiment_id: str, count: int) -> None:
    import sqlite3
    import uuid

    now = int(time.time() * 1000)
    with sqlite3.connect(db) as conn:
        rows = []
        for i in range(count):
            run_id = uuid.uuid4().hex
            start = now - (i + 3) * 60_000 * 10
            rows.append((run_id, f"dead-{i}", "LOCAL", "bench", "", "dana", "FAILED", start, start + 1000, None, "",
                         "active", f"/tmp/artifacts/{run_id}", int(experiment_id)))
        conn.executemany(f"INSERT INTO runs ({', '.join(mlflow_stores.RUN_COLUMNS)}) VALUES ({','.join('?' * 14)})", rows)
        conn.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", [("mlflow.user", "dana", r[0]) for r in rows])


def mlflow_same_query(uri: str, experiment_id: str, now_ms: int) -> tuple[float, int]:
    """MLflow's own search for what the scan selects; (seconds, the stale runs it finds, top 5 left out)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=uri)

    def everything(filter_string: str, **kw: object) -> list:
        found, token = [], None
        while True:
            page = client.search_runs([experiment_id], filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                      max_results=1000, page_token=token, **kw)
            found += page
            token = page.token
            if not token:
                return found

    started = time.perf_counter()
    failed = [r for r in everything(f"attributes.status = 'FAILED' and attributes.end_time <= {now_ms - HOUR}")
              + everything(f"attributes.status = 'KILLED' and attributes.end_time <= {now_ms - HOUR}")
              if not r.data.metrics]
    silent = now_ms - 12 * HOUR
    running = [r for r in everything(f"attributes.status = 'RUNNING' and attributes.start_time <= {silent}")
               if max((m.timestamp for m in r.data._metric_objs), default=0) <= silent]
    team = everything(f"metrics.val_f1 < 0.05 and params.alpha = '0.01' and attributes.start_time <= {now_ms - 12 * HOUR}")
    top = client.search_runs([experiment_id], "", order_by=["metrics.val_f1 DESC"], max_results=5)
    took = time.perf_counter() - started
    stale = {r.info.run_id for r in [*failed, *running, *team]}
    return took, len(stale - {r.info.run_id for r in top})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-cleanup-"))
    try:
        empty_config(home / "labmate.toml")
        os.environ.update(LABMATE_HOME=str(home), LABMATE_CONFIG=str(home / "labmate.toml"),
                          MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}", MLFLOW_LOGGING_LEVEL="WARNING")
        (home / "labmate.toml").write_text(TOML)
        from labmate.bootstrap import prepare
        from labmate.settings import get_settings

        prepare()
        uri = get_settings().mlflow_tracking_uri
        made = time.perf_counter()
        experiment_id = mlflow_stores.create_experiment(uri, "bench")
        mlflow_stores.insert(uri, experiment_id, args.runs, seed=7)
        add_failed_without_metrics(home / "mlflow.db", experiment_id, args.runs // 100)
        made = time.perf_counter() - made
        total = args.runs + args.runs // 100

        from tasks.cleanup.scan import scan
        from tasks.experiments import resolve, sync

        experiment = resolve.experiment("bench")
        built = time.perf_counter()
        sync.ensure_fresh(experiment)
        built = time.perf_counter() - built
        rules = get_settings().cleanup.rules_for("bench")
        ours: list[float] = []
        theirs: list[float] = []
        result = None
        mlflow_found = 0
        for _ in range(args.repeat):
            started = time.perf_counter()
            sync.refresh(experiment)
            result = scan(experiment, rules, sync=False)
            ours.append(time.perf_counter() - started)
            took, mlflow_found = mlflow_same_query(uri, experiment_id, int(time.time() * 1000))
            theirs.append(took)
        assert result is not None
        mine, floor = statistics.median(ours), statistics.median(theirs)
        print(f"store: {total:,} runs (made in {made:.0f} s); index built once in {built:.1f} s")
        print(f"labmate scan (incremental sync + scan), median of {args.repeat}: {mine:.2f} s "
              f"[min {min(ours):.2f}, max {max(ours):.2f}]")
        print(f"MLflow search_runs, same selection, median of {args.repeat}: {floor:.2f} s "
              f"[min {min(theirs):.2f}, max {max(theirs):.2f}]")
        print(f"ratio labmate / MLflow: {mine / floor:.2f}")
        print(f"runs the scan read: {result.read:,} of {total:,}; stale: {len(result.stale):,} "
              f"(orphans {len(result.orphans):,}); spared: {len(result.spared):,}; MLflow's search finds {mlflow_found:,}")
        print(f"target: under 10 s -> {'met' if mine < 10 else 'NOT met'}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
