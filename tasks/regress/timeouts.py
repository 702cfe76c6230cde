"""Per-turn timeouts without a thread switch per turn.

Conversations run in one daemon thread; the calling thread supervises it. The running thread
only stamps the start of each agent call on a shared Watch, so a normal turn costs no context
switch (a hand-off per call costs tens to hundreds of microseconds on a busy machine). The
supervisor sleeps until the current turn's deadline could have passed; when a turn overruns, the
running thread is abandoned (it exits when the agent returns, if ever: daemon threads never keep
the process alive) and the caller decides how to carry on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_IDLE_POLL_S = 1.0


class TurnTimeout(TimeoutError):
    pass


class Abandoned(BaseException):  # BaseException: agent-error handlers must never catch it
    """Raised in an abandoned thread whose agent finally returned: its results must be dropped."""


class Watch:
    """State shared between the running thread and its supervisor."""

    __slots__ = ("abandoned", "context", "turn_started", "turn_timeout")

    def __init__(self) -> None:
        self.turn_started: float | None = None
        self.turn_timeout: float | None = None
        self.abandoned = False
        self.context: Any = None  # what the runner is doing, for building the timeout result

    def call(self, agent: Callable[[Any], Any], arg: Any, timeout: float | None) -> tuple[Any, float]:
        """Call the agent; returns (output, seconds)."""
        self.turn_timeout = timeout
        start = self.turn_started = time.perf_counter()
        try:
            output = agent(arg)
        finally:
            self.turn_started = None
        if self.abandoned:
            raise Abandoned
        return output, time.perf_counter() - start


def supervise(work: Callable[[Watch], T], watch: Watch | None = None) -> T:
    """Run work(watch) in a daemon thread; raise TurnTimeout as soon as one agent call overruns."""
    watch = watch or Watch()
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work(watch)
        except Abandoned:
            pass
        except BaseException as exc:  # handed to the supervising thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="regress-runner").start()
    wait_for: float | None = _IDLE_POLL_S
    while not done.wait(wait_for):
        started, timeout = watch.turn_started, watch.turn_timeout
        if started is None or not timeout:
            wait_for = _IDLE_POLL_S
            continue
        elapsed = time.perf_counter() - started
        if elapsed >= timeout and watch.turn_started == started:  # still the same call
            watch.abandoned = True
            raise TurnTimeout(f"no reply within {timeout:g} s")
        wait_for = timeout - elapsed
    if "error" in box:
        raise box["error"]
    return box["result"]
