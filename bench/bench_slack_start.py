"""Start-up of the Slack-facing process: `import bot.slack_app` against its floor
`import slack_bolt, sqlalchemy.orm` (issue 9's target: within 1.1x); the time until the served
app is ready in one process (`bot.server.wsgi_app()`: settings, database check, Bolt app, warm-up
of handlers, templates and the job client); and what a deploy or a crash restart waits for:
`labmate serve` started until its first `/healthz` answer (the CLI, migrations check, Slack's
auth.test against a local fake Slack, then uWSGI and its worker loading the app).

Commands run interleaved, one of each per round, so a machine whose speed drifts (shared CPUs)
slows every command alike instead of whichever ran during the slow minute. `--against DIR` adds
another checkout (e.g. `git worktree add /tmp/old <commit>`) to the same rounds, for a before and
after measured together; it runs with this checkout's Python and packages.

    .venv/bin/python bench/bench_slack_start.py --rounds 30 [--against /tmp/old]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "slack")]
from fakeslack import FakeSlack  # noqa: E402
from slackreq import free_port  # noqa: E402

from bench.config import empty_config  # noqa: E402
from bench.interleaved import Runner, report, rounds, timed  # noqa: E402

FLOOR = "import slack_bolt, sqlalchemy.orm"
IMPORT = "import bot.slack_app"
READY = "from bot.server import wsgi_app; wsgi_app()"
# What the import adds to the floor, layer by layer (--layers): each imports the floor and what the
# layers above it add, so the step from one to the next is that layer's share of the whole process.
LAYERS = {
    "+ jinja2": ["jinja2"],
    "+ msgspec": ["jinja2", "msgspec"],
    "+ ORM models": ["jinja2", "msgspec", "models.audit", "models.decision"],
    "+ grammar, settings": ["jinja2", "msgspec", "models.audit", "models.decision", "bot.grammar", "labmate.settings"],
}


def _serve_ready(cwd: Path, env: dict[str, str]) -> float:
    """`labmate serve` until its first 200 on /healthz; then stopped."""
    port = free_port()
    started = time.perf_counter()
    serve = subprocess.Popen([sys.executable, "-m", "labmate.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                             cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except OSError:
                if serve.poll() is not None:
                    raise SystemExit(f"labmate serve exited with {serve.returncode} in {cwd}") from None
                time.sleep(0.005)
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--against", type=Path, help="another checkout to measure in the same rounds")
    parser.add_argument("--layers", action="store_true",
                        help="also time the floor plus each layer of the import (jinja2, msgspec, ORM models, grammar)")
    args = parser.parse_args()
    checkouts = {"this": ROOT} | ({"against": args.against.resolve()} if args.against else {})
    with tempfile.TemporaryDirectory(prefix="labmate-bench-slack-") as tmp, FakeSlack(token="xoxb-bench") as slack:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_")) and k != "PYTHONDONTWRITEBYTECODE"}
        empty_config(Path(tmp) / "labmate.toml")
        env.update(LABMATE_HOME=str(Path(tmp) / "home"), LABMATE_CONFIG=str(Path(tmp) / "labmate.toml"),
                   SLACK_BOT_TOKEN="xoxb-bench", SLACK_SIGNING_SECRET="bench-secret", LABMATE_SLACK_API_URL=slack.api_url)
        subprocess.run([sys.executable, "-m", "labmate.cli", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        runners: dict[str, Runner] = {"floor": timed([sys.executable, "-c", FLOOR], cwd=ROOT, env=env)}
        ratios: list[tuple[str, str, float | None]] = []
        if args.layers:
            for layer, modules in LAYERS.items():
                runners[layer] = timed([sys.executable, "-c", ", ".join([FLOOR, *modules])], cwd=ROOT, env=env)
                ratios.append((layer, "floor", None))
        for label, checkout in checkouts.items():
            # Each checkout first on sys.path (uWSGI's workers too), ahead of the editable install.
            here = {**env, "PYTHONPATH": str(checkout)}
            runners[f"{label}: import"] = timed([sys.executable, "-c", IMPORT], cwd=checkout, env=here)
            runners[f"{label}: ready"] = timed([sys.executable, "-c", READY], cwd=checkout, env=here)
            runners[f"{label}: serve"] = lambda checkout=checkout, here=here: _serve_ready(checkout, here)
            ratios += [(f"{label}: import", "floor", 1.1), (f"{label}: ready", "floor", None)]
        times = rounds(runners, args.rounds)
    report(times, ratios)
    print(f"\n{args.rounds} interleaved rounds; load average (1 min) at the end: {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs. The target is the import's (1.1x); ready and serve are what a restart waits for.")


if __name__ == "__main__":
    main()
