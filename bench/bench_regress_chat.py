"""Benchmark of regression runs from chat; figures go to docs/performance.md.

    .venv/bin/python bench/bench_regress_chat.py [--redis redis://127.0.0.1:6379/13] [--rounds 3]

From the slash command (an HTTP request to `labmate serve`) to the run's verdict in the knowledge base,
on a `regress` worker with 1 process, then 2 (warm: the first run on each worker loads the target, and
is reported apart), against `labmate regress --workers 2` (and 1) on the same suite in the same run.

1. big: 500 conversations × 4 turns, one CPU-bound registered model (a few ms a reply, holding the GIL).
   Targets: 2 processes >= 1.7× faster than 1; within 15% of the CLI with --workers 2.
2. small: the shipped conversations/sales_agent.yaml (24 conversations, baseline and candidate: the demo's
   registered model) on 1 and 2 processes, and the CLI with --workers 1 and 2. Target: more workers never
   slower.

Everything is real except Slack (the project's fake Slack): `labmate serve`, `labmate worker` processes on
Redis (under a key prefix of this run, deleted afterwards), the knowledge base (SQLite), MLflow's SQLite
store with registered models.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "faults"))
sys.path.insert(0, str(REPO / "tests" / "slack"))

from harness import LABMATE, FakeSlack, Lab, lab_env, unique_prefix, wait_until  # noqa: E402
from slackreq import OverHTTP, Slack, forget_keys  # noqa: E402

from bench.bench_regress import write_suite  # noqa: E402

MODEL_FILE = REPO / "bench" / "cpu_model.py"
ENDED = ("passed", "failed", "error")


def build_store(root: Path) -> str:
    """The demo's `sales-agent` (production, candidate) and `bench-agent` (the CPU-bound test agent)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from tasks.mlflow_io import process_uris
    from tasks.mlflow_io.demo import run_demo

    uri = f"sqlite:///{root / 'mlflow.db'}"
    run_demo(uri)
    client = MlflowClient(uri, uri)
    client.create_registered_model("bench-agent")
    with process_uris(uri):
        experiment = client.get_experiment_by_name("sales-agent").experiment_id
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_FILE))
        made = client.create_model_version("bench-agent", info.model_uri, run_id=info.run_id)
        client.set_registered_model_alias("bench-agent", "candidate", made.version)
    return uri


