"""`--workers N` is sized to the work: a pool starts only when it finishes the rest sooner than one process."""

from __future__ import annotations

import os

from tasks.regress.execution import pool_pays, run_jobs
from tasks.regress.session import plan


def _suite(write_suite, count: int):
    conversations = "".join(f"\n  - id: c{n}\n    turns:\n      - user: hi {n}\n" for n in range(count))
    return write_suite("suite: pids\nconversations:" + conversations)


def test_pool_pays_only_for_work_longer_than_its_start() -> None:
    assert not pool_pays(seconds_left=0.4, load_s=0.0, workers=2)
    assert not pool_pays(seconds_left=4.0, load_s=3.0, workers=2), "each worker would load the model again"
    assert pool_pays(seconds_left=6.0, load_s=0.5, workers=2)


def test_a_small_suite_with_two_workers_stays_in_this_process(write_suite, agent) -> None:
    run_plan = plan([str(_suite(write_suite, 12))], candidate=agent("pid"))
    replies = {result["turns"][0]["reply"] for _, result in run_jobs(run_plan.jobs(), workers=2)}
    assert replies == {str(os.getpid())}


def test_enough_work_starts_the_pool(write_suite, agent) -> None:
    run_plan = plan([str(_suite(write_suite, 120))], candidate=agent("pid_slow"))
    results = run_jobs(run_plan.jobs(), workers=2)
    assert sorted(r["conversation_id"] for _, r in results) == sorted(f"c{n}" for n in range(120))
    pids = {result["turns"][0]["reply"] for _, result in results}
    assert str(os.getpid()) in pids, "the first jobs ran here, measuring"
    assert len(pids - {str(os.getpid())}) >= 1, "the rest in pool processes"
