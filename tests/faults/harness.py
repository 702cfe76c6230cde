"""The fault harness: real labmate processes (serve, worker, beat) started by the test, with the
faults a test injects itself: a TCP proxy in front of Redis or PostgreSQL that it stops (an outage)
or black-holes (packets dropped, with an iptables DROP on the proxy's port), processes it kills or
pauses, and the fake Slack answering 429/500 or stalling."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SLACK = Path(__file__).resolve().parents[1] / "slack"
if str(SLACK) not in sys.path:
    sys.path.insert(0, str(SLACK))

from fakeslack import FakeSlack  # noqa: E402
from slackreq import BOT_TOKEN, SIGNING_SECRET, OverHTTP, Response, Slack, free_port, healthy, poll  # noqa: E402

LABMATE = Path(sys.executable).with_name("labmate")


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    return poll(check, timeout=timeout, interval=interval, what=what)


def slack_for(lab: Lab, db_url: str = "") -> Slack:
    """Signed requests to this lab's served app, its response_urls pointing at its fake Slack."""
    return Slack(OverHTTP(lab.port), db_url, response_base=lab.fake.base_url + "response/")


def answer_text(answer: Response) -> str:
    """A command's immediate answer: its text and its blocks, as one string to search."""
    import json

    payload = json.loads(answer.body)
    return payload["text"] + " " + json.dumps(payload.get("blocks", []))


# -- a TCP proxy the test controls -----------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `stop()` refuses new connections and cuts the open ones
    (the service is down); `start()` brings it back on the same port; `blackhole()` drops every packet
    sent to the port (iptables), so clients wait for answers that never come; `freeze()` does the same
    without root: the connections stay open and what either side sends is held until `thaw()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._dropping = False
        self._flowing = threading.Event()
        self._flowing.set()

    def start(self) -> TcpProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(128)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._server is not server:  # stopped while this connection was being made: it must not live
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, including one accepted a moment ago whose
        upstream was still being opened (it is closed by its accept thread, which sees the stop)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
            except OSError:
                pass
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def freeze(self) -> None:
        """A half-open connection: nothing passes either way, and neither side is told."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def blackhole(self) -> None:
        rule(["-I", "INPUT", "-p", "tcp", "--dport", str(self.port), "-j", "DROP"])
        self._dropping = True

    def restore(self) -> None:
        if self._dropping:
            rule(["-D", "INPUT", "-p", "tcp", "--dport", str(self.port), "-j", "DROP"])
            self._dropping = False

    @classmethod
    def to(cls, url: str, default_port: int) -> TcpProxy:
        """A proxy to the service `url` names (its host and port, as configured for the tests)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or default_port)

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by this proxy's."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        auth = netloc[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    def close(self) -> None:
        self.restore()
        self.stop()
        self.thaw()  # its pipes, held, see their sockets closed and end


def iptables_available() -> bool:
    return os.geteuid() == 0 and shutil.which("iptables") is not None and subprocess.run(
        ["iptables", "-L", "INPUT", "-n"], capture_output=True
    ).returncode == 0


def rule(args: list[str]) -> None:
    subprocess.run(["iptables", *args], check=True, capture_output=True)


# -- labmate processes ------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker's pool children too): no cleanup runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def pause(self) -> None:
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            self.kill()


@dataclass
class Lab:
    """One deployment under test: its environment, the fake Slack, and the processes it runs."""

    home: Path
    fake: FakeSlack
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    port: int = 0
    _pending: list[Callable[[], None]] | None = field(default=None, repr=False)

    def spawn(self, name: str, *args: str, **extra_env: str) -> Proc:
        log = self.home / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(LABMATE), *args],
                env={**self.env, **extra_env},
                cwd=str(self.home),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, process, log)
        self.procs.append(proc)
        return proc

    def worker(self, *, concurrency: int = 1, queues: str = "default,launch,regress") -> Proc:
        proc = self.spawn("worker", "worker", "--concurrency", str(concurrency), "--queues", queues, "--loglevel", "INFO")
        return self._ready(proc, lambda: "labmate worker ready" in proc.output(), "the worker")

    def beat(self) -> Proc:
        proc = self.spawn("beat", "beat", "--loglevel", "INFO")
        return self._ready(proc, lambda: "Configuration ->" in proc.output(), "beat")

    def serve(self, *, threads: int = 8) -> Proc:
        self.port = free_port()
        port = self.port
        proc = self.spawn("serve", "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads))
        return self._ready(proc, lambda: healthy(port), "labmate serve")

    @contextmanager
    def starting(self) -> Iterator[None]:
        """Processes started in this block start together; the block ends when all of them are ready
        (each takes seconds to import and connect, and none needs another to start)."""
        self._pending = []
        try:
            yield
        finally:
            pending, self._pending = self._pending, None
        for wait in pending:
            wait()

    def _ready(self, proc: Proc, check: Callable[[], bool], what: str) -> Proc:
        def wait() -> None:
            wait_until(lambda: check() or proc.process.poll() is not None, timeout=60, what=what)
            assert proc.process.poll() is None, proc.output()[-3000:]

        if self._pending is None:
            wait()
        else:
            self._pending.append(wait)
        return proc

    def stop(self, *, grace: float = 3.0) -> None:
        """At the end of a test: SIGTERM every process at once, SIGKILL what is left after `grace`
        seconds (a worker in a warm shutdown waits for its running job; the test is over)."""
        running = [proc for proc in self.procs if proc.process.poll() is None]
        for proc in running:
            try:
                os.killpg(proc.process.pid, signal.SIGCONT)
                proc.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()[-4000:]}" for p in self.procs)


def lab_env(home: Path, fake: FakeSlack, *, broker_url: str, database_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "SLACK_", "MLFLOW_"))}
    home.mkdir(parents=True, exist_ok=True)
    (home / "labmate.toml").touch(exist_ok=True)  # LABMATE_CONFIG names it: it must exist
    env.update(
        LABMATE_HOME=str(home),
        LABMATE_CONFIG=str(home / "labmate.toml"),
        LABMATE_BROKER_URL=broker_url,
        LABMATE_BROKER_KEY_PREFIX=prefix,
        LABMATE_DATABASE_URL=database_url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        LABMATE_SLACK_API_URL=fake.api_url,
        LABMATE_SLACK_TIMEOUT="1",
        LABMATE_DELIVERY_BACKOFF="0.25",
        LABMATE_JOB_STALE_AFTER="3",
        LABMATE_REAP_EVERY="1",
        # These workers start for one test and answer a few jobs: importing MLflow and matplotlib up
        # front would cost each of them ~4 s of CPU (the compose worker's test keeps the default).
        LABMATE_WORKER_PRELOAD="false",
        **extra,
    )
    return env


def unique_prefix() -> str:
    return f"labmate-test-{uuid.uuid4().hex[:10]}:"
