"""Benchmarks for launches from chat; figures go to docs/perf/launch.md.

    .venv/bin/python bench/bench_launch.py [--redis redis://127.0.0.1:6379/8] [--only latency,sweep,card]

1. latency: from the slash command (an HTTP request to `labmate serve`) to the training process running
   its first line, on a warm `launch` worker (a real `labmate worker` on Redis), broken down by stage.
   Target: median < 1.5 s.
2. sweep: the same sweep of 8 CPU-bound runs (`parallel:2`) on a launch worker with 1 process, then 2,
   then 1 and 2 again; wall time from the command to the sweep's summary being due. Target: 1 / 2 >= 1.7
   (needs two free cores: the load average is printed).
3. card: the training process's own wall and CPU time with the card on (progress read from MLflow and the
   card edited in the fake Slack every 0.5 s, four times the default rate) and off (no polling at all),
   alternated in one process; and the supervisor's cost per poll. Target: no difference beyond noise.

Everything is real except Slack (the project's fake Slack): the knowledge base (SQLite), MLflow's SQLite
store, the Redis broker (under a key prefix of this run, deleted afterwards), the training processes
(the quick test project, tests/launch/project).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "faults"))
sys.path.insert(0, str(REPO / "tests" / "slack"))
from harness import FakeSlack, Lab, lab_env, unique_prefix, wait_until  # noqa: E402
from slackreq import OverHTTP, Slack, forget_keys  # noqa: E402

from bench.config import empty_config  # noqa: E402

PROJECT = REPO / "tests" / "launch" / "project"


def config(**limits: Any) -> str:
    lines = [
        "[primary_metrics]", 'quick = "score"',
        "[projects.quick]", f'uri = "{PROJECT}"', 'entry_points = ["train"]', 'experiment = "quick"',
        "max_sweep_size = 16", "max_parallel_runs = 2", "time_limit = 600.0",
    ]
    lines += [f"{k} = {v!r}" for k, v in limits.items()]
    return "\n".join(lines) + "\n"


def cpu_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, from /proc/stat (every tenant, not just us)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / tick, idle / tick


def group_cpu_seconds(groups: set[int]) -> float:
    """CPU seconds used so far by the processes of these process groups (labmate's serve and workers with
    their pool processes; each training process has a session of its own and is not counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # pgrp
            total += (float(fields[11]) + float(fields[12])) / tick  # utime + stime
    return total


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


class Deployment:
    """serve + workers + fake Slack on Redis, with an MLflow SQLite store and a knowledge base of its own."""

    def __init__(self, root: Path, redis_url: str) -> None:
        self.root = root
        self.fake = FakeSlack(token="xoxb-test", retry_after=0).start()
        self.home = root / "home"
        self.home.mkdir()
        (self.home / "labmate.toml").write_text(config())
        self.prefix = unique_prefix()
        self.mlflow = f"sqlite:///{root / 'mlflow.db'}"
        self.db = f"sqlite:///{self.home / 'labmate.db'}"
        self.redis_url = redis_url
        env = lab_env(self.home, self.fake, broker_url=redis_url, database_url=self.db, prefix=self.prefix,
                      MLFLOW_TRACKING_URI=self.mlflow)
        env.update(LABMATE_JOB_STALE_AFTER="20", LABMATE_REAP_EVERY="15")  # the defaults, not the fault tests' fast ones
        self.lab = Lab(self.home, self.fake, env)
        self.lab.serve(threads=4)
        self.slack = Slack(OverHTTP(self.lab.port), self.db, response_base=self.fake.base_url + "response/")
        self.lab.worker(queues="default", concurrency=1)
        self.launcher = self.lab.worker(queues="launch", concurrency=1)

    def restart_launcher(self, concurrency: int) -> None:
        self.launcher.stop()
        self.launcher = self.lab.worker(queues="launch", concurrency=concurrency)

    def launch(self, launch_id: int) -> Any:
        from models import launches
        from models.db import session_scope

        with session_scope(self.db) as session:
            row = launches.get(session, launch_id=launch_id)
            if row is not None:
                session.expunge(row)
            return row

    def close(self) -> None:
        self.lab.stop()
        self.fake.stop()
        forget_keys(self.redis_url, self.prefix)


def child_lines(home: Path, label: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    lines = (home / "launches" / f"{label}-attempt1.log").read_text().splitlines()
    first = json.loads(lines[0])
    last = next((json.loads(line) for line in reversed(lines) if line.startswith('{"ended"')), None)
    return first, last


def bench_latency(deploy: Deployment, runs: int, warmup: int) -> dict[str, Any]:
    from labmate.launch_text import aware

    stages: dict[str, list[float]] = {}
    launch_id = 0
    for n in range(warmup + runs):
        launch_id += 1
        sent = time.time()
        answer = deploy.slack.command("run quick epochs=1", user="U0BENCH", channel="C0BENCH")
        acked = time.time()
        assert f"*L{launch_id}* queued" in answer.body, answer.body
        row = wait_until(lambda i=launch_id: (r := deploy.launch(i)) and r.status == "finished" and r, timeout=120,
                         what=f"L{launch_id} to finish", interval=0.05)
        if n < warmup:
            continue
        first, _ = child_lines(deploy.home, row.label)
        t = row.timings
        created = aware(row.created_at).timestamp()
        picked = created + t["queue_ms"] / 1000
        marks = {
            "ack (HTTP answer to the command)": acked - sent,
            "row committed -> picked up by the worker": picked - created,
            "claim the launch": t["claim_ms"] / 1000,
            "fetch the project, build the argv": t["fetch_ms"] / 1000,
            "create the MLflow run": t["mlflow_ms"] / 1000,
            "spawn (Popen returns)": t["spawn_ms"] / 1000,
            "exec -> the training script's first line": first["started"] - t["spawned_at"],
            "total: command -> training process running": first["started"] - sent,
        }
        for name, value in marks.items():
            stages.setdefault(name, []).append(value * 1000)
    print(f"\n1. command -> training process, warm launch worker, {runs} runs ({load()})")
    for name, values in stages.items():
        print(f"   {name:48s} median {statistics.median(values):8.1f} ms   max {max(values):8.1f} ms")
    total = statistics.median(stages["total: command -> training process running"])
    print(f"   verdict: median {total / 1000:.3f} s {'<' if total < 1500 else '>='} 1.5 s")
    return {"median_total_ms": total}


def bench_sweep(deploy: Deployment, spin: float, epochs: int, rounds: int) -> dict[str, Any]:
    from labmate.launch_text import aware
    from models import launches
    from models.db import session_scope

    command = f"sweep quick lr=0.1,0.2,0.3,0.4 note=a,b spin={spin} epochs={epochs} parallel:2"
    times: dict[int, list[float]] = {1: [], 2: []}
    print(f"\n2. a sweep of 8 CPU-bound runs (spin={spin} s x {epochs} epochs each, plus importing mlflow), parallel:2")
    sweep_id = 0
    for _ in range(rounds):
        for processes in (1, 2):
            deploy.restart_launcher(processes)
            sweep_id += 1
            before = load()
            busy0, idle0 = cpu_seconds()
            groups = {proc.process.pid for proc in deploy.lab.procs if proc.process.poll() is None}
            labmate0 = group_cpu_seconds(groups)
            started = time.time()
            answer = deploy.slack.command(command, user="U0BENCH", channel="C0BENCH")
            assert f"Sweep *S{sweep_id}* queued" in answer.body, answer.body

            def due(s: int = sweep_id) -> bool:
                with session_scope(deploy.db) as session:
                    sweep = launches.get_sweep(session, sweep_id=s)
                    return sweep is not None and sweep.summary == "due"

            wait_until(due, timeout=900, what=f"sweep S{sweep_id}", interval=0.1)
            took = time.time() - started
            busy1, idle1 = cpu_seconds()
            labmate = group_cpu_seconds(groups) - labmate0
            with session_scope(deploy.db) as session:
                members = launches.members(session, sweep_id=sweep_id)
                session.expunge_all()
            ours = sum((child_lines(deploy.home, m.label)[1] or {}).get("cpu", 0.0) for m in members)
            assert [m.status for m in members] == ["finished"] * 8, [m.status for m in members]
            spans = sorted((aware(m.started_at).timestamp(), aware(m.ended_at).timestamp()) for m in members)
            busy = sum(end - start for start, end in spans) / (max(e for _, e in spans) - spans[0][0])
            ends = sorted(e for _, e in spans)
            gaps = [min((s - e for s, _ in spans if s >= e), default=0.0) for e in ends[:-processes]]
            times[processes].append(took)
            print(f"   {processes} worker process(es): {took:6.1f} s; runs overlapping on average {busy:.2f}; "
                  f"a freed slot restarts in {statistics.median(gaps) * 1000:.0f} ms (median)\n"
                  f"      machine: {busy1 - busy0:.0f} CPU-s busy, {idle1 - idle0:.0f} idle; the 8 training processes "
                  f"used {ours:.0f} CPU-s ({ours / took:.2f} cores), labmate's serve and workers {labmate:.1f} CPU-s, "
                  f"other tenants the rest\n      before: {before}; after: {load()}")
    one, two = statistics.median(times[1]), statistics.median(times[2])
    pairs = [a / b for a, b in zip(times[1], times[2], strict=True)]
    print(f"   speed-up 1 -> 2 processes: median of medians {one / two:.2f}x; per round {', '.join(f'{p:.2f}x' for p in pairs)}")
    return {"speedup": one / two, "rounds": pairs}


def bench_card(root: Path, fake: FakeSlack, rounds: int, spin: float, epochs: int) -> dict[str, Any]:
    """In this process: the same supervisor a worker runs, with a real SlackPoster against the fake Slack."""
    home = root / "card-home"
    home.mkdir()
    (home / "labmate.toml").write_text(config())
    empty_config(home / "labmate.toml")
    os.environ.update(
        LABMATE_HOME=str(home), LABMATE_CONFIG=str(home / "labmate.toml"), SLACK_BOT_TOKEN="xoxb-test",
        LABMATE_SLACK_API_URL=fake.api_url, MLFLOW_TRACKING_URI=f"sqlite:///{root / 'card-mlflow.db'}",
    )
    os.environ.pop("LABMATE_BROKER_URL", None)
    from bot.post import reset_router, router
    from labmate.bootstrap import prepare
    from labmate.settings import reset_settings
    from models import launches
    from models.db import session_scope
    from tasks.launches import run

    results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    polls: list[float] = []
    original = run._record_progress

    def timed(*args: Any) -> bool:
        started = time.perf_counter()
        try:
            return original(*args)
        finally:
            polls.append(time.perf_counter() - started)

    run._record_progress = timed  # type: ignore[assignment]
    print(f"\n3. the card's cost to the training run (spin={spin} s x {epochs} epochs), {rounds} rounds alternated")
    for n in range(rounds * 2 + 1):
        mode = "off" if n % 2 else "on"
        os.environ["LABMATE_LAUNCH_PROGRESS_EVERY"] = "0.5" if mode == "on" else "1000000"
        reset_settings()
        reset_router()
        prepare()
        router()
        with session_scope() as session:
            launch = launches.create(
                session, user="U0BENCH", channel="C0CARD", project="quick", entry_point="train",
                params={"epochs": str(epochs), "lr": "0.1", "sleep": "0.0", "spin": str(spin), "note": "none",
                        "fail": "0", "data": "data/rows.txt"},
                experiment="quick", reply_to={"channel": "C0CARD", "source": "slack"}, task_id=f"card-{n}",
                total_steps=epochs,
            )
            launch_id, label = launch.id, launch.label
        [(_, context)] = run.run_launch(launch_id)
        assert context["status"] == "finished", context
        first, last = child_lines(home, label)
        if n == 0:
            continue  # warm-up (MLflow's schema, imports)
        results[mode].append((last["ended"] - first["started"], last["cpu"]))
    run._record_progress = original  # type: ignore[assignment]
    edits = len([c for c in fake.calls("chat.update") if c.params.get("channel") == "C0CARD"])
    for mode in ("on", "off"):
        walls = [w for w, _ in results[mode]]
        cpus = [c for _, c in results[mode]]
        print(f"   card {mode:3s}: training wall median {statistics.median(walls):6.3f} s (min {min(walls):.3f}), "
              f"its CPU median {statistics.median(cpus):6.3f} s")
    wall = statistics.median(w for w, _ in results["on"]) / statistics.median(w for w, _ in results["off"])
    cpu = statistics.median(c for _, c in results["on"]) / statistics.median(c for _, c in results["off"])
    print(f"   on / off: wall {wall:.3f}, CPU {cpu:.3f}; {len(polls)} progress reads, median "
          f"{statistics.median(polls) * 1000:.1f} ms each (get_run + one UPDATE), {edits} card edits in Slack")
    return {"wall_ratio": wall, "cpu_ratio": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default=os.environ.get("LABMATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--only", default="latency,sweep,card")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spin", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    only = set(args.only.split(","))
    root = Path(tempfile.mkdtemp(prefix="labmate-bench-launch-"))
    print(f"bench_launch: {load()}; python {sys.version.split()[0]}")
    try:
        if only & {"latency", "sweep"}:
            (root / "deploy").mkdir()
            deploy = Deployment(root / "deploy", args.redis)
            os.environ["LABMATE_DATABASE_URL"] = deploy.db
            try:
                if "latency" in only:
                    bench_latency(deploy, args.runs, warmup=2)
                if "sweep" in only:
                    bench_sweep(deploy, args.spin, args.epochs, args.rounds)
            finally:
                deploy.close()
                os.environ.pop("LABMATE_DATABASE_URL", None)
        if "card" in only:
            with FakeSlack(token="xoxb-test", retry_after=0) as fake:
                bench_card(root, fake, max(3, args.rounds * 2), args.spin, args.epochs * 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
