"""Whole-process time of `labmate say`, as ratios against import floors measured in the same run.

    .venv/bin/python bench/bench_terminal.py [--runs 10]

Targets (issue 9): `say help` and `say "decisions …"` within 1.2x of importing the libraries they
need (the CLI, terminal rendering, settings, the ORM for the audit row, the templates); a job
command within 1.3x of `python -c "import mlflow"` (also shown against importing MLflow and
opening the embedded SQLite store, which an answer through MLflow's client pays); the Slack-facing
process's `import bot.slack_app` within 1.1x of `import slack_bolt, sqlalchemy.orm`. Every command runs once per round
(bench/interleaved.py: a machine whose speed drifts slows them alike), `--runs` rounds after two
warm-up rounds, in a fresh LABMATE_HOME with the demo loaded. `bench/bench_slack_start.py` adds the
Slack process's time to ready and `labmate serve`'s restart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_slack_start import FLOOR as SLACK_FLOOR
from bench.bench_slack_start import IMPORT as SLACK_IMPORT
from bench.config import empty_config
from bench.interleaved import report, rounds, timed

BIN = Path(sys.executable).parent
PY = sys.executable
LABMATE = str(BIN / "labmate")
# The libraries a `say` command needs, with typer's own run time: typer converts a command's
# arguments through pydantic (typer._adapters) when it runs one, which `import typer` doesn't load,
# so the floor runs a typer command that does nothing.
FLOOR_KB = (
    "import typer, rich.console, msgspec, sqlalchemy.orm, jinja2\n"
    "app = typer.Typer()\n"
    "app.command()(lambda text, json=False: None)\n"
    "app(['help'], standalone_mode=False)"
)
# What any answer from the embedded MLflow store costs MLflow itself: its import, then opening the
# SQLite store (its SQLAlchemy store module and mapper configuration) for one lookup.
FLOOR_STORE = (
    "import os, mlflow; mlflow.MlflowClient('sqlite:///' + os.environ['LABMATE_HOME'] + '/mlflow.db')"
    ".get_experiment_by_name('sales-agent')"
)
# labmate's CLI freezes the collector as it exits (labmate/cli.py main), which skips the last
# collection over everything imported. The same floors with that exit, for a like-for-like ratio.
FROZEN_EXIT = "\nimport gc; gc.freeze()"
COMMANDS = {
    "floor: KB libraries": [PY, "-c", FLOOR_KB],
    "floor: KB libraries, frozen exit": [PY, "-c", FLOOR_KB + FROZEN_EXIT],
    "floor: import mlflow": [PY, "-c", "import mlflow"],
    "floor: import mlflow, frozen exit": [PY, "-c", "import mlflow" + FROZEN_EXIT],
    "floor: mlflow + store": [PY, "-c", FLOOR_STORE],
    "say help": [LABMATE, "say", "help"],
    "say decisions": [LABMATE, "say", "decisions candidate"],
    "say best (job)": [LABMATE, "say", "best sales-agent val_f1"],
    "floor: Bolt + ORM": [PY, "-c", SLACK_FLOOR],
    "import bot.slack_app": [PY, "-c", SLACK_IMPORT],
}
RATIOS = [
    ("say help", "floor: KB libraries", 1.2),
    ("say help", "floor: KB libraries, frozen exit", None),
    ("say decisions", "floor: KB libraries", 1.2),
    ("say decisions", "floor: KB libraries, frozen exit", None),
    ("say best (job)", "floor: import mlflow", 1.3),
    ("say best (job)", "floor: import mlflow, frozen exit", None),
    ("say best (job)", "floor: mlflow + store", 1.3),
    ("import bot.slack_app", "floor: Bolt + ORM", 1.1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="rounds: each round runs every command once")
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
        empty_config(Path(tmp) / "labmate.toml")
        env.update(LABMATE_HOME=str(Path(tmp) / "home"), LABMATE_CONFIG=str(Path(tmp) / "labmate.toml"))
        subprocess.run([LABMATE, "demo"], env=env, check=True, capture_output=True)
        for text in ("decide ship the candidate #release", "decide keep the candidate's bigram features #features"):
            subprocess.run([LABMATE, "say", text], env=env, check=True, capture_output=True)
        runners = {name: timed(argv, cwd=Path(tmp), env=env) for name, argv in COMMANDS.items()}
        times = rounds(runners, args.runs, warmup=2)
    # Means show what a user waits; medians and minimums are steadier on a shared machine.
    report(times, RATIOS)
    print(f"\n{args.runs} interleaved rounds; load average (1 min) at the end: {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
