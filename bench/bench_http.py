"""Acknowledged slash commands per second through a real `labmate serve`, commands enqueued to Redis.

    .venv/bin/python bench/bench_http.py [--workers 2] [--threads 8] [--duration 10] [--connections 32]

- Starts the fake Slack (tests/slack/fakeslack.py) and `labmate serve` on loopback with
  LABMATE_BROKER_URL=redis://127.0.0.1:6379/14 (no Celery worker runs: jobs stay queued).
- Load: `wrk` (second process) replaying pre-signed `/lab decide … run:<id>` requests, each with its
  own trigger_id (wrk's Lua has no HMAC, so the requests are signed here beforehand, within
  Slack's 5-minute window). Falls back to a multi-process http.client keep-alive client.
- Afterwards: LLEN of the `default` queue must equal the acknowledged commands (each enqueued
  exactly once), then the run's own keys (its LABMATE_BROKER_KEY_PREFIX) are deleted. Reports the serve tree's RSS and PSS, the Slack
  app's import time, and whether mlflow gets imported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "slack"))
sys.path.insert(0, str(REPO))  # for bench.config
from bench.config import empty_config  # noqa: E402

SECRET = "bench-signing-secret"
REDIS_URL = "redis://127.0.0.1:6379/14"
PREFIX = f"bench-http-{os.getpid()}:"
"""Every key this run makes in Redis starts with this (LABMATE_BROKER_KEY_PREFIX); only those are deleted."""
RUN_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
# summary: a job command (no database work on the ack path, the worker audits it);
# decide: a decision written to the knowledge base before the ack, plus its link-check job.
COMMANDS = {
    "summary": "summary sales-agent val_f1 top:5",
    "decide": "decide ship candidate {i} with the new tokenizer #release run:{run}",
}
COMMAND = os.environ.get("BENCH_COMMAND", "summary")
LABMATE = Path(sys.executable).with_name("labmate")


def signed_request(i: int, ts: str) -> tuple[str, dict[str, str]]:
    from slack_sdk.signature import SignatureVerifier

    body = urllib.parse.urlencode(
        {
            "token": "x",
            "team_id": "T0LABMATE",
            "channel_id": "C0BENCH",
            "user_id": f"U0BENCH{i % 50}",
            "command": "/lab",
            "text": COMMANDS[COMMAND].format(i=i, run=RUN_ID),
            "response_url": "http://127.0.0.1:9/response",
            "trigger_id": f"{i}.{uuid.uuid4().hex}",
        }
    )
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body) or ""
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("labmate serve exited during start")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("labmate serve did not become healthy")


def tree(pid: int) -> list[int]:
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids += tree(int(child))
    return pids


def memory(pid: int) -> tuple[float, float]:
    rss = pss = 0
    for p in tree(pid):
        status = Path(f"/proc/{p}/status").read_text()
        rss += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        pss += int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1))  # type: ignore[union-attr]
    return rss / 1024, pss / 1024


def queued_keys(queue: Any) -> list[str]:
    """The idempotency key (the Slack trigger id) of every job waiting in the `default` queue."""
    import base64

    keys = []
    for raw in queue.lrange(f"{PREFIX}default", 0, -1):
        message = json.loads(raw)
        body = base64.b64decode(message["body"]) if message.get("properties", {}).get("body_encoding") == "base64" else message["body"]
        _args, kwargs, _embed = json.loads(body)
        keys.append(kwargs["reply_to"]["audit"]["idempotency_key"])
    return keys


# -- wrk -------------------------------------------------------------------------------------

LUA = r"""
-- One pre-signed request per line: timestamp, signature, body (a Lua table constructor of 40,000
-- requests would overflow LuaJIT's constant limit, so they're read line by line).
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
statuses = ""

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  nthreads = %(threads)d
  acked = 0
  other = 0
end

