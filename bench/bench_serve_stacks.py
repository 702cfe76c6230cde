"""Serving stacks side by side: many keep-alive clients, as Slack's and most HTTP clients' pools behave.

    .venv/bin/pip install -e ".[bench]"   # gunicorn, the stack we compare against; and wrk (apt)
    .venv/bin/python bench/bench_serve_stacks.py [--connections 200] [--duration 20] [--stacks a,b,c]

Every stack serves the same WSGI application (`bot.wsgi:application`: the guard, Bolt, dispatch)
with the same environment: the fake Slack (tests/slack/fakeslack.py), a SQLite knowledge base,
jobs enqueued to Redis (LABMATE_BROKER_URL=redis://127.0.0.1:6379/14, a key prefix per run; no
worker runs, jobs stay queued). The load is `wrk` (a second process) holding `--connections`
keep-alive connections, replaying pre-signed `/lab decide …` requests (each commits a decision and
an audit row before it is acknowledged). For each stack it prints requests/s, p50/p99/max
latency, socket errors and timeouts, the decisions committed against the requests acknowledged
(none may be lost), and the serve tree's memory after the load.

Stacks:
- uwsgi-direct: what `labmate serve` ran before: uWSGI `--http11-socket`, 1 process × 4 threads.
  Each thread stays with one keep-alive connection until it closes.
- uwsgi-router: uWSGI's HTTP router (`--http`, C, event-driven) holds the client connections and
  passes each request to a free worker thread over a local socket; 1 process × 8 threads.
- gunicorn-gthread: gunicorn's threaded worker (a selector holds idle keep-alive connections; a
  thread per request); 1 worker × 8 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
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
from bench_http import free_port, memory, tree, wait_healthy  # noqa: E402

from bench.config import empty_config  # noqa: E402

SECRET = "bench-signing-secret"
REDIS_URL = "redis://127.0.0.1:6379/14"
BIN = Path(sys.executable).parent

LUA = r"""
local requests = {}
for line in io.lines("%(data)s") do
  local ts, sig, body = line:match("^(%%S+)\t(%%S+)\t(.*)$")
  requests[#requests + 1] = wrk.format("POST", "/slack/events", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Slack-Request-Timestamp"] = ts,
    ["X-Slack-Signature"] = sig,
  }, body)
end
local counter = 0
local threads = {}
acked = 0
other = 0
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
function init(args) nthreads = %(threads)d end
function request()
  local i = id + 1 + counter * nthreads
  counter = counter + 1
  if i > #requests then i = ((i - 1) %% #requests) + 1 end
  return requests[i]
end
function delay()
  return %(delay_ms)d