class Deployment:
    def __init__(self, root: Path, redis_url: str, mlflow: str) -> None:
        self.root, self.redis_url, self.mlflow = root, redis_url, mlflow
        self.fake = FakeSlack(token="xoxb-test", retry_after=0).start()
        self.home = root / "home"
        (self.home / "suites").mkdir(parents=True)
        write_suite(self.home / "suites", 500)
        shutil.copy(REPO / "conversations" / "sales_agent.yaml", self.home / "suites" / "sales_agent.yaml")
        (self.home / "labmate.toml").write_text('[regress]\nfolders = ["suites"]\n')
        self.prefix = unique_prefix()
        self.db = f"sqlite:///{self.home / 'labmate.db'}"
        env = lab_env(self.home, self.fake, broker_url=redis_url, database_url=self.db, prefix=self.prefix,
                      MLFLOW_TRACKING_URI=mlflow, PYTHONPATH=str(REPO), MLFLOW_LOGGING_LEVEL="WARNING")
        env.update(LABMATE_JOB_STALE_AFTER="20", LABMATE_REAP_EVERY="15")
        self.env = env
        self.lab = Lab(self.home, self.fake, env)
        self.lab.serve(threads=4)
        self.slack = Slack(OverHTTP(self.lab.port), self.db, response_base=self.fake.base_url + "response/")
        self.lab.worker(queues="default", concurrency=1)
        self.regress: Any = None
        self.runs = 0
        self.spread = 0

    def workers(self, processes: int) -> None:
        if self.regress is not None:
            self.regress.stop()
        self.regress = self.lab.worker(queues="regress", concurrency=processes)

    def chat(self, text: str) -> float:
        from models import regressions
        from models.db import session_scope

        self.runs += 1
        run_id = self.runs
        start = time.perf_counter()
        answer = self.slack.command(text, user="U0BENCH", channel="C0BENCH")
        assert f"R{run_id}" in answer.body, answer.body

        def ended() -> Any:
            with session_scope(self.db) as session:
                row = regressions.get(session, run_id=run_id)
                return row is not None and row.status in ENDED and (row.status, row.reason, row.done, row.total)

        status, reason, done, total = wait_until(ended, timeout=900, interval=0.02, what=f"run R{run_id}")
        took = time.perf_counter() - start
        assert status != "error" and done == total, reason
        self.spread = chunk_processes(self.db, run_id)
        return took

    def cli(self, suite: str, candidate: str | None, workers: int) -> float:
        argv = [str(LABMATE), "regress", str(self.home / "suites" / suite), "--workers", str(workers)]
        if candidate:
            argv += ["--candidate", candidate]
        start = time.perf_counter()
        done = subprocess.run(argv, env=self.env, cwd=self.home, capture_output=True, text=True)
        took = time.perf_counter() - start
        assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
        return took

    def close(self) -> None:
        self.lab.stop()
        self.fake.stop()
        forget_keys(self.redis_url, self.prefix)


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def cpu_floor(processes: int, pieces: int = 8, each: int = 2_500_000) -> float:
    """The same pure-CPU work in 1 or 2 processes: what this machine gives two processes right now (other
    tenants share its 2 CPUs), the floor the chat figures are read against."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    with context.Pool(processes) as pool:
        pool.map(_burn, [1000] * processes)  # started and warm
        start = time.perf_counter()
        pool.map(_burn, [each] * pieces, chunksize=1)
        return time.perf_counter() - start


def chunk_processes(db: str, run_id: int) -> int:
    """How many worker processes ran the run's chunks (the ledger names each job's process)."""
    from models import jobs, regressions
    from models.db import session_scope

    with session_scope(db) as session:
        run = regressions.get(session, run_id=run_id)
        keys = [f"{run.task_id}/{i}" for i in range(run.chunks)]
        return len({session.get(jobs.JobRecord, k).worker for k in keys})


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def med(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"


BIG = "regress bench candidate:models:/bench-agent@candidate workers:{n}"
SMALL = "regress sales-agent workers:{n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default=os.environ.get("LABMATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("building the MLflow store (the demo and a CPU-bound registered model)…", flush=True)
        mlflow = build_store(root)
        deploy = Deployment(root, args.redis, mlflow)
        figures: dict[str, list[float]] = {}
        try:
            print(load(), flush=True)
            for processes in (1, 2):
                deploy.workers(processes)
                cold_big = deploy.chat(BIG.format(n=processes))
                cold_small = deploy.chat(SMALL.format(n=processes))
                print(f"{processes} process(es), first runs (target loads): big {cold_big:.2f} s, small {cold_small:.2f} s",
                      flush=True)
                for _ in range(args.rounds):
                    for n in (1, 2):
                        figures.setdefault(f"floor cpu {n}", []).append(cpu_floor(n))
                    figures.setdefault(f"chat big {processes}", []).append(deploy.chat(BIG.format(n=processes)))
                    print(f"  big run on {deploy.spread} process(es): {figures[f'chat big {processes}'][-1]:.2f} s",
                          flush=True)
                    figures.setdefault(f"chat small {processes}", []).append(deploy.chat(SMALL.format(n=processes)))
                    if processes == 2:
                        for n in (1, 2):
                            figures.setdefault(f"cli big {n}", []).append(
                                deploy.cli("bench.yaml", "models:/bench-agent@candidate", n))
                            figures.setdefault(f"cli small {n}", []).append(deploy.cli("sales_agent.yaml", None, n))
            print(load())
            for name, values in figures.items():
                print(f"  {name:14} {med(values)}")
            m = {name: statistics.median(values) for name, values in figures.items()}
            print(f"floor: pure CPU in 1 process / 2 processes = {m['floor cpu 1'] / m['floor cpu 2']:.2f}x "
                  "(what the machine gives two processes now)")
            print(f"big: chat 1 process / 2 processes = {m['chat big 1'] / m['chat big 2']:.2f}x (target >= 1.7)")
            print(f"big: chat 2 processes / CLI --workers 2 = {m['chat big 2'] / m['cli big 2']:.2f} (target <= 1.15)")
            print(f"small: chat 2 / chat 1 = {m['chat small 2'] / m['chat small 1']:.2f} (target <= 1.0 + noise); "
                  f"CLI --workers 2 / --workers 1 = {m['cli small 2'] / m['cli small 1']:.2f}")
        finally:
            deploy.close()


if __name__ == "__main__":
    main()