function request()
  local i = id + 1 + counter * nthreads
  counter = counter + 1
  if i > #requests then
    i = ((i - 1) %% #requests) + 1
  end
  return requests[i]
end

function response(status, headers, body)
  if status == 200 and not string.find(body, ':warning:', 1, true) then
    acked = acked + 1
  else
    other = other + 1
    if other <= 3 then statuses = statuses .. " " .. status .. ":" .. string.sub(body, 1, 80) end
  end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("acked")
    o = o + t:get("other")
    if t:get("statuses") ~= "" then io.write("first other answers:" .. t:get("statuses") .. "\n") end
  end
  io.write(string.format("JSON{\"acked\": %%d, \"other\": %%d, \"p50_ms\": %%.3f, \"p99_ms\": %%.3f, \"max_ms\": %%.3f, \"requests\": %%d, \"duration_s\": %%.3f, \"errors\": %%d}\n",
    a, o, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status))
end
"""


def run_wrk(port: int, count: int, threads: int, connections: int, duration: int, workdir: Path) -> dict[str, float]:
    ts = str(int(time.time()))
    lines = []
    for i in range(count):
        body, headers = signed_request(i, ts)
        lines.append(f"{headers['X-Slack-Request-Timestamp']}\t{headers['X-Slack-Signature']}\t{body}")
    data = workdir / "requests.tsv"
    data.write_text("\n".join(lines) + "\n")
    script = workdir / "signed.lua"
    script.write_text(LUA % {"data": str(data), "threads": threads})
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "--latency",
        "-s", str(script), f"http://127.0.0.1:{port}/slack/events",
    ]
    print("$", " ".join(command))
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    print(out)
    result = json.loads(out[out.index("JSON{") + 4 :].splitlines()[0])
    if result["requests"] > count:
        raise SystemExit(f"wrk sent {result['requests']} requests but only {count} were signed: raise --pool")
    return result


# -- Python fallback -------------------------------------------------------------------------


def _client(args: tuple[int, list[tuple[str, dict[str, str]]], float]) -> tuple[int, int, list[float]]:
    import http.client

    port, requests, _ = args
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    acked = other = 0
    latencies = []
    for body, headers in requests:  # bounded: every request is sent and its answer read
        started = time.perf_counter()
        connection.request("POST", "/slack/events", body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if answer.status == 200 and b':warning:' not in data:
            acked += 1
        else:
            other += 1
    connection.close()
    return acked, other, latencies


def run_python(port: int, count: int, connections: int, duration: int) -> dict[str, float]:
    ts = str(int(time.time()))
    requests = [signed_request(i, ts) for i in range(count)]
    chunks = [requests[i::connections] for i in range(connections)]
    started = time.monotonic()
    deadline = started + duration
    with multiprocessing.Pool(connections) as pool:
        results = pool.map(_client, [(port, chunk, deadline) for chunk in chunks])
    elapsed = time.monotonic() - started
    latencies = sorted(x for _, _, lat in results for x in lat)
    return {
        "acked": sum(r[0] for r in results),
        "other": sum(r[1] for r in results),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "max_ms": latencies[-1],
        "requests": len(latencies),
        "duration_s": elapsed,
        "errors": 0,
    }


def import_time() -> float:
    code = "import time; t = time.perf_counter(); from bot.slack_app import build_app; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout) for _ in range(5)]
    return statistics.median(runs)


def main() -> None:
    global COMMAND
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--pool", type=int, default=40_000, help="pre-signed requests (one trigger_id each)")
    parser.add_argument("--requests", type=int, default=4000, help="python client: total requests (bounded loop)")
    parser.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk",
        help="python (default): bounded, every answer read, so LLEN must equal the acknowledged count; "
        "wrk: fixed duration, requests still in flight when it stops are not counted",
    )
    parser.add_argument("--command", choices=sorted(COMMANDS), default="summary", help="which slash command to send")
    args = parser.parse_args()
    COMMAND = args.command

    import redis
    from fakeslack import FakeSlack

    queue = redis.Redis.from_url(REDIS_URL)
    with FakeSlack() as fake, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "SLACK_", "MLFLOW_"))}
        empty_config(Path(tmp) / "labmate.toml")
        env.update(
            LABMATE_HOME=str(home),
            LABMATE_CONFIG=str(Path(tmp) / "labmate.toml"),
            LABMATE_BROKER_URL=REDIS_URL,
            LABMATE_BROKER_KEY_PREFIX=PREFIX,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET=SECRET,
            LABMATE_SLACK_API_URL=fake.api_url,
        )
        port = free_port()
        command = [str(LABMATE), "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(args.workers), "--threads", str(args.threads)]
        print("$", " ".join(command), f"(LABMATE_BROKER_URL={REDIS_URL})")
        log = (Path(tmp) / "serve.log").open("wb")
        process = subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(port, process)
            rss0, pss0 = memory(process.pid)
            use_wrk = args.client == "wrk"
            if use_wrk:
                if not shutil.which("wrk"):
                    raise SystemExit("wrk is not installed (apt-get install -y wrk)")
                result = run_wrk(port, args.pool, args.wrk_threads, args.connections, args.duration, Path(tmp))
            else:
                result = run_python(port, args.requests, args.connections, args.duration)
            rss, pss = memory(process.pid)
            processes = len(tree(process.pid))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            log.close()
        keys = queued_keys(queue)
        queued = len(keys)
        for key in queue.scan_iter(f"{PREFIX}*"):
            queue.delete(key)
        queue.close()

    rate = result["acked"] / result["duration_s"]
    print(f"client: {'wrk' if use_wrk else 'python http.client'}; serve: {args.workers} workers × {args.threads} threads")
    print(f"acknowledged commands: {result['acked']} in {result['duration_s']:.2f} s = {rate:,.0f}/s "
          f"(other answers: {result['other']}, socket errors: {result['errors']})")
    print(f"latency: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms")
    distinct = len(set(keys))
    duplicates = queued - distinct
    in_flight = queued - result["acked"]
    # Enqueued but not counted as acknowledged: requests still in flight when wrk stopped (at most
    # one per connection), plus requests wrk gave up on (its socket errors: answered too late).
    # The python client reads every answer, so there it must be zero.
    allowed = args.connections + result["errors"] if use_wrk else 0
    exactly_once = duplicates == 0 and 0 <= in_flight <= allowed
    print(f"Redis queue `default`: {queued} jobs, {distinct} distinct commands (trigger ids), {duplicates} duplicates; "
          f"acknowledged {result['acked']}, enqueued but unacknowledged {in_flight} (at most {allowed}): "
          f"{'OK, every acknowledged command enqueued exactly once' if exactly_once else 'MISMATCH'}")
    print(f"serve tree ({processes} processes) idle: RSS {rss0:.1f} MB, PSS {pss0:.1f} MB; "
          f"after load: RSS {rss:.1f} MB, PSS {pss:.1f} MB")
    check = "import bot.server, bot.slack_app, sys; print('mlflow' in sys.modules)"
    mlflow_loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO).stdout.strip()
    print(f"import time of bot.slack_app.build_app (median of 5 fresh processes): {import_time():.3f} s")
    print(f"'mlflow' in sys.modules after importing bot.server and bot.slack_app: {mlflow_loaded}")
    if not exactly_once:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