end
function response(status, headers, body)
  if status == 200 and not string.find(body, ':warning:', 1, true) then acked = acked + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("acked"); o = o + t:get("other") end
  io.write(string.format("JSON{\"acked\": %%d, \"other\": %%d, \"p50_ms\": %%.3f, \"p99_ms\": %%.3f, \"max_ms\": %%.3f, \"requests\": %%d, \"duration_s\": %%.3f, \"connect\": %%d, \"read\": %%d, \"write\": %%d, \"timeout\": %%d}\n",
    a, o, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.duration / 1e6,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
"""


def command_line(stack: str, port: int) -> list[str]:
    if stack == "uwsgi-direct":
        return [str(BIN / "uwsgi"), f"--http11-socket=127.0.0.1:{port}", "--module=bot.wsgi:application", "--master",
                "--processes=1", "--threads=4", "--lazy-apps", "--need-app", "--die-on-term", "--enable-threads",
                "--single-interpreter", "--disable-logging", "--post-buffering=1"]
    if stack == "uwsgi-router":
        from bot.server import uwsgi_argv

        return uwsgi_argv(host="127.0.0.1", port=port, workers=1, threads=8)
    if stack == "gunicorn-gthread":
        return [str(BIN / "gunicorn"), "-k", "gthread", "-w", "1", "--threads", "8", "--keep-alive", "75",
                "-b", f"127.0.0.1:{port}", "--log-level", "warning", "bot.wsgi:application"]
    raise SystemExit(f"unknown stack {stack}")


def signed_requests(count: int, run: str) -> list[str]:
    from slack_sdk.signature import SignatureVerifier

    ts = str(int(time.time()))
    verifier = SignatureVerifier(SECRET)
    lines = []
    for i in range(count):
        body = urllib.parse.urlencode({
            "token": "x", "team_id": "T0LABMATE", "channel_id": "C0BENCH", "user_id": f"U0BENCH{i % 50}",
            "command": "/lab", "text": f"decide ship candidate {run}-{i} with the new tokenizer #release",
            "response_url": "http://127.0.0.1:9/response", "trigger_id": f"{i}.{uuid.uuid4().hex}",
        })
        lines.append(f"{ts}\t{verifier.generate_signature(timestamp=ts, body=body)}\t{body}")
    return lines


def run_stack(stack: str, args: argparse.Namespace, fake_url: str, tmp: Path) -> dict[str, float | str]:
    home = tmp / stack
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "SLACK_", "MLFLOW_"))}
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    empty_config(home / "labmate.toml")
    env.update(LABMATE_HOME=str(home), LABMATE_CONFIG=str(home / "labmate.toml"), LABMATE_BROKER_URL=REDIS_URL,
               LABMATE_BROKER_KEY_PREFIX=prefix, SLACK_BOT_TOKEN="xoxb-test", SLACK_SIGNING_SECRET=SECRET,
               LABMATE_SLACK_API_URL=fake_url)
    subprocess.run([str(BIN / "labmate"), "db", "upgrade"], env=env, cwd=REPO, check=True, capture_output=True)
    port = free_port()
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(command_line(stack, port), env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_healthy(port, process)
        data = home / "requests.tsv"
        data.write_text("\n".join(signed_requests(args.pool, stack)) + "\n")
        script = home / "signed.lua"
        delay_ms = int(1000 * args.connections / args.rate) if args.rate else 0
        script.write_text(LUA % {"data": str(data), "threads": args.wrk_threads, "delay_ms": delay_ms})
        out = subprocess.run(
            ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.duration}s", "--timeout", "10s",
             "--latency", "-s", str(script), f"http://127.0.0.1:{port}/slack/events"],
            capture_output=True, text=True, check=True,
        ).stdout
        result: dict[str, float | str] = json.loads(out[out.index("JSON{") + 4:].splitlines()[0])
        time.sleep(1)  # requests wrk abandoned at the end finish
        rss, pss = memory(process.pid)
        result["rss_mb"], result["pss_mb"], result["processes"] = rss, pss, len(tree(process.pid))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    with sqlite3.connect(home / "labmate.db") as db:
        result["committed"] = db.execute("SELECT count(*) FROM decisions").fetchone()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stacks", default="uwsgi-direct,uwsgi-router,gunicorn-gthread")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--pool", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=0,
                        help="paced load: each connection waits connections/rate s between requests (0: as fast as answered)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    from fakeslack import FakeSlack

    pace = f"paced at {args.rate:.0f} commands/s in all" if args.rate else "each sending as soon as answered"
    print(f"{args.connections} keep-alive connections for {args.duration} s, {pace}, `decide` commands (a commit each)\n")
    print(f"{'stack':18} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>14} {'acked':>7} "
          f"{'committed':>9} {'RSS MB':>7} {'PSS MB':>7}")
    with FakeSlack() as fake, tempfile.TemporaryDirectory() as tmp:
        for stack in args.stacks.split(","):
            r = run_stack(stack, args, fake.api_url, Path(tmp))
            errors = f"c{r['connect']} r{r['read']} w{r['write']} t{r['timeout']}"
            print(f"{stack:18} {float(r['acked']) / float(r['duration_s']):7.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
                  f"{r['max_ms']:8.1f} {errors:>14} {r['acked']:7} {r['committed']:9} {r['rss_mb']:7.1f} {r['pss_mb']:7.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
