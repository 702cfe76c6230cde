"""Benchmarks for the regression engine; figures go to docs/perf/regress.md.

    .venv/bin/python bench/bench_regress.py                      # both benchmarks, test agents
    .venv/bin/python bench/bench_regress.py --demo               # overhead against the real demo agent

1. Overhead: 500 conversations x 4 turns through the runner vs a plain loop calling the same
   loaded agent directly (same process, same run; best of --rounds). Target: ratio <= 1.10.
2. Scaling: --workers 2 vs --workers 1 on a CPU-bound agent, pool start-up included.
   Target: speed-up >= 1.7 (needs 2 free cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.regress.session import execute, plan  # noqa: E402
from tasks.regress.targets import load_raw, load_target  # noqa: E402

AGENTS = ROOT / "tests" / "regress" / "agents.py"
USER_TURNS = (
    "Hi, I'm Dana",
    "How much for {n} seats?",
    "Can I book a demo? My email is dana{n}@example.com",
    "Bye, thanks!",
)


def write_suite(directory: Path, conversations: int) -> Path:
    lines = ["suite: bench", "conversations:"]
    for n in range(conversations):
        lines += [f"  - id: c{n}", "    tags: [bench]", "    turns:"]
        for text in USER_TURNS:
            lines += [
                f'      - user: "{text.format(n=n)}"',
                "        expect:",
                "          - max-length: 2000",
                '          - not-contains: "Traceback"',
                '          - regex: "\\\\w+"',
            ]
    path = directory / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def plain_loop(agent, conversations: int) -> None:
    for n in range(conversations):
        messages: list[dict[str, str]] = []
        for text in USER_TURNS:
            messages.append({"role": "user", "content": text.format(n=n)})
            out = agent(list(messages))
            reply = out if isinstance(out, str) else out["reply"]
            messages.append({"role": "assistant", "content": reply})


def bench_overhead(uri: str, options: dict, conversations: int, rounds: int, directory: Path) -> float:
    suite = write_suite(directory, conversations)
    run_plan = plan([str(suite)], candidate=uri, options=options)
    load_target(uri, options)  # both sides use an already-loaded agent
    raw = load_raw(uri, options)
    runner_times, loop_times = [], []
    for round_number in range(rounds):
        order = ("loop", "runner") if round_number % 2 == 0 else ("runner", "loop")  # cancel drift
        for side in order:
            start = time.perf_counter()
            if side == "loop":
                plain_loop(raw, conversations)
                loop_times.append(time.perf_counter() - start)
            else:
                report = execute(run_plan, workers=1)
                runner_times.append(time.perf_counter() - start)
                assert report["summary"]["candidate"]["errors"] == 0, report["summary"]
    runner, loop = min(runner_times), min(loop_times)
    turns = conversations * len(USER_TURNS)
    print(f"overhead: agent={uri}")
    print(f"  plain loop : {loop:.3f} s ({loop / turns * 1e3:.3f} ms/turn)")
    print(f"  runner     : {runner:.3f} s ({runner / turns * 1e3:.3f} ms/turn)")
    print(f"  ratio runner/plain = {runner / loop:.3f} (target <= 1.10)")
    return runner / loop


def bench_workers(conversations: int, directory: Path) -> float:
    uri = f"{AGENTS}:cpu_bound"
    suite = write_suite(directory, conversations)
    run_plan = plan([str(suite)], candidate=uri)
    load_target(uri)
    start = time.perf_counter()
    execute(run_plan, workers=1)
    one = time.perf_counter() - start
    start = time.perf_counter()
    execute(run_plan, workers=2)
    two = time.perf_counter() - start
    print(f"workers: agent={uri} conversations={conversations} cpus={os.cpu_count()}")
    print(f"  --workers 1: {one:.2f} s")
    print(f"  --workers 2: {two:.2f} s (pool start-up included)")
    print(f"  speed-up = {one / two:.2f}x (target >= 1.7)")
    return one / two


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", default=f"{AGENTS}:deterministic", help="target for the overhead benchmark")
    parser.add_argument("--demo", action="store_true", help="build the demo MLflow store and use the candidate")
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--worker-conversations", type=int, default=500)
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        options: dict = {}
        uri = args.agent
        if args.demo:
            from tasks.mlflow_io.demo import run_demo

            store = f"sqlite:///{directory}/mlflow.db"
            run_demo(store)
            uri, options = "models:/sales-agent@candidate", {"tracking_uri": store}
        bench_overhead(uri, options, args.conversations, args.rounds, directory)
        if not args.skip_workers:
            bench_workers(args.worker_conversations, directory)


if __name__ == "__main__":
    main()
