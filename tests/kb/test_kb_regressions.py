"""Regression runs in the knowledge base, on SQLite and PostgreSQL: a redelivered chunk counts once, the
chunk that completes the run moves it to `reporting` once however many finish together, promote is won
by one press, and the migration goes down and up."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from models import regressions
from models.db import alembic_config, current_revision, engine_for, session_scope

_keys = itertools.count()


def new(url: str, *, chunks: int = 4, total: int = 8, suite: str = "shop") -> int:
    with session_scope(url) as session:
        return regressions.create(
            session, user="U1", channel="C1", suite=suite, suite_file="/x/shop.yaml",
            targets={"candidate": "models:/shop@candidate"}, tags=[], gate={}, workers=2, chunks=chunks, total=total,
            reply_to={"channel": "C1"}, task_id=f"task-{next(_keys)}", report_job="",
        ).id


def race(count: int, work: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def result(status: str) -> list[Any]:
    return ["candidate", {"status": status, "conversation_key": "c"}]


def test_chunks_count_once_and_the_last_moves_the_run_to_reporting_once(kb_url: str) -> None:
    run_id = new(kb_url)
    with session_scope(kb_url) as session:
        assert regressions.start(session, run_id=run_id, resolved={"candidate": "models:/shop/2"},
                                 candidate_model="shop", candidate_version="2", baseline_version=None)

    def store(index: int) -> bool:
        with session_scope(kb_url) as session:
            regressions.add_chunk(session, run_id=run_id, index=index % 4, results=[result("pass"), result("fail")])
            return regressions.to_reporting(session, run_id=run_id)

    assert sum(race(8, store)) == 1, "eight chunk deliveries (each chunk twice), one report"
    with session_scope(kb_url) as session:
        run = regressions.get(session, run_id=run_id)
        assert (run.status, run.done, run.failing) == ("reporting", 8, 4)
        assert regressions.chunks_stored(session, run_id=run_id) == 4
        assert len(regressions.results(session, run_id=run_id)) == 8
        assert regressions.finish(session, run_id=run_id, status="passed", reason="", counts={}, highlights={})
        assert not regressions.fail(session, run_id=run_id, reason="too late"), "an ended run stays ended"


def test_one_press_of_promote_wins(kb_url: str) -> None:
    run_id = new(kb_url)
    with session_scope(kb_url) as session:
        session.get(regressions.RegressionRun, run_id).status = regressions.PASSED

    def press(i: int) -> bool:
        with session_scope(kb_url) as session:
            return regressions.claim_promotion(session, run_id=run_id, user=f"U{i}")

    assert sum(race(6, press)) == 1
    failed = new(kb_url)
    with session_scope(kb_url) as session:
        session.get(regressions.RegressionRun, failed).status = regressions.FAILED
    with session_scope(kb_url) as session:
        assert not regressions.claim_promotion(session, run_id=failed, user="U1")
        older = regressions.get(session, run_id=run_id)
        assert regressions.newer_failed(session, run=older).id == failed
        assert [r.id for r in regressions.recent(session, suite="shop", since=None)] == [failed, run_id]


def test_the_migration_goes_down_and_up_again(kb_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    new(kb_url)
    command.downgrade(alembic_config(kb_url), "0006")
    assert current_revision(kb_url) == "0006"
    engine_for(kb_url).dispose()
    assert not {"regression_runs", "regression_chunks"} & set(inspect(engine_for(kb_url)).get_table_names())
    command.upgrade(alembic_config(kb_url), "head")
    engine_for(kb_url).dispose()
    assert new(kb_url) >= 1
