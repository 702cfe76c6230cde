"""The training process: started without a shell, in a process group (a session) of its own, with its
output in a file; stopped by signalling that whole group.

The worker never forks itself: `subprocess.Popen` starts a fresh interpreter (the orphan guard, which
execs the command), so no copy of the worker's broker or database connections exists in the child.
The child's environment is the worker's minus labmate's own secrets (Slack tokens, the knowledge
base URL), plus what MLflow Projects would give it (the run id, the tracking URI).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labmate import interpreter
from labmate.settings import get_settings, mask_url

GUARD = Path(__file__).with_name("orphan_guard.py")
PRIVATE_PREFIXES = ("SLACK_", "LABMATE_")
TAIL_LINES = 20
TAIL_BYTES = 16384
STOP_GRACE_S = 5.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """SIGTERM to the whole process group, SIGKILL after `grace` s; returns the exit status."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        try:  # whatever the command itself started in its group goes too
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.process.wait()

    def tail(self, lines: int = TAIL_LINES) -> str:
        return tail(self.log_path, lines)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    # `python` in an MLproject command is this interpreter (env_manager "local", as MLflow runs it).
    env["PATH"] = os.pathsep.join([str(Path(interpreter.python()).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def start(argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> Child:
    """Start `argv` (no shell) in `cwd`, as the leader of a new session, output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    guarded = [sys.executable, "-I", "-S", str(GUARD), str(os.getpid()), *argv]
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            guarded,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return Child(process, log_path, time.monotonic())


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a log (read from its end: a long log costs the same), URLs' passwords
    masked: it goes into cards and notices, and MLflow's last lines quote the tracking URI."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    text = ANSI.sub("", data.decode("utf-8", errors="replace")).replace("\r\n", "\n")
    return _for_people(mask_url("\n".join(text.rstrip("\n").splitlines()[-lines:])))


def _for_people(text: str) -> str:
    """MLflow's "View run … at: <tracking URI>/#/…" links, pointed at the UI people open
    (`LABMATE_MLFLOW_UI_URL`): in compose the tracking URI is `http://mlflow:5000`, which no browser reaches."""
    settings = get_settings()
    tracking, ui = mask_url(settings.mlflow_tracking_uri).rstrip("/"), settings.mlflow_ui_url.rstrip("/")
    if not ui or ui == tracking or not tracking.startswith(("http://", "https://")):
        return text
    return text.replace(f"{tracking}/#/", f"{ui}/#/")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the training process was ended by {name}"
    return f"the training process exited with code {code}"
