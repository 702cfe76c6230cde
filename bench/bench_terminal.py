"""Whole-process time of `labmate say`, as ratios against import floors measured in the same run.

    .venv/bin/python bench/bench_terminal.py [--runs 10]

Targets (issue 9): `say help` and `say "decisions …"` within 1.2x of importing the libraries they
need (the CLI, terminal rendering, settings, the ORM for the audit row, the templates); a job
command within 1.3x of `python -c "import mlflow"` (also shown against importing MLflow and
opening the embedded SQLite store, which an answer through MLflow's client pays); the Slack-facing
process's `import bot.slack_app` within 1.1x of `import slack_bolt, sqlalchemy.orm`. Uses hyperfine (warm-up runs first, then
`--runs` timed runs of each command, interleaved by hyperfine command by command) in a fresh
LABMATE_HOME with the demo loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
PY = shlex.quote(sys.executable)
LABMATE = shlex.quote(str(BIN / "labmate"))
FLOOR_KB = "import typer, rich.console, msgspec, sqlalchemy.orm, jinja2"
FLOOR_SLACK = "import slack_bolt, sqlalchemy.orm"
# What any answer from the embedded MLflow store costs MLflow itself: its import, then opening the
# SQLite store (its SQLAlchemy store module and mapper configuration) for one lookup.
FLOOR_STORE = (
    "import os, mlflow; mlflow.MlflowClient('sqlite:///' + os.environ['LABMATE_HOME'] + '/mlflow.db')"
    ".get_experiment_by_name('sales-agent')"
)
COMMANDS = {
    "floor: KB libraries": f"{PY} -c {shlex.quote(FLOOR_KB)}",
    "floor: import mlflow": f"{PY} -c 'import mlflow'",
    "floor: mlflow + store": f"{PY} -c {shlex.quote(FLOOR_STORE)}",
    "say help": f"{LABMATE} say help",
    "say decisions": f"{LABMATE} say 'decisions candidate'",
    "say best (job)": f"{LABMATE} say 'best sales-agent val_f1'",
    "floor: Bolt + ORM": f"{PY} -c {shlex.quote(FLOOR_SLACK)}",
    "import bot.slack_app": f"{PY} -c 'import bot.slack_app'",
}
RATIOS = (
    ("say help", "floor: KB libraries", 1.2),
    ("say decisions", "floor: KB libraries", 1.2),
    ("say best (job)", "floor: import mlflow", 1.3),
    ("say best (job)", "floor: mlflow + store", 1.3),
    ("import bot.slack_app", "floor: Bolt + ORM", 1.1),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labmate-bench-terminal-") as tmp:
        # As a user's shell runs it: Python caches compiled modules (PYTHONDONTWRITEBYTECODE, set on
        # some CI machines, would make every run compile labmate's modules while the floors import
        # pip-compiled libraries).
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_")) and k != "PYTHONDONTWRITEBYTECODE"
        }
        env.update(LABMATE_HOME=str(Path(tmp) / "home"), LABMATE_CONFIG=str(Path(tmp) / "labmate.toml"))
        subprocess.run([str(BIN / "labmate"), "demo"], env=env, check=True, capture_output=True)
        for text in ("decide ship the candidate #release", "decide keep the candidate's bigram features #features"):
            subprocess.run([str(BIN / "labmate"), "say", text], env=env, check=True, capture_output=True)
        out = Path(tmp) / "hyperfine.json"
        argv = ["hyperfine", "--warmup", "2", "--runs", str(args.runs), "--export-json", str(out), "--style", "none"]
        for name, command in COMMANDS.items():
            argv += ["--command-name", name, command]
        subprocess.run(argv, env=env, check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        results = {r["command"]: r for r in json.loads(out.read_text())["results"]}
    print(f"{'command':<22} {'mean':>8} {'stddev':>8} {'min':>8}")
    for name, r in results.items():
        print(f"{name:<22} {r['mean']:8.3f} {r['stddev']:8.3f} {r['min']:8.3f}")
    print()
    # Means show what a user waits; minimums are steadier on a shared machine (load only adds time).
    for name, floor, target in RATIOS:
        ratio = results[name]["mean"] / results[floor]["mean"]
        low = results[name]["min"] / results[floor]["min"]
        verdict = "met" if ratio <= target else "NOT met"
        print(f"{name:<22} {ratio:5.2f}x {floor} by mean, {low:5.2f}x by min (target {target}x: {verdict})")
    load = os.getloadavg()[0]
    print(f"\nload average (1 min) at the end: {load:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
