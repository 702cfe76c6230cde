from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

SHOP = """
    conversations:
      - id: price
        tags: [p0]
        turns:
          - user: hello
          - user: "What is the price?"
            expect: [{contains: "49 USD"}]
      - id: refund
        tags: [p1]
        turns: [{user: refund please, expect: [{icontains: "30 days"}]}]
      - id: hello
        tags: [p1]
        turns: [{user: hello, expect: [{starts-with: Hello}]}]
"""


@pytest.fixture
def project(tmp_path):
    def write(rel, text):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))

    write("conversations/shop.yaml", SHOP)
    write("conversations/notes.yaml", "title: not a suite\nitems: [1, 2]\n")
    write("elsewhere/shop.yaml", SHOP)  # a suite, but not under conversations/: not collected
    return tmp_path


def pytest_run(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tasks.regress.pytest_plugin", "-p", "no:cacheprovider",
         "-p", "no:randomly", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def test_collects_only_suites_under_conversations(project, agent):
    result = pytest_run(project, ".", "--agent", agent("deterministic_v2"), "--collect-only", "-q")
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected == [
        "conversations/shop.yaml::price",
        "conversations/shop.yaml::refund",
        "conversations/shop.yaml::hello",
    ], result.stdout


def test_nothing_is_collected_without_agent(project):
    result = pytest_run(project, ".", "--collect-only", "-q")
    assert result.returncode == 5, result.stdout


def test_failure_shows_turn_expectation_and_reply(project, agent):
    result = pytest_run(project, "conversations", "--agent", agent("deterministic_v2"))
    assert result.returncode == 1
    out = result.stdout
    assert "1 failed, 2 passed" in out
    assert "turn 2: user: What is the price?" in out
    assert "reply: 'The Pro plan costs 59 USD per month.'" in out
    assert "expected: contains '49 USD'" in out
    assert "_ conversation price _" in out  # reportinfo names the conversation in the failure header


def test_keyword_selection_by_id_and_tag(project, agent):
    by_id = pytest_run(project, "conversations", "--agent", agent("deterministic_v2"), "-k", "refund")
    assert by_id.returncode == 0 and "1 passed, 2 deselected" in by_id.stdout
    by_tag = pytest_run(project, "conversations", "--agent", agent("deterministic_v2"), "-k", "p1")
    assert by_tag.returncode == 0 and "2 passed, 1 deselected" in by_tag.stdout


def test_exitfirst_and_junitxml(project, agent, tmp_path):
    junit = tmp_path / "junit.xml"
    result = pytest_run(project, "conversations", "--agent", agent("deterministic_v2"), "-x",
                        f"--junitxml={junit}")
    assert result.returncode == 1
    assert "stopping after 1 failures" in result.stdout
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert [case.get("name") for case in cases] == ["price"]
    assert "expected: contains '49 USD'" in cases[0].find("failure").text


def test_xdist(project, agent):
    result = pytest_run(project, "conversations", "--agent", agent("deterministic"), "-n", "2")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 2 passed" in result.stdout
    assert "FAILED conversations/shop.yaml::refund" in result.stdout


def test_invalid_suite_is_a_collection_error_with_file_and_line(project, agent):
    (project / "conversations" / "broken.yaml").write_text(
        "conversations:\n  - id: a\n    turns:\n      - user: hi\n        expect: [{sounds-like: x}]\n"
    )
    result = pytest_run(project, "conversations", "--agent", agent("echo"))
    assert result.returncode == 2
    assert "invalid suite: " in result.stdout
    assert "broken.yaml:5: conversation 'a', turn 1: unknown expectation type 'sounds-like'" in result.stdout


def test_plugin_module_imports_nothing_heavy():
    code = (
        "import sys, tasks.regress.pytest_plugin as p; "
        "heavy = [m for m in ('mlflow', 'yaml', 'jinja2', 'rich', 'requests', 'tasks.regress.suite') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unreachable_mlflow_server_fails_the_items_in_seconds(project, monkeypatch):
    """The plugin used the client's default retries: still hanging after a minute (120 s ends this test)."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)
    result = pytest_run(project, "conversations", "--agent", "models:/shop@candidate", "--regress-tracking-uri",
                        "http://127.0.0.1:9")
    assert result.returncode == 1 and "3 failed" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_turn_timeout_that_is_not_positive_is_a_usage_error(project, agent, value):
    """`labmate regress --timeout -1` is refused; the plugin ran the suite with it."""
    result = pytest_run(project, "conversations", "--agent", agent("deterministic_v2"), "--regress-timeout", value)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "--regress-timeout must be positive" in result.stderr
