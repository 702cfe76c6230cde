"""Run watch and the daily digest on a big MLflow store, beside MLflow's own `search_runs` for the same
question, measured in the same run.

    .venv/bin/python bench/bench_watch.py                      # 100,000 runs, then a day of 10,000
    .venv/bin/python bench/bench_watch.py --runs 20000 --day 2000

One SQLite MLflow store and one SQLite knowledge base in a temporary home (bench/mlflow_stores.py makes
the runs: 5 % running, 5 % failed, grid-search parents with children):

* the experiment's run index is built once (timed, not a target);
* **watch poll**: 50 runs end; one poll (`tasks.watch.poll.poll`: the incremental sync from MLflow, the
  ended runs from the index, the notice rows, the grouped message) against MLflow's
  `search_runs(filter "attributes.end_time >= …")` for the runs that ended since the last poll, then a
  poll with nothing new; targets: under 1 s, and no read of every run;
* **digest**: 10,000 runs start and end within the last day; the digest (`tasks.watch.digest.build`: the
  sync of those runs, the counts per experiment, the new best, launches, decisions, the chart) with the
  10,000 runs not yet synced, then again with the index current; target: under 5 s.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import mlflow_stores  # noqa: E402
from bench.config import empty_config  # noqa: E402

NEW_ENDED = 50


def _ms() -> int:
    return int(time.time() * 1000)


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def mlflow_ended_since(uri: str, experiment_id: str, since_ms: int) -> tuple[float, int]:
    """MLflow's own query for the runs that ended since a time: every page of `search_runs`."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    query = f"attributes.end_time >= {since_ms}"
    best = float("inf")
    count = 0
    for _ in range(3):
        started = time.perf_counter()
        found, token = 0, None
        while True:
            page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
            found += len(page)
            token = page.token
            if not token:
                break
        best = min(best, time.perf_counter() - started)
        count = found
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000, help="Runs in the watched experiment.")
    parser.add_argument("--day", type=int, default=10_000, help="Runs that start and end within the digest's day.")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="labmate-bench-watch-"))
    empty_config(home / "labmate.toml")
    os.environ.update(LABMATE_HOME=str(home), LABMATE_CONFIG=str(home / "labmate.toml"), MLFLOW_LOGGING_LEVEL="WARNING")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    (home / "labmate.toml").write_text('[primary_metrics]\n"watched" = "val_f1"\n')
    try:
        run(args, home, uri)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path, uri: str) -> None:
    from labmate.bootstrap import prepare
    from labmate.settings import reset_settings

    reset_settings()
    prepare()
    experiment_id = mlflow_stores.create_experiment(uri, "watched")
    two_days_ago = _ms() - 2 * 86_400_000 - args.runs * 1_000
    made, _ = timed(lambda: mlflow_stores.insert(uri, experiment_id, args.runs, start_ms=two_days_ago, seed=1))
    print(f"store: {args.runs:,} runs made in {made:.1f} s (all ended more than a day ago)")

    from models import watch as watches
    from models.db import session_scope
    from tasks.experiments import resolve, sync
    from tasks.watch import digest, poll

    experiment = resolve.experiment("watched")
    built, _ = timed(lambda: sync.wait_until_ready(experiment, budget_s=3600))
    print(f"index: built in {built:.1f} s (once per experiment; not a target)")
    spacing = (86_400_000 - 600_000) // args.day  # spread over the day, as a day of runs is
    day_start = _ms() - 86_400_000 + 300_000
    mlflow_stores.insert(uri, experiment_id, args.day, start_ms=day_start, seed=3, spacing_ms=spacing)
    cold, built_digest = timed(digest.build)
    warm = statistics.median([timed(digest.build)[0] for _ in range(3)])
    assert built_digest is not None
    _template, context = built_digest
    [row] = context["experiments"]
    print(
        f"digest, a day of {args.day:,} new runs ({row['started']:,} started, {row['finished']:,} finished, "
        f"{row['failed']:,} failed): {cold:.2f} s with their sync from MLflow, {warm:.2f} s with the index current; "
        f"target < 5 s: {'met' if cold < 5 else 'NOT met'}"
    )

    with session_scope() as session:
        watches.add(session, store=experiment.store, experiment_id=experiment_id, experiment="watched", channel="CBENCH",
                    reply_to={"channel": "CBENCH", "source": "slack"}, user="UBENCH", since_ms=_ms())  # fmt: skip
    first, _ = timed(poll.poll)  # the watch's first look (nothing ended since it started)
    new_start = _ms() + 100  # runs that end after the watch's first poll (one a second from now)
    mlflow_stores.insert(uri, experiment_id, NEW_ENDED, start_ms=new_start, seed=2, running=0.0)
    ours, (replies, keys) = timed(poll.poll)
    poll.delivered(keys)
    quiet, _ = timed(poll.poll)
    theirs, found = mlflow_ended_since(uri, experiment_id, new_start)
    total = args.runs + args.day + NEW_ENDED
    print(
        f"watch poll, {total:,} runs, {NEW_ENDED} just ended: {ours * 1000:.0f} ms ({len(replies)} message(s)); "
        f"nothing new: {quiet * 1000:.0f} ms; the watch's first poll: {first * 1000:.0f} ms"
    )
    print(
        f"  MLflow search_runs for the runs that ended since: {theirs * 1000:.0f} ms ({found} runs); "
        f"ours/MLflow {ours / theirs:.2f}; target < 1 s: {'met' if ours < 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
