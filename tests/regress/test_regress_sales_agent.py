"""The shipped suite against the real demo store (trains two model versions: ~1 minute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from labmate.regress_cli import register
from tasks.regress.session import execute, plan
from tasks.regress.suite import load_suite

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
SUITE = PROJECT / "conversations" / "sales_agent.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tasks.mlflow_io.demo import run_demo

    root = tmp_path_factory.mktemp("demo-store")
    uri = f"sqlite:///{root}/mlflow.db"
    report = run_demo(uri)
    assert set(report.aliases) >= {"production", "candidate"}
    return uri


@pytest.fixture(scope="module")
def report(store):
    return execute(plan([str(SUITE)], options={"tracking_uri": store}))


def test_shipped_suite_is_big_enough_and_valid():
    suite = load_suite(SUITE)
    assert len(suite.conversations) >= 20
    assert suite.targets == {"baseline": "models:/sales-agent@production", "candidate": "models:/sales-agent@candidate"}


def test_candidate_breaks_pricing_and_fixes_personalisation(report):
    assert report["summary"]["baseline"]["errors"] == 0
    assert report["summary"]["candidate"]["errors"] == 0
    new_failures, fixes = set(report["new_failures"]), set(report["fixes"])
    assert {"pricing-basic", "pricing-seats", "funnel-pricing-to-demo"} <= new_failures
    assert {"greet-by-name", "discount-code", "refund-with-order", "goodbye-by-name"} <= fixes
    entry = next(e for e in report["conversations"] if e["key"] == "pricing-basic")
    assert "$39 per seat" in entry["divergence"]["baseline_reply"]
    assert "$49 per seat" in entry["divergence"]["candidate_reply"]
    assert report["verdict"]["passed"] is False
    assert any(reason.startswith("new failures tagged p0: ") for reason in report["verdict"]["reasons"])


def test_cli_with_two_workers(store, tmp_path):
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["regress", str(SUITE), "--tracking-uri", store, "--workers", "2",
                                      "--tag", "pricing", "--json", str(out)])
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    assert "pricing-basic" in data["new_failures"]
    assert {e["key"] for e in data["conversations"]} == {
        c["id"] for c in load_suite(SUITE).conversations if "pricing" in c["tags"]
    }


def test_pytest_plugin_against_the_registered_candidate(store):
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tasks.regress.pytest_plugin", "-p", "no:cacheprovider",
         str(SUITE), "--agent", "models:/sales-agent@candidate", "--regress-tracking-uri", store,
         "-k", "pricing-basic or cancel", "-q"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    assert "expected: contains '$39 per seat'" in result.stdout


def test_pytest_plugin_defaults_to_labmates_mlflow_store(store):
    """After `labmate demo`, the README's `pytest conversations/ --agent …` needs no URI flag."""
    home = store.removeprefix("sqlite:///").removesuffix("/mlflow.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(PROJECT), LABMATE_HOME=home)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tasks.regress.pytest_plugin", "-p", "no:cacheprovider",
         str(SUITE), "--agent", "models:/sales-agent@production", "-k", "pricing-basic or cancel", "-q"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
