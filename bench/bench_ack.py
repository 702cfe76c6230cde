"""Slash-command ack path in process: a signed request through the real Bolt app to its ack.

    .venv/bin/python bench/bench_ack.py [--requests 2000] [--profile decide|help|summary]

Measures `app.dispatch(BoltRequest(...))` (signature check, authorization, routing, listener,
ack) for `summary` (a job command: enqueued to Redis, the worker writes its audit row),
`decide` (writes a decision and an audit row to SQLite) and `help` (answers only, audit row),
against a bare Bolt App that only acks (process_before_response=True, same signing secret,
token verification off), all in the same run. Requests are signed beforehand, as Slack would.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "slack"))
sys.path.insert(0, str(REPO))  # for bench.config
from bench.config import empty_config  # noqa: E402

SECRET = "bench-signing-secret"
PREFIX = f"bench-ack-{os.getpid()}:"
"""This run's Redis keys (LABMATE_BROKER_KEY_PREFIX): only they are deleted afterwards."""


def signed(text: str, i: int) -> tuple[str, dict[str, str]]:
    from slack_sdk.signature import SignatureVerifier

    body = urllib.parse.urlencode(
        {
            "token": "x",
            "team_id": "T0LABMATE",
            "channel_id": "C0BENCH",
            "user_id": "U0BENCH",
            "command": "/lab",
            "text": text,
            "response_url": "http://127.0.0.1:9/response",
            "trigger_id": f"{i}.{uuid.uuid4().hex}",
        }
    )
    ts = str(int(time.time()))
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body) or "",
    }
    return body, headers


def measure(app: Any, text: Callable[[int], str], n: int, warmup: int = 100) -> list[float]:
    from slack_bolt import BoltRequest

    requests = [signed(text(i), i) for i in range(n + warmup)]
    times: list[float] = []
    for i, (body, headers) in enumerate(requests):
        started = time.perf_counter()
        response = app.dispatch(BoltRequest(body=body, headers=headers))
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"request {i} answered {response.status}: {response.body}")
        if i >= warmup:
            times.append(elapsed * 1000)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bare_app(api_url: str) -> Any:
    from slack_bolt import Ack, App
    from slack_sdk import WebClient

    app = App(
        client=WebClient(token="xoxb-test", base_url=api_url),
        signing_secret=SECRET,
        process_before_response=True,
        token_verification_enabled=False,
    )

    @app.command("/lab")
    def on_command(ack: Ack) -> None:
        ack()

    return app


# The same message the summary command enqueues: its arguments, where the answer goes, its audit.
SUMMARY_JOB = {
    "experiment": "sales-agent",
    "metric": "val_f1",
    "top": 5,
    "understood": "",
    "reply_to": {
        "user": "U0BENCH",
        "channel": "C0BENCH",
        "source": "slack",
        "thread_ts": None,
        "response_url": "http://127.0.0.1:9/response",
        "session": "",
        "audit": {
            "user": "U0BENCH",
            "channel": "C0BENCH",
            "source": "slack",
            "verb": "summary",
            "text": "summary sales-agent val_f1 top:5",
            "ack_ms": 0.3,
            "idempotency_key": "cmd:1.0123456789abcdef0123456789abcdef",
        },
    },
    "audit_id": None,
}


def measure_enqueue(n: int) -> tuple[float, float]:
    """The enqueue on its own: the same send_task the bot does, without the request around it."""
    from tasks.client import enqueue

    times = []
    for i in range(n + 100):
        start = time.perf_counter()
        enqueue("labmate.experiments.summary", {**SUMMARY_JOB, "i": i})
        times.append((time.perf_counter() - start) * 1000)
    return summary(times[100:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", choices=["decide", "help", "summary"], help="profile this command with cProfile")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13", help="broker the job commands go to")
    args = parser.parse_args()

    from fakeslack import FakeSlack

    with FakeSlack() as fake, tempfile.TemporaryDirectory() as home:
        empty_config(Path(home) / "labmate.toml")
        os.environ.update(
            LABMATE_HOME=home,
            LABMATE_CONFIG=str(Path(home) / "labmate.toml"),
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET=SECRET,
            LABMATE_SLACK_API_URL=fake.api_url,
            LABMATE_BROKER_URL=args.broker,
            LABMATE_BROKER_KEY_PREFIX=PREFIX,
        )
        import logging

        logging.basicConfig(level=logging.WARNING)
        from labmate.bootstrap import prepare

        prepare()
        from bot.slack_app import build_app

        ours = build_app(token_verification=False)
        floor = bare_app(fake.api_url)
        texts: dict[str, Callable[[int], str]] = {
            "decide": lambda i: f"decide ship candidate {i} with the new tokenizer #release",
            "help": lambda i: "help",
            "summary": lambda i: "summary sales-agent val_f1 top:5",
        }
        if args.profile:
            import cProfile
            import pstats

            measure(ours, texts[args.profile], 200)
            profiler = cProfile.Profile()
            profiler.enable()
            measure(ours, texts[args.profile], args.requests, warmup=0)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
            return

        results: dict[str, tuple[float, float]] = {}
        # Interleave rounds so drift (CPU frequency, SQLite WAL growth) hits every case alike.
        collected: dict[str, list[float]] = {"bare ack": [], "summary": [], "help": [], "decide": []}
        rounds = 4
        per_round = max(1, args.requests // rounds)
        for _ in range(rounds):
            collected["bare ack"] += measure(floor, lambda i: "help", per_round)
            collected["summary"] += measure(ours, texts["summary"], per_round)
            collected["help"] += measure(ours, texts["help"], per_round)
            collected["decide"] += measure(ours, texts["decide"], per_round)
        for name, times in collected.items():
            results[name] = summary(times)
        enqueue = measure_enqueue(per_round * rounds)
        if args.broker.startswith("redis://"):
            import redis

            client = redis.Redis.from_url(args.broker)
            for key in client.scan_iter(f"{PREFIX}*"):
                client.delete(key)

        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {per_round * rounds} requests per case")
        print(f"{'case':<10} {'median ms':>10} {'p99 ms':>10} {'median ×floor':>14} {'p99 ×floor':>11}")
        floor_median, floor_p99 = results["bare ack"]
        for name, (median, p99) in results.items():
            print(f"{name:<10} {median:>10.3f} {p99:>10.3f} {median / floor_median:>14.2f} {p99 / floor_p99:>11.2f}")
        enqueue_median, enqueue_p99 = enqueue
        budget = 3 * floor_median + enqueue_median
        print(f"enqueue alone (send_task to {args.broker}): median {enqueue_median:.3f} ms, p99 {enqueue_p99:.3f} ms")
        print(
            f"target for a job command: 3 x floor + enqueue = {budget:.3f} ms; "
            f"summary median {results['summary'][0]:.3f} ms -> {'met' if results['summary'][0] <= budget else 'missed'}"
        )


if __name__ == "__main__":
    main()
