"""The experiment answers at 1k-200k runs, on MLflow stores in SQLite and in PostgreSQL, beside
MLflow's own ordered `search_runs` for the same question, measured in the same run.

    .venv/bin/python bench/bench_summary.py                                  # 1k,10k,100k,200k; sqlite and postgres
    .venv/bin/python bench/bench_summary.py --sizes 1000,10000 --stores sqlite

The hard case: 5 % of the runs RUNNING, every 50th run a grid-search parent with 10 children
(bench/mlflow_stores.py). Per store kind and size, with a fresh MLflow store and a fresh labmate
knowledge base of the same kind (SQLite file + SQLite KB; PostgreSQL database + PostgreSQL KB):

* MLflow: `search_runs([exp], order_by=["metrics.val_f1 DESC"], max_results=10)` in a subprocess
  (the second of two runs, query only), killed after --mlflow-timeout s;
* first answer: `summary` sent to a real worker (bench/bench_worker.py: prefork, Redis DB 12, the
  jobs' time limits) for an experiment never seen: time to the first message, to the final
  answer, and until the index is built; the worker's peak memory (VmHWM of its pool processes);
* warm, in process on the same knowledge base (median of 20): the text answer of `summary`
  (everything but the chart), `summary` with its (reused) chart, `best`, `find` with a param
  condition and with a metric condition, `runs status:failed`;
* sync: an incremental sync with nothing new (the 5 % running runs unchanged), then one after
  5,000 new runs were added to MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import mlflow_stores  # noqa: E402
from bench.config import empty_config  # noqa: E402

POSTGRES = os.environ.get("LABMATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("LABMATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
MLFLOW_QUERY = """
import sys, time
from mlflow import MlflowClient
c = MlflowClient(tracking_uri=sys.argv[1])
best = None
for _ in range(2):
    t = time.perf_counter()
    runs = c.search_runs([sys.argv[2]], order_by=["metrics.val_f1 DESC"], max_results=10)
    best = time.perf_counter() - t
print(best)
"""


def mlflow_ordered(uri: str, experiment_id: str, timeout: float) -> float | None:
    try:
        out = subprocess.run(
            [sys.executable, "-c", MLFLOW_QUERY, uri, experiment_id],
            capture_output=True, text=True, timeout=timeout, check=True,
            env={**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    return float(out.stdout.strip().splitlines()[-1])


def median_ms(fn: Callable[[], Any], times: int = 20) -> float:
    fn()
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def interleaved(uri: str, experiment_id: str, ours: Callable[[], Any]) -> tuple[float, float]:
    """MLflow's ordered top-10 and our warm summary, alternating in this process (medians, ms): the
    same load for both, which a loaded 2-core machine doesn't give to figures taken minutes apart."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)

    def theirs() -> Any:
        return client.search_runs([experiment_id], order_by=["metrics.val_f1 DESC"], max_results=10)

    theirs()
    ours()
    first = time.perf_counter()
    theirs()
    rounds = 15 if time.perf_counter() - first < 0.5 else 3
    mlflow_ms, ours_ms = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        theirs()
        mlflow_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        ours()
        ours_ms.append((time.perf_counter() - started) * 1000)
    return statistics.median(mlflow_ms), statistics.median(ours_ms)


def _vm(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class Worker:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bench_worker.py")],
            env={**os.environ, **env, "BENCH_REDIS": REDIS, "LABMATE_BROKER_URL": REDIS},
            stdout=subprocess.DEVNULL, stderr=open(Path(env["LABMATE_HOME"]) / "worker.log", "w"),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_children(self.process.pid)) < 2:
            time.sleep(0.2)
        time.sleep(1.0)
        self.idle = {pid: _vm(pid, "VmRSS") for pid in _children(self.process.pid)}

    def peak(self) -> float:
        return max((_vm(pid, "VmHWM") for pid in _children(self.process.pid)), default=0.0)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def ask_worker(name: str, kwargs: dict[str, Any], timeout: float = 900) -> list[dict[str, Any]]:
    """Send a job by name as the bot does; collect its replies until the final one."""
    import redis

    from tasks.app import celery_app

    session = uuid.uuid4().hex
    client = redis.Redis.from_url(REDIS, socket_timeout=30)
    reply_to = {"user": "Ubench", "channel": "Cbench", "source": "bench", "session": session}
    sent = time.time()
    celery_app().send_task(name, kwargs={**kwargs, "reply_to": reply_to}, ignore_result=True)
    replies: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            item = client.blpop([f"bench:replies:{session}"], timeout=2)
        except redis.exceptions.TimeoutError:
            continue
        if item is None:
            continue
        reply = json.loads(item[1])
        reply["after"] = reply["t"] - sent
        replies.append(reply)
        if not reply["preview"]:
            return replies
    return replies


