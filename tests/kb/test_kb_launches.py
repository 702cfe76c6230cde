"""Launches and sweeps in the knowledge base, on SQLite and PostgreSQL: every change of state is one
conditional UPDATE, so racing writers end a launch once, hand a sweep's slot to one run, and make its
summary due once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from models import launches
from models.db import alembic_config, current_revision, engine_for, session_scope


def new(url: str, *, sweep_id: int | None = None, holds_slot: bool = True, user: str = "U1") -> int:
    with session_scope(url) as session:
        return launches.create(
            session, user=user, channel="C1", project="quick", entry_point="train", params={"lr": "0.1"},
            experiment="quick", reply_to={"channel": "C1"}, task_id=f"task-{threading.get_ident()}-{id(object())}",
            sweep_id=sweep_id, holds_slot=holds_slot,
        ).id


def race(count: int, work: Callable[[], Any]) -> list[Any]:
    """`count` threads released at once, each with its own transaction."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_launch_moves_queued_running_ended_once(kb_url: str) -> None:
    launch_id = new(kb_url)
    with session_scope(kb_url) as session:
        assert launches.start(session, launch_id=launch_id, worker="w:1") == 1
        assert launches.start(session, launch_id=launch_id, worker="w:2") is None
        launches.progress(session, launch_id=launch_id, attempt=1, step=2, metrics={"score": 0.5}, output_tail="x" * 9000)
        launches.progress(session, launch_id=launch_id, attempt=2, step=9, metrics={}, output_tail="stale")
    with session_scope(kb_url) as session:
        assert launches.end(session, launch_id=launch_id, status=launches.FINISHED)
        assert not launches.end(session, launch_id=launch_id, status=launches.KILLED, stopped_by="U2")
    with session_scope(kb_url) as session:
        launch = launches.get(session, launch_id=launch_id)
        assert (launch.status, launch.step, launch.metrics, launch.attempts) == ("finished", 2, {"score": 0.5}, 1)
        assert len(launch.output_tail) == launches.TAIL_CHARS and launch.stopped_by is None


def test_a_later_attempt_fences_off_the_writes_of_an_earlier_one(kb_url: str) -> None:
    launch_id = new(kb_url)
    with session_scope(kb_url) as session:
        assert launches.start(session, launch_id=launch_id, worker="frozen:1") == 1
        assert launches.start(session, launch_id=launch_id, worker="w:2", restart=True) == 2
    with session_scope(kb_url) as session:
        assert not launches.end(session, launch_id=launch_id, status=launches.FINISHED, attempt=1)
        launches.record_output(session, launch_id=launch_id, attempt=1, output_tail="old", step=9, metrics={"x": 1.0})
        assert launches.end(session, launch_id=launch_id, status=launches.FAILED, attempt=2, output_tail="new")
    with session_scope(kb_url) as session:
        launch = launches.get(session, launch_id=launch_id)
        assert (launch.status, launch.output_tail, launch.step, launch.worker) == ("failed", "new", None, "w:2")


def test_eight_concurrent_cancels_and_a_finish_end_it_once(kb_url: str) -> None:
    launch_id = new(kb_url)
    with session_scope(kb_url) as session:
        launches.start(session, launch_id=launch_id, worker="w:1")

    def end(i: int) -> bool:
        with session_scope(kb_url, write=True) as session:
            if i == 0:
                return launches.end(session, launch_id=launch_id, status=launches.FINISHED)
            return launches.end(session, launch_id=launch_id, status=launches.KILLED, stopped_by=f"U{i}")

    counter = iter(range(9))
    lock = threading.Lock()

    def work() -> bool:
        with lock:
            i = next(counter)
        return end(i)

    assert sum(race(9, work)) == 1
    with session_scope(kb_url) as session:
        launch = launches.get(session, launch_id=launch_id)
        assert launch.status in (launches.FINISHED, launches.KILLED)
        assert (launch.stopped_by is None) == (launch.status == launches.FINISHED)


def test_a_sweep_hands_each_slot_to_one_run_and_its_summary_is_due_once(kb_url: str) -> None:
    with session_scope(kb_url) as session:
        sweep = launches.create_sweep(
            session, user="U1", channel="C1", project="quick", entry_point="train", grid=[["lr", ["0.1", "0.2"]]],
            size=6, parallel=2, reply_to={"channel": "C1"},
        )
        sweep_id = sweep.id
    members = [new(kb_url, sweep_id=sweep_id, holds_slot=False) for _ in range(6)]

    def take() -> int | None:
        with session_scope(kb_url, write=True) as session:
            launch = launches.take_next(session, sweep_id=sweep_id)
            return launch.id if launch else None

    taken = race(4, take)
    assert sorted(taken) == members[:4]  # four callers, four different runs, oldest first
    with session_scope(kb_url) as session:
        assert launches.queue_positions(session) == {m: n for n, m in enumerate(members[:4], 1)}
    for launch_id in members:
        with session_scope(kb_url) as session:
            launches.end(session, launch_id=launch_id, status=launches.FAILED)
    with session_scope(kb_url) as session:
        assert not launches.release_slot(session, launch_id=members[4])  # never held one
        assert launches.release_slot(session, launch_id=members[0])
        assert not launches.release_slot(session, launch_id=members[0])

    def due() -> bool:
        with session_scope(kb_url, write=True) as session:
            return launches.claim_summary(session, sweep_id=sweep_id)

    assert sum(race(6, due)) == 1


def test_the_summary_is_not_due_while_a_run_is_active(kb_url: str) -> None:
    with session_scope(kb_url) as session:
        sweep_id = launches.create_sweep(
            session, user="U1", channel="C1", project="quick", entry_point="train", grid=[], size=2, parallel=1,
            reply_to={},
        ).id
    first, second = new(kb_url, sweep_id=sweep_id), new(kb_url, sweep_id=sweep_id)
    with session_scope(kb_url) as session:
        launches.end(session, launch_id=first, status=launches.FINISHED)
    with session_scope(kb_url) as session:
        assert not launches.claim_summary(session, sweep_id=sweep_id)
        launches.end(session, launch_id=second, status=launches.KILLED)
    with session_scope(kb_url) as session:
        assert launches.claim_summary(session, sweep_id=sweep_id)
        assert [m.id for m in launches.members(session, sweep_id=sweep_id)] == [first, second]


def test_runs_are_found_by_their_mlflow_run_id_prefix(kb_url: str) -> None:
    launch_id = new(kb_url)
    with session_scope(kb_url) as session:
        launches.set_run(session, launch_id=launch_id, run_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9", experiment_id="3")
    with session_scope(kb_url) as session:
        assert [x.id for x in launches.by_run(session, ref="0A1B2C")] == [launch_id]
        assert launches.by_run(session, ref="0a1b2c3e") == []
        assert launches.by_run(session, ref="%") == []


def test_the_migration_goes_down_and_up_again(kb_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    new(kb_url)
    command.downgrade(alembic_config(kb_url), "0004")
    assert current_revision(kb_url) == "0004"
    engine_for(kb_url).dispose()
    assert not {"launches", "sweeps"} & set(inspect(engine_for(kb_url)).get_table_names())
    command.upgrade(alembic_config(kb_url), "head")
    engine_for(kb_url).dispose()
    columns = {c["name"] for c in inspect(engine_for(kb_url)).get_columns("launches")}
    assert {"status", "mlflow_run_id", "task_id", "sweep_id", "holds_slot", "output_tail", "timings"} <= columns
    assert new(kb_url) >= 1


@pytest.fixture(autouse=True)
def _dispose(kb_url: str) -> Any:
    yield
    engine_for(kb_url).dispose()
