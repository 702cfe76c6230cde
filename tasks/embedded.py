"""A real Celery worker inside this process, over the in-memory broker (the embedded default)."""

from __future__ import annotations

import threading

from celery.contrib.testing.worker import TestWorkController

from tasks.app import EMBEDDED_HOSTNAME, celery_app

_lock = threading.Lock()
_worker: TestWorkController | None = None
_stopping: TestWorkController | None = None


def ensure_worker(concurrency: int = 2) -> TestWorkController:
    global _worker
    with _lock:
        if _worker is not None:
            return _worker
        if _stopping is not None:  # a job enqueuing as the worker stops: its message waits, unconsumed
            return _stopping
        app = celery_app()
        app.loader.import_default_modules()
        worker = TestWorkController(
            app=app,
            concurrency=concurrency,
            pool="threads",
            hostname=EMBEDDED_HOSTNAME,
            loglevel="WARNING",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            queues=list(app.conf.task_queues and [q.name for q in app.conf.task_queues]),
        )
        threading.Thread(target=worker.start, name="labmate-embedded-worker", daemon=True).start()
        worker.ensure_started()
        _worker = worker
        threading.Thread(target=_reap_once, name="labmate-embedded-reap", daemon=True).start()
        return worker


def _reap_once() -> None:
    """Jobs a previous process left running (it was killed) are re-run or closed here: the embedded
    queue died with that process, so the ledger is all that remains of them."""
    from tasks.maintenance import reap

    try:
        reap()
    except Exception:
        import logging

        logging.getLogger(__name__).warning("start-up reap failed", exc_info=True)


def stop_worker() -> None:
    """Stopped outside the lock: a job still running may enqueue another (a clean-up answer refreshes
    the Home tab), and stop waits for that job, which would wait for the lock."""
    global _worker, _stopping
    with _lock:
        worker, _worker, _stopping = _worker, None, _worker
    if worker is None:
        return
    try:
        worker.stop(in_sighandler=False)
    finally:
        with _lock:
            _stopping = None