def prepare_store(kind: str, size: int, root: Path) -> tuple[str, dict[str, str], Callable[[], None]]:
    """(MLflow URI, environment for labmate, clean-up) with `size` runs in experiment `bench`."""
    home = root / f"{kind}-{size}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    empty_config(home / "labmate.toml")
    env = {"LABMATE_HOME": str(home), "LABMATE_CONFIG": str(home / "labmate.toml"), "MLFLOW_LOGGING_LEVEL": "WARNING"}
    if kind == "sqlite":
        uri = f"sqlite:///{home / 'mlflow.db'}"
        return uri, {**env, "MLFLOW_TRACKING_URI": uri}, lambda: shutil.rmtree(home, ignore_errors=True)
    suffix = f"{size}_{uuid.uuid4().hex[:6]}"
    mlflow_db = mlflow_stores.postgres_database(POSTGRES, f"mlflow_bench_{suffix}")
    kb_db = mlflow_stores.postgres_database(POSTGRES, f"labmate_bench_{suffix}")
    uri = mlflow_db.replace("postgresql://", "postgresql+psycopg://")

    def drop() -> None:
        from models.db import engine_for

        for engine in (engine_for(kb_db),):
            engine.dispose()
        mlflow_stores.drop_postgres_database(POSTGRES, f"mlflow_bench_{suffix}")
        mlflow_stores.drop_postgres_database(POSTGRES, f"labmate_bench_{suffix}")
        shutil.rmtree(home, ignore_errors=True)

    return uri, {**env, "MLFLOW_TRACKING_URI": uri, "LABMATE_DATABASE_URL": kb_db}, drop


