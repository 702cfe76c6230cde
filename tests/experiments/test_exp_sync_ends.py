"""Runs labmate saw end are written to the run index at once (`sync.runs_ended`), and no sync that read a
run before it ended puts it back as running over that newer read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.experiments.conftest import Store


def _status(store: str, run_id: str) -> str:
    from models import run_index
    from models.db import session_scope

    with session_scope() as session:
        return run_index.runs_by_ids(session, store, [run_id])[run_id].status


def test_an_ended_run_is_in_the_index_at_once_and_an_older_read_does_not_undo_it(
    sales: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import mlflow_io
    from tasks.experiments import resolve, sync
    from tasks.experiments.summary import summary

    live = sales.client.create_run(sales.experiment_id, run_name="live", tags={"mlflow.user": "kim"})
    run_id = live.info.run_id
    sales.client.log_metric(run_id, "val_f1", 0.99, step=1)
    summary("sales-agent", "val_f1", 1)  # builds the index: fresh for MAX_AGE
    experiment = resolve.experiment("sales-agent")
    assert _status(experiment.store, run_id) == "RUNNING"
    read_before_end = datetime.now(UTC)
    [stale] = mlflow_io.run_reader().records(experiment.experiment_id, [run_id])  # a sync's read, still running

    sales.client.set_terminated(run_id, "FINISHED")
    assert sync.runs_ended(experiment, [run_id]) == 1
    assert _status(experiment.store, run_id) == "FINISHED"
    assert sync.counts(experiment)["FINISHED"] == 5
    [(_t, ctx)] = summary("sales-agent", "val_f1", 1)  # inside MAX_AGE: from the index alone
    assert ctx["runs"][0]["name"] == "live" and ctx["runs"][0]["status"] == "FINISHED" and ctx["total"] == 6

    # a sync that read the run before it ended and writes after: its read of that run is the older one
    real = mlflow_io.run_reader()

    class ReadBeforeTheEnd:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def changed(self, experiment_id: str, started_since: int, ended_since: int) -> list[Any]:
            return [stale]

    monkeypatch.setattr(mlflow_io, "run_reader", ReadBeforeTheEnd)
    sync.refresh(experiment, now=read_before_end)
    assert _status(experiment.store, run_id) == "FINISHED"
    assert sync.counts(experiment).get("RUNNING", 0) == 0


def test_an_index_not_built_is_left_to_its_build(sales: Store) -> None:
    from tasks.experiments import resolve, sync

    experiment = resolve.experiment("sales-agent")
    assert sync.runs_ended(experiment, [sales.runs["baseline"]]) == 0
    assert not sync.progress(experiment).ready


def test_a_later_sync_still_rewrites_what_an_earlier_read_wrote(sales: Store) -> None:
    """The guard keeps only *newer* reads: an ordinary sync after them overwrites as before."""
    from tasks.experiments import resolve, sync
    from tasks.experiments.summary import summary

    live = sales.client.create_run(sales.experiment_id, run_name="live")
    summary("sales-agent", "val_f1", 1)
    experiment = resolve.experiment("sales-agent")
    sales.client.set_terminated(live.info.run_id, "KILLED")
    sync.refresh(experiment, now=datetime.now(UTC) + timedelta(minutes=2))
    assert _status(experiment.store, live.info.run_id) == "KILLED"
