"""A long soak of `labmate serve`: many keep-alive clients at a steady rate, nothing may be lost.

    .venv/bin/python bench/bench_soak.py [--minutes 30] [--rate 200] [--connections 200] [--kb postgres|sqlite]

- The served app (`labmate serve`, as deployed), the fake Slack, Redis (a key prefix of this run),
  the knowledge base on PostgreSQL (a schema of this run, dropped afterwards) or SQLite.
- Load: an asyncio client holding `--connections` keep-alive connections, each sending a signed
  `/lab decide …` every connections/rate seconds (signed as it goes: Slack's signatures are only good
  for five minutes, so a pre-signed pool can't last a long soak).
- Every minute: commands acknowledged, p50/p99/max latency, errors, the serve tree's RSS.
- At the end: each acknowledged command must be one committed decision (none lost, none doubled),
  and the serve tree's memory must not have grown.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "slack"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))  # for bench.config
from bench_http import free_port, memory, wait_healthy  # noqa: E402

from bench.config import empty_config  # noqa: E402

SECRET = b"bench-signing-secret"
REDIS_URL = "redis://127.0.0.1:6379/14"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
LABMATE = Path(sys.executable).with_name("labmate")


def signed(i: int, run: str) -> bytes:
    body = urllib.parse.urlencode({
        "token": "x", "team_id": "T0LABMATE", "channel_id": "C0SOAK", "user_id": f"U0SOAK{i % 50}",
        "command": "/lab", "text": f"decide soak {run} {i} keep the candidate #soak",
        "response_url": "http://127.0.0.1:9/response", "trigger_id": f"{i}.{uuid.uuid4().hex}",
    }).encode()
    ts = str(int(time.time()))
    signature = "v0=" + hmac.new(SECRET, b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: labmate\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nX-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {signature}\r\n\r\n"
    )
    return head.encode() + body


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.acked = 0
        self.errors = 0
        self.sent = 0

    def take(self) -> tuple[list[float], int, int]:
        latencies, acked, errors = self.latencies, self.acked, self.errors
        self.latencies, self.acked, self.errors = [], 0, 0
        return latencies, acked, errors


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    chunked = False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while (size := int((await reader.readline()).strip(), 16)) > 0:
        body += await reader.readexactly(size)
        await reader.readline()
    await reader.readline()
    return status, body


async def client(port: int, index: int, period: float, until: float, stats: Stats, counter: list[int], run: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    next_at = time.monotonic() + (index / max(1, 1 / period)) % period
    try:
        while (now := time.monotonic()) < until:
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at += period
            counter[0] += 1
            request = signed(counter[0], run)
            started = time.perf_counter()
            stats.sent += 1
            try:
                writer.write(request)
                await writer.drain()
                status, body = await asyncio.wait_for(read_response(reader), timeout=10)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                stats.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            stats.latencies.append((time.perf_counter() - started) * 1000)
            if status == 200 and b":warning:" not in body:
                stats.acked += 1
            else:
                stats.errors += 1
    finally:
        writer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


async def soak(port: int, pid: int, args: argparse.Namespace, run: str) -> tuple[int, list[tuple[float, float]]]:
    stats = Stats()
    counter = [0]
    period = args.connections / args.rate
    until = time.monotonic() + args.minutes * 60
    tasks = [asyncio.create_task(client(port, i, period, until, stats, counter, run)) for i in range(args.connections)]
    total = 0
    rss_samples: list[tuple[float, float]] = []
    started = time.monotonic()
    print(f"{'minute':>6} {'acked/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7} {'RSS MB':>7}", flush=True)
    while time.monotonic() < until:
        await asyncio.sleep(min(args.report_every, max(0.1, until - time.monotonic())))
        latencies, acked, errors = stats.take()
        total += acked
        rss, _pss = memory(pid)
        elapsed = time.monotonic() - started
        rss_samples.append((elapsed, rss))
        print(f"{elapsed / 60:6.1f} {acked / args.report_every:8.1f} {percentile(latencies, 0.5):8.1f} "
              f"{percentile(latencies, 0.99):8.1f} {max(latencies, default=0):8.1f} {errors:7} {rss:7.1f}", flush=True)
    await asyncio.gather(*tasks)
    latencies, acked, errors = stats.take()
    return total + acked, rss_samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--kb", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--report-every", type=float, default=60)
    args = parser.parse_args()
    import redis
    from fakeslack import FakeSlack
    from sqlalchemy import create_engine, text

    run = uuid.uuid4().hex[:8]
    prefix = f"bench-soak-{run}:"
    schema = f"soak_{run}"
    admin = create_engine(POSTGRES.replace("postgresql://", "postgresql+psycopg://"))
    with FakeSlack() as fake, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        if args.kb == "postgres":
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            database_url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
        else:
            database_url = f"sqlite:///{home / 'labmate.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "SLACK_", "MLFLOW_"))}
        empty_config(Path(tmp) / "labmate.toml")
        env.update(LABMATE_HOME=str(home), LABMATE_CONFIG=str(Path(tmp) / "labmate.toml"), LABMATE_BROKER_URL=REDIS_URL,
                   LABMATE_BROKER_KEY_PREFIX=prefix, LABMATE_DATABASE_URL=database_url, SLACK_BOT_TOKEN="xoxb-test",
                   SLACK_SIGNING_SECRET=SECRET.decode(), LABMATE_SLACK_API_URL=fake.api_url)
        port = free_port()
        command = [str(LABMATE), "serve", "--host", "127.0.0.1", "--port", str(port)]
        print("$", " ".join(command), f"({args.kb} knowledge base, Redis {REDIS_URL})")
        print(f"{args.connections} keep-alive connections, {args.rate:.0f} `decide` commands/s, {args.minutes} min\n")
        log = (Path(tmp) / "serve.log").open("wb")
        process = subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(port, process)
            rss_start, _ = memory(process.pid)
            acked, samples = asyncio.run(soak(port, process.pid, args, run))
            time.sleep(2)
            rss_end, _ = memory(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
        engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            committed = conn.execute(text("SELECT count(*) FROM decisions")).scalar_one()
            distinct = conn.execute(text("SELECT count(DISTINCT text) FROM decisions")).scalar_one()
        engine.dispose()
        if args.kb == "postgres":
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    later = [rss for elapsed, rss in samples if elapsed >= min(300, args.minutes * 30)]
    print(f"\nacknowledged {acked}, committed {committed} decisions ({distinct} distinct): "
          f"{'nothing lost or doubled' if committed == distinct >= acked else 'MISMATCH'}")
    print(f"serve tree RSS: {rss_start:.1f} MB at start, {rss_end:.1f} MB at the end; "
          f"median after warm-up {statistics.median(later) if later else rss_end:.1f} MB")


if __name__ == "__main__":
    main()