def measure(kind: str, size: int, root: Path, mlflow_timeout: float) -> dict[str, Any]:
    uri, env, cleanup = prepare_store(kind, size, root)
    os.environ.update(env, LABMATE_BROKER_URL=REDIS)
    if kind == "sqlite":
        os.environ.pop("LABMATE_DATABASE_URL", None)
    from labmate.bootstrap import prepare
    from labmate.settings import reset_settings
    from tasks.app import reset as reset_celery

    reset_settings()
    reset_celery()
    prepare()
    made = time.perf_counter()
    experiment_id = mlflow_stores.create_experiment(uri, "bench")
    mlflow_stores.insert(uri, experiment_id, size, seed=size)
    made = time.perf_counter() - made
    result: dict[str, Any] = {"kind": kind, "size": size, "made_s": made}
    result["mlflow_s"] = mlflow_ordered(uri, experiment_id, mlflow_timeout)
    worker = Worker(env)
    try:
        result["worker_idle_mb"] = max(worker.idle.values(), default=0.0)
        replies = ask_worker("labmate.experiments.summary", {"experiment": "bench", "metric": "val_f1", "top": 5})
        result["first_s"] = replies[0]["after"] if replies else None
        result["first_kind"] = "preview" if replies and replies[0]["preview"] else (replies[0]["template"] if replies else "none")
        result["final_s"] = replies[-1]["after"] if replies else None
        result["final_kind"] = replies[-1]["template"] if replies else "none"
        from tasks.experiments import resolve, sync

        resolve.forget_cache()
        experiment = resolve.experiment("bench")
        started = time.monotonic()
        while not sync.progress(experiment).ready and time.monotonic() - started < 1800:
            time.sleep(0.2)
        result["built_s"] = time.time() - (replies[0]["t"] - replies[0]["after"]) if replies else None
        result["worker_peak_mb"] = worker.peak()
        warm = ask_worker("labmate.experiments.summary", {"experiment": "bench", "metric": "val_f1", "top": 5})
        result["worker_warm_ms"] = warm[-1]["after"] * 1000 if warm else None
    finally:
        worker.stop()
    from tasks.experiments.query import find_final, runs_final
    from tasks.experiments.summary import best_final, summary_final, summary_text

    sync.ensure_fresh(experiment)
    param = [{"name": "alpha", "op": "<", "value": "0.001", "numeric": True}]
    metric = [{"name": "val_f1", "op": ">", "value": "0.9", "numeric": True}]
    later = datetime.now(UTC)
    fresh = timedelta(days=1)

    def warm_only(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            sync.ensure_fresh(experiment, max_age=fresh, now=later)
            return fn()

        return run

    result["summary_ms"] = median_ms(warm_only(lambda: summary_text(experiment, "val_f1", 5)))
    result["interleaved"] = interleaved(uri, experiment_id, warm_only(lambda: summary_text(experiment, "val_f1", 5)))
    result["summary_chart_ms"] = median_ms(warm_only(lambda: summary_final(experiment, "val_f1", 5)))
    result["best_ms"] = median_ms(warm_only(lambda: best_final(experiment, "val_f1", None)))
    result["find_param_ms"] = median_ms(warm_only(lambda: find_final(experiment, param, "val_f1", None, 10)))
    result["find_metric_ms"] = median_ms(warm_only(lambda: find_final(experiment, metric, None, None, 10)))
    result["runs_ms"] = median_ms(warm_only(lambda: runs_final(experiment, "FAILED", None, None, [])))
    started = time.perf_counter()
    sync.refresh(experiment, now=datetime.now(UTC) + timedelta(minutes=10))
    result["sync_idle_ms"] = (time.perf_counter() - started) * 1000
    mlflow_stores.insert(uri, experiment_id, 5000, seed=size + 1, start_ms=int(time.time() * 1000) + 3_600_000)
    started = time.perf_counter()
    stats = sync.refresh(experiment, now=datetime.now(UTC) + timedelta(minutes=20))
    result["sync_5000_ms"] = (time.perf_counter() - started) * 1000
    result["sync_5000_read"] = stats.read
    from models.db import engine_for
    from tasks.mlflow_io.reader import sql_engine

    engine = sql_engine(uri)
    if engine is not None:
        engine.dispose()
    sql_engine.cache_clear()
    engine_for(os.environ.get("LABMATE_DATABASE_URL", "") or f"sqlite:///{Path(env['LABMATE_HOME']) / 'labmate.db'}").dispose()
    cleanup()
    return result


def fmt_s(value: float | None, limit: float = 0) -> str:
    return f"> {limit:.0f} s (killed)" if value is None else f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def table(results: list[dict[str, Any]], timeout: float) -> str:
    lines = [
        "| store | runs | MLflow ordered top-10 | first answer (worker) | final answer | index built | worker peak | "
        "warm summary (text) | × MLflow | summary + chart | best | find param | find metric | runs | sync, nothing new | "
        "sync, +5,000 runs | interleaved in one process: MLflow / ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = (r["mlflow_s"] * 1000 / r["summary_ms"]) if r["mlflow_s"] else None
        ratio_text = f"{ratio:,.1f}×" if ratio else f"> {timeout * 1000 / r['summary_ms']:,.0f}×"
        lines.append(
            f"| {r['kind']} | {r['size']:,} | {fmt_s(r['mlflow_s'], timeout)} | {fmt_s(r['first_s'])} ({r['first_kind']}) | "
            f"{fmt_s(r['final_s'])} | {fmt_s(r['built_s'])} | {r['worker_peak_mb']:.0f} MB (idle {r['worker_idle_mb']:.0f}) | "
            f"{r['summary_ms']:.1f} ms | {ratio_text} | {r['summary_chart_ms']:.1f} ms | {r['best_ms']:.1f} ms | "
            f"{r['find_param_ms']:.1f} ms | {r['find_metric_ms']:.1f} ms | {r['runs_ms']:.1f} ms | {r['sync_idle_ms']:.0f} ms | "
            f"{r['sync_5000_ms']:.0f} ms ({r['sync_5000_read']:,} read) | {r['interleaved'][0]:.1f} / "
            f"{r['interleaved'][1]:.1f} ms ({r['interleaved'][0] / r['interleaved'][1]:,.1f}×) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000,200000")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--dir", default="/tmp/labmate-bench-summary")
    parser.add_argument("--mlflow-timeout", type=float, default=300.0)
    opts = parser.parse_args()
    root = Path(opts.dir)
    results = []
    for kind in opts.stores.split(","):
        for size in (int(s) for s in opts.sizes.split(",")):
            result = measure(kind, size, root, opts.mlflow_timeout)
            results.append(result)
            print(json.dumps(result), flush=True)
    print(table(results, opts.mlflow_timeout))
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
