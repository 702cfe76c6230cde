"""Fixtures for run watch and the digest: the sales-agent MLflow store, a recording delivery, runs that end now."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from labmate.settings import reset_settings
from tests.experiments.conftest import Store, empty_mlflow_db, mlflow_store, sales  # noqa: F401
from tests.jobs.conftest import Recorder, recorder  # noqa: F401

ADMIN = "UADMIN"


def end_run(
    store: Store, name: str, *, status: str = "FINISHED", f1: float | None = None, tags: dict[str, str] | None = None,
    experiment_id: str | None = None, ago_s: float = 60.0,
) -> str:  # fmt: skip
    """A run that started `ago_s` seconds ago and ended now, with `val_f1` (when given)."""
    from mlflow.entities import Metric

    c = store.client
    now = int(time.time() * 1000)
    start = now - int(ago_s * 1000)
    run = c.create_run(experiment_id or store.experiment_id, start_time=start, tags={"mlflow.user": "dana", **(tags or {})},
                       run_name=name)  # fmt: skip
    if f1 is not None:
        c.log_batch(run.info.run_id, metrics=[Metric("val_f1", f1, now - 1000, 1), Metric("train_loss", 1 - f1, now - 1000, 1)])
    c.set_terminated(run.info.run_id, status=status, end_time=now)
    store.runs[name] = run.info.run_id
    return run.info.run_id


def configure(tmp_path: Path, *top: str, tables: tuple[str, ...] = ()) -> None:
    """labmate.toml: top-level settings, an admin, sales-agent ranked by val_f1, and more tables."""
    lines = [*top, "[access]", f'admins = ["{ADMIN}"]', "[primary_metrics]", '"sales-agent" = "val_f1"', *tables]
    (tmp_path / "labmate.toml").write_text("\n".join(lines) + "\n")
    reset_settings()


@pytest.fixture
def watched(sales: Store, tmp_path: Path) -> Store:  # noqa: F811
    """The sales-agent store, with labmate.toml ranking it by val_f1."""
    configure(tmp_path)
    return sales


def watch(experiment: str = "sales-agent", channel: str = "CWATCH") -> list[tuple[str, dict[str, Any]]]:
    from tasks.watch import add

    return add.add(experiment, channel, {"user": "UDANA", "channel": channel, "source": "slack"})
