"""Fixtures for launches: the quick test project configured in labmate.toml, and an MLflow store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from labmate.settings import reset_settings
from tests.experiments.conftest import empty_mlflow_db  # noqa: F401  (a session fixture shared with these tests)

PROJECT = Path(__file__).resolve().parent / "project"
ADMIN = "UADMIN"


def toml(project: Path = PROJECT, **limits: object) -> str:
    settings = {"max_sweep_size": 4, "max_parallel_runs": 2, "time_limit": 120.0, **limits}
    lines = [
        "[access]",
        f'admins = ["{ADMIN}"]',
        "[primary_metrics]",
        'quick = "score"',
        "[projects.quick]",
        f'uri = "{project}"',
        'entry_points = ["train", "needs_shell", "needs_value"]',
        'experiment = "quick"',
    ]
    for key, value in settings.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    lines += [
        "[projects.closed]",
        f'uri = "{project}"',
        'entry_points = ["train"]',
        'experiment = "closed"',
        'launchers = ["U0OWNER", "S0TEAM"]',
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def configured(tmp_path: Path, lab_home: Path, migrated: str) -> Path:
    """labmate.toml naming the quick project (and a closed one), knowledge base migrated."""
    (tmp_path / "labmate.toml").write_text(toml())
    reset_settings()
    return tmp_path / "labmate.toml"


@pytest.fixture
def mlflow_uri(lab_home: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_db: Path) -> Iterator[str]:  # noqa: F811
    root = lab_home / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_mlflow_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reset_settings()
    yield uri
    reset_settings()
