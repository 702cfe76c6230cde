"""Experiment lookups read MLflow's own tables on SQL stores; they must answer what the client does."""

from __future__ import annotations

import pytest

from tasks import mlflow_io
from tests.experiments.conftest import Store


@pytest.fixture
def lookups(sales: Store) -> Store:
    c = sales.client
    c.set_experiment_tag(sales.experiment_id, mlflow_io.PRIMARY_METRIC_TAG, "val_f1")
    c.set_experiment_tag(sales.experiment_id, mlflow_io.DIRECTION_TAG + "latency", "lower")
    other = c.create_experiment("support-bot", artifact_location=str(sales.root / "support"))
    c.set_experiment_tag(other, "team", "support")
    gone = c.create_experiment("retired", artifact_location=str(sales.root / "retired"))
    c.delete_experiment(gone)
    return sales


def _through_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow_io, "_sql_experiments", lambda **where: None)


@pytest.mark.parametrize("path", ["sql", "client"])
def test_lookups_by_name_id_and_all_agree(lookups: Store, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    if path == "client":
        _through_the_client(monkeypatch)
    sales = mlflow_io.experiment_by_name("sales-agent")
    assert sales == {
        "experiment_id": lookups.experiment_id,
        "name": "sales-agent",
        "primary_metric": "val_f1",
        "directions": {"latency": "lower"},
    }
    assert mlflow_io.experiment_by_id(lookups.experiment_id) == sales
    assert mlflow_io.experiment_by_name("retired") is None  # deleted experiments are not offered
    assert mlflow_io.experiment_by_name("no-such") is None
    assert mlflow_io.experiment_by_id("sales") is None  # not an id
    assert mlflow_io.experiment_by_id("987654") is None
    names = mlflow_io.experiment_names()
    assert {"sales-agent", "support-bot", "Default"} <= set(names) and "retired" not in names


def test_sql_lookups_match_the_client(lookups: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    direct = sorted(mlflow_io.experiments(), key=lambda e: e["experiment_id"])
    _through_the_client(monkeypatch)
    assert direct == sorted(mlflow_io.experiments(), key=lambda e: e["experiment_id"])


PROBE = """
import sys
from labmate.cli import main
sys.argv = ["labmate", "say", "--json", "best sales-agent val_f1"]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
print("exit", code)
print("mlflow imported:", "mlflow" in sys.modules, "matplotlib imported:", "matplotlib" in sys.modules)
"""


def test_a_terminal_answer_from_a_sql_store_does_not_import_mlflow(lookups: Store) -> None:
    """The run index answers; importing MLflow would cost the person more than the answer
    (issue 9: a job command within 1.3x of `import mlflow`, or faster from the knowledge base)."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=os.environ)
    assert "unigram-v2" in out.stdout, out.stdout + out.stderr
    assert "exit 0" in out.stdout, out.stdout + out.stderr
    assert "mlflow imported: False matplotlib imported: False" in out.stdout, out.stdout + out.stderr
