"""The running jobs' heartbeat: one thread per process stamps the ledger rows of the jobs it runs.

A job whose stamp stops (its worker was killed, frozen, or lost its machine) is found by the
reaper (tasks.maintenance) and handed to another worker. One UPDATE per process every few
seconds, whatever the number of jobs; the thread starts in the process that runs jobs (after a
pool's fork, never before).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from models import jobs
from models.db import session_scope

log = logging.getLogger(__name__)

_lock = threading.Lock()
_running: dict[str, int] = {}
_thread: tuple[int, threading.Thread] | None = None
_wake = threading.Event()


def interval_s() -> float:
    from labmate.settings import get_settings

    return max(0.2, get_settings().job_stale_after / 4)


def _beat() -> None:
    pid = os.getpid()
    every = interval_s()
    while True:
        _wake.wait(every)
        _wake.clear()
        with _lock:
            if _thread is None or _thread[0] != pid:
                return
            keys = list(_running)
        if not keys:
            continue
        try:
            with session_scope() as session:
                jobs.heartbeat(session, keys=keys)
        except Exception:
            log.warning("could not stamp the heartbeat of %d job(s); retrying", len(keys), exc_info=True)


def _ensure_thread() -> None:
    global _thread
    pid = os.getpid()
    if _thread is not None and _thread[0] == pid and _thread[1].is_alive():
        return
    thread = threading.Thread(target=_beat, name="labmate-heartbeat", daemon=True)
    _thread = (pid, thread)
    thread.start()


@contextmanager
def beating(key: str) -> Iterator[None]:
    """Keep `key`'s heartbeat fresh while the block runs."""
    with _lock:
        _running[key] = _running.get(key, 0) + 1
        _ensure_thread()
    try:
        yield
    finally:
        with _lock:
            left = _running.get(key, 1) - 1
            if left:
                _running[key] = left
            else:
                _running.pop(key, None)
