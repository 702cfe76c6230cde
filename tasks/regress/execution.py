"""Running many (conversation, target) jobs: in process, or in a process pool.

With workers > 1 the parent loads every target first (failing fast with a clear message), then
starts the pool from a forkserver: a clean process that has imported the engine once and forks
each worker. Forking the parent itself is unsafe: it may hold broker connections or locks (in a
Celery worker it does, and kombu's after-fork cleanup then blocks), and spawning each worker
re-imports everything. Jobs travel in small chunks: one conversation per round trip cost more
in pickling than in work.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from tasks.regress.runner import run_batch, run_conversation
from tasks.regress.targets import load_target

Job = tuple[str, dict[str, Any], str, dict[str, Any]]  # (role, conversation, target uri, options)
OnResult = Callable[[str, dict[str, Any]], None]


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


def run_jobs(jobs: list[Job], workers: int = 1, on_result: OnResult | None = None) -> list[tuple[str, dict[str, Any]]]:
    targets = _unique_targets(jobs)
    if workers <= 1 or len(jobs) <= 1:
        preload(targets)
        batch = [(conversation, uri, options) for _, conversation, uri, options in jobs]

        def done(index: int, result: dict[str, Any]) -> None:
            _label(jobs[index], result)
            if on_result:
                on_result(jobs[index][0], result)

        results = run_batch(batch, done)
        return [(job[0], result) for job, result in zip(jobs, results, strict=True)]
    context = _pool_context()  # its server starts importing while the parent loads the targets
    preload(targets)  # fail fast, with a clear message, before starting workers
    results = []
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
