"""Running many (conversation, target) jobs: in process, or in a process pool.

With workers > 1 the parent loads every target first (failing fast with a clear message), runs
the first jobs itself to measure them, and starts a pool only when it would finish the rest sooner
(sized to the work: a small suite stays in one process). The pool starts from a forkserver: a clean process that has imported the engine once and forks
each worker. Forking the parent itself is unsafe: it may hold broker connections or locks (in a
Celery worker it does, and kombu's after-fork cleanup then blocks), and spawning each worker
re-imports everything. Jobs travel in small chunks: one conversation per round trip cost more
in pickling than in work.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from tasks.regress.runner import run_batch, run_conversation
from tasks.regress.targets import load_target

Job = tuple[str, dict[str, Any], str, dict[str, Any]]  # (role, conversation, target uri, options)
OnResult = Callable[[str, dict[str, Any]], None]
PROBE_S = 0.25
"""Seconds of jobs run in this process first, to measure what the rest will take."""
PROBE_BATCH = 4
POOL_START_S = 0.5
"""A pool process's start from the forkserver, besides loading the targets."""


def preload(targets: list[tuple[str, dict[str, Any]]]) -> None:
    """Load each target once; raises TargetLoadError for the first that cannot be loaded."""
    for uri, options in targets:
        load_target(uri, options)


def _label(job: Job, result: dict[str, Any]) -> None:
    conversation = job[1]
    result["suite"] = conversation.get("suite")
    result["conversation_key"] = conversation.get("key", conversation["id"])


def _run_job(job: Job) -> tuple[str, dict[str, Any]]:
    role, conversation, target, options = job
    result = run_conversation(conversation, target, options)
    _label(job, result)
    return role, result


def _run_chunk(chunk: list[Job]) -> list[tuple[str, dict[str, Any]]]:
    return [_run_job(job) for job in chunk]


def _chunks(jobs: list[Job], workers: int) -> Iterator[list[Job]]:
    size = max(1, min(8, len(jobs) // (workers * 16)))
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


def _in_process(jobs: list[Job], on_result: OnResult | None) -> list[tuple[str, dict[str, Any]]]:
    batch = [(conversation, uri, options) for _, conversation, uri, options in jobs]

    def done(index: int, result: dict[str, Any]) -> None:
        _label(jobs[index], result)
        if on_result:
            on_result(jobs[index][0], result)

    results = run_batch(batch, done)
    return [(job[0], result) for job, result in zip(jobs, results, strict=True)]


def pool_pays(seconds_left: float, load_s: float, workers: int) -> bool:
    """Whether `workers` processes finish the rest sooner than this one: each new process pays the
    start-up and its own load of the targets (about what the parent's load took)."""
    return load_s + POOL_START_S + seconds_left / workers < seconds_left


def run_jobs(jobs: list[Job], workers: int = 1, on_result: OnResult | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Run the jobs; with workers > 1, the pool is sized to the work: the first jobs run here for up to
    PROBE_S, and a pool starts for the rest only if it would finish sooner (a small suite on a model that
    takes seconds to load is faster in one process than in two that each load it)."""
    targets = _unique_targets(jobs)
    if workers <= 1 or len(jobs) <= 1:
        preload(targets)
        return _in_process(jobs, on_result)
    context = _pool_context()  # its server starts importing while the parent loads the targets
    started = time.perf_counter()
    preload(targets)  # fail fast, with a clear message, before starting workers
    load_s = time.perf_counter() - started
    results: list[tuple[str, dict[str, Any]]] = []
    probe_started = time.perf_counter()
    ran = 0
    while ran < len(jobs) and time.perf_counter() - probe_started < PROBE_S:
        results += _in_process(jobs[ran : ran + PROBE_BATCH], on_result)
        ran = min(ran + PROBE_BATCH, len(jobs))
    per_job = (time.perf_counter() - probe_started) / max(ran, 1)
    rest = jobs[ran:]
    if not rest:
        return results
    if not pool_pays(per_job * len(rest), load_s, workers):
        return results + _in_process(rest, on_result)
    jobs = rest
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=preload, initargs=(targets,)
    ) as pool:
        pending: set[Future[list[tuple[str, dict[str, Any]]]]] = set()
        queue = _chunks(jobs, workers)
        # Keep a bounded number of chunks in flight so progress is smooth and memory stays flat.
        for chunk in queue:
            pending.add(pool.submit(_run_chunk, chunk))
            if len(pending) >= workers * 4:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                for role, result in future.result():
                    results.append((role, result))
                    if on_result:
                        on_result(role, result)
                next_chunk = next(queue, None)
                if next_chunk is not None:
                    pending.add(pool.submit(_run_chunk, next_chunk))
    return results


def _pool_context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tasks.regress.runner", "tasks.regress.targets", "tasks.regress.expectations"])
    forkserver.ensure_running()
    return context


def _unique_targets(jobs: list[Job]) -> list[tuple[str, dict[str, Any]]]:
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for _, _, uri, options in jobs:
        seen.setdefault(uri + repr(sorted(options.items())), (uri, options))
    return list(seen.values())
