"""How long a `labmate worker` (with and without its preload of MLflow and matplotlib) and a
`labmate beat` take from their start until they answer a ping over the broker: what compose's
health checks wait for, what a crash restart costs, and what each fault test pays per process it
starts. Each process's CPU time (its pool included) is shown beside its wall time.

Commands run interleaved, one of each per round (bench/interleaved.py), against a Redis database
and a key prefix of their own, with a fresh LABMATE_HOME and SQLite knowledge base.
`bench/bench_slack_start.py` times `labmate serve` to its first `/healthz`.

    .venv/bin/python bench/bench_process_start.py --redis redis://127.0.0.1:6379/9 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.config import empty_config  # noqa: E402
from bench.interleaved import Runner, report, rounds  # noqa: E402

LABMATE = str(Path(sys.executable).with_name("labmate"))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _started(argv: list[str], env: dict[str, str], node: str, cpu: list[float]) -> Runner:
    """Start the process, time it until `node` answers ping, stop it; its CPU time goes to `cpu`."""
    from tasks.app import celery_app

    def run() -> float:
        before = _children_cpu()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{' '.join(argv[1:])} exited with {proc.returncode} before answering")
                replies = celery_app().control.ping(destination=[node], timeout=0.05)
                if any(node in reply for reply in replies):
                    return time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            cpu.append(_children_cpu() - before)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9", help="a Redis database for the broker")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-start-"))
    empty_config(home / "none.toml")
    settings = {
        "LABMATE_HOME": str(home),
        "LABMATE_DATABASE_URL": f"sqlite:///{home / 'labmate.db'}",
        "LABMATE_BROKER_URL": args.redis,
        "LABMATE_RESULT_BACKEND": args.redis,
        "LABMATE_BROKER_KEY_PREFIX": f"bench-start-{uuid.uuid4().hex[:8]}:",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "LABMATE_CONFIG": str(home / "none.toml"),
    }
    os.environ.update(settings)  # this process pings over the same broker and prefix
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as in a user's shell: bytecode is written and reused
    subprocess.run([LABMATE, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)

    from labmate.checks import beat_nodename, worker_nodename

    worker = [LABMATE, "worker", "--queues", "default", "--concurrency", "1"]
    cpu: dict[str, list[float]] = {"worker": [], "worker, no preload": [], "beat": []}
    runners = {
        "worker": _started(worker, env, worker_nodename(), cpu["worker"]),
        "worker, no preload": _started(worker, {**env, "LABMATE_WORKER_PRELOAD": "false"}, worker_nodename(),
                                       cpu["worker, no preload"]),
        "beat": _started([LABMATE, "beat"], env, beat_nodename(), cpu["beat"]),
    }
    times = rounds(runners, args.rounds, warmup=1)
    report(times, [("worker", "worker, no preload", None)])
    print()
    for name, seen in cpu.items():
        timed = seen[-args.rounds:]  # the warm-up round's CPU is left out, as its time is
        print(f"{name:<22} CPU {statistics.mean(timed):.2f} s by mean (its pool and children included)")
    load = os.getloadavg()[0]
    print(f"\n{args.rounds} interleaved rounds; load average (1 min) at the end: {load:.2f} on {os.cpu_count()} CPUs.")


if __name__ == "__main__":
    main()
