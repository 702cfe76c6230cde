"""A real MLflow store with stale and protected runs, and labmate.toml's `[cleanup]` for it.

Times are relative to now: the rules compare against the clock, as they do in production."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labmate.settings import reset_settings
from tests.experiments.conftest import empty_mlflow_db  # noqa: F401  (a session fixture shared with these tests)

HOUR = 3_600_000
DAY = 24 * HOUR
ADMIN = "UADMIN"

TOML = """
[access]
admins = ["UADMIN"]

[primary_metrics]
sales-agent = "val_f1"

[cleanup]
owners = {{ alice = "U0ALICE" }}
grace_days = 7

[cleanup.experiments.sales-agent]
failed_hours = 24
orphan_hours = 12
scratch = true
scratch_days = 3
top_k = 2
{filters}
"""
FILTER = """filters = [{ filter = "params.model = 'tiny'", days = 0, name = "tiny models" }]"""


@dataclass
class Lab:
    uri: str
    root: Path
    client: Any
    experiment_id: str = ""
    runs: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, *, user: str, status: str = "FINISHED", age_h: float = 100, ran_h: float = 1,
            f1: float | None = None, last_metric_h: float | None = None, tags: dict[str, str] | None = None,
            params: dict[str, str] | None = None, parent: str | None = None) -> str:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        start = now - int(age_h * HOUR)
        all_tags = {"mlflow.user": user, **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = self.runs[parent]
        run = self.client.create_run(self.experiment_id, start_time=start, tags=all_tags, run_name=name)
        run_id = run.info.run_id
        metrics = []
        if f1 is not None:
            ts = now - int((last_metric_h if last_metric_h is not None else age_h - ran_h) * HOUR)
            metrics = [Metric("val_f1", f1, ts, 1)]
        self.client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in (params or {}).items()])
        if status != "RUNNING":
            self.client.set_terminated(run_id, status=status, end_time=start + int(ran_h * HOUR))
        self.runs[name] = run_id
        return run_id


def write_config(path: Path, *, filters: bool = True) -> None:
    path.write_text(TOML.format(filters=FILTER if filters else ""))
    reset_settings()


def populate(uri: str, root: Path) -> Lab:
    """The MLflow side of `lab`: sales-agent with a run for every rule and every protection (see the names)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    lab = Lab(uri, root, client)
    lab.experiment_id = client.create_experiment("sales-agent", artifact_location=str(root / "artifacts"))
    # stale by a rule
    lab.add("died-early", user="alice", status="FAILED", age_h=50)                      # failed, no metric
    lab.add("died-early-2", user="alice", status="KILLED", age_h=49)                    # failed, no metric
    lab.add("zombie", user="bob", status="RUNNING", age_h=40, f1=0.1, last_metric_h=30)  # orphan
    lab.add("old-finished", user="U0CAROL", age_h=200, f1=0.2)                            # scratch
    lab.add("tiny-fresh", user="U0CAROL", age_h=2, f1=0.3, params={"model": "tiny"})       # team filter
    # not stale
    lab.add("crashed-late", user="alice", status="FAILED", age_h=50, f1=0.4)             # logged a metric
    lab.add("fresh-fail", user="alice", status="FAILED", age_h=3)                          # within the threshold
    lab.add("alive", user="bob", status="RUNNING", age_h=40, f1=0.5, last_metric_h=1)      # still logging
    # stale, but protected
    lab.add("kept", user="alice", status="FAILED", age_h=60, tags={"keep": "true"})
    lab.add("decided", user="alice", status="FAILED", age_h=60)
    lab.add("registered", user="alice", status="FAILED", age_h=60)
    lab.add("grid-parent", user="alice", status="FAILED", age_h=80)
    lab.add("grid-child", user="alice", status="FAILED", age_h=79, parent="grid-parent", tags={"keep": "yes"})
    lab.add("best", user="U0CAROL", age_h=300, f1=0.99)                                    # top 2
    lab.add("second", user="U0CAROL", age_h=300, f1=0.95)                                  # top 2
    client.create_registered_model("intent")
    client.create_model_version("intent", f"runs:/{lab.runs['registered']}/model", run_id=lab.runs["registered"])
    return lab


@pytest.fixture
def lab(lab_home: Path, monkeypatch: pytest.MonkeyPatch, migrated: str, empty_mlflow_db: Path, tmp_path: Path) -> Iterator[Lab]:  # noqa: F811
    """sales-agent with a run for every rule and every protection (see the names), and the decision."""
    root = lab_home / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_mlflow_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    write_config(tmp_path / "labmate.toml")
    lab = populate(uri, root)
    from models import decision as decisions
    from models.db import session_scope

    with session_scope() as session:
        decisions.create(session, new=decisions.NewDecision(
            text="keep the decided run", author="UADMIN", links=(decisions.LinkRef("run", lab.runs["decided"]),)))
    yield lab
    reset_settings()


STALE = {"died-early", "died-early-2", "zombie", "old-finished", "tiny-fresh"}
SPARED = {"kept": "keep", "decided": "decision", "registered": "model", "grid-parent": "parent", "grid-child": "keep",
          "best": "top", "second": "top"}
