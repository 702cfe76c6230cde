"""Fixtures for regression runs from chat: a registered model `shop` (v1 @production, v2 @candidate, v3 @slow) in a
real MLflow SQLite store, a suites folder with a small suite for it, and labmate.toml naming them."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from labmate.settings import reset_settings
from tests.conftest import built_once

ADMIN = "UADMIN"
PROMOTER = "UPROMOTER"
HERE = Path(__file__).resolve().parent

SHOP_SUITE = """
suite: shop
targets:
  baseline: models:/shop@production
  candidate: models:/shop@candidate
gate:
  max_drop: 0.0
conversations:
  - id: greet
    tags: [p1]
    turns:
      - user: hello
        expect:
          - contains: Hello
  - id: price
    tags: [p0]
    turns:
      - user: what is the price?
        expect:
          - contains: "49 USD"
  - id: refund
    tags: [p1]
    turns:
      - user: can I get a refund?
        expect:
          - contains: "30 days"
  - id: order
    tags: [p1]
    turns:
      - user: I want to order
        expect:
          - contains: A-1234
      - user: what is the status of A-1234
        expect:
          - contains: shipped
"""
"""v2 (the candidate) breaks `price` (59 USD) and fixes `refund`: with max_drop 0 the gate passes
(pass rate 75% both), and with `no_new_failures_tagged: [p0]` it would not."""


def write_toml(path: Path, extra: str = "") -> None:
    path.write_text(textwrap.dedent(f"""
        [access]
        admins = ["{ADMIN}"]
        [regress]
        folders = ["suites"]
        max_workers = 4
        promoters = ["{PROMOTER}"]
    """) + extra)
    reset_settings()


@pytest.fixture(scope="session")
def shop_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow store with `shop` v1 (@production), v2 (@candidate) and v3 (@slow: v2 taking 50 ms a reply),
    built once per run (tests copy its mlflow.db; its artifacts are only read)."""

    def build(root: Path) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        from tasks.mlflow_io import process_uris

        uri = f"sqlite:///{root / 'mlflow.db'}"
        client = MlflowClient(uri, uri)
        experiment = client.create_experiment("shop", artifact_location=str(root / "artifacts"))
        client.create_registered_model("shop")
        with process_uris(uri):
            for alias, config in (("production", {"version": 1}), ("candidate", {"version": 2}),
                                  ("slow", {"version": 2, "sleep": 0.05})):
                with mlflow.start_run(experiment_id=experiment):
                    # Requirements given: MLflow would otherwise infer them in a subprocess (~1.7 s of CPU a model).
                    info = mlflow.pyfunc.log_model(name="model", python_model=str(HERE / "shop_model.py"),
                                                   model_config=config, pip_requirements=[f"mlflow=={mlflow.__version__}"])
                made = client.create_model_version("shop", info.model_uri, run_id=info.run_id)
                client.set_registered_model_alias("shop", alias, made.version)

    return built_once(tmp_path_factory, "shop-store", build)


@pytest.fixture
def mlflow_uri(lab_home: Path, shop_store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This test's own copy of the shop store (promote moves aliases in it)."""
    root = lab_home / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(shop_store / "mlflow.db", root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reset_settings()
    yield uri
    reset_settings()


@pytest.fixture
def suites_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "shop.yaml").write_text(textwrap.dedent(SHOP_SUITE).lstrip())
    return folder


@pytest.fixture
def configured(tmp_path: Path, lab_home: Path, migrated: str, suites_dir: Path, mlflow_uri: str) -> Path:
    write_toml(tmp_path / "labmate.toml")
    return tmp_path / "labmate.toml"
