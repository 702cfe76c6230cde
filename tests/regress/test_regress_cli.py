from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import typer
from typer.testing import CliRunner

from labmate.regress_cli import register

SUITE = """
    suite: shop
    targets:
      baseline: {base}
      candidate: {cand}
    gate: {{no_new_failures_tagged: [p0]}}
    conversations:
      - id: price
        tags: [p0]
        turns: [{{user: "What is the price?", expect: [{{contains: "49 USD"}}]}}]
      - id: refund
        tags: [p1]
        turns: [{{user: refund please, expect: [{{icontains: "30 days"}}]}}]
      - id: hello
        tags: [p1]
        turns: [{{user: hello, expect: [{{starts-with: Hello}}]}}]
"""


@pytest.fixture
def app():
    app = typer.Typer()
    register(app)

    @app.command("other")
    def other() -> None:  # a second command so typer keeps `regress` as a sub-command
        pass

    return app


@pytest.fixture
def suite(write_suite, agent):
    return write_suite(SUITE.format(base=agent("deterministic"), cand=agent("deterministic_v2")))


def invoke(app, *args):
    return CliRunner().invoke(app, ["regress", *map(str, args)])


def test_gate_failure_exits_1_and_writes_reports(app, suite, tmp_path):
    out_json, out_xml, out_html = tmp_path / "r.json", tmp_path / "r.xml", tmp_path / "r.html"
    result = invoke(app, suite, "--json", out_json, "--junit", out_xml, "--html", out_html)
    assert result.exit_code == 1, result.output
    assert "NEW FAILURE" in result.stdout and "GATE FAILED" in result.stdout
    assert "new failures tagged p0: price" in result.stdout
    report = json.loads(out_json.read_text())
    assert report["new_failures"] == ["price"] and report["fixes"] == ["refund"]
    assert report["verdict"]["passed"] is False
    root = ET.fromstring(out_xml.read_text())
    cand = root.find("testsuite[@name='regress.candidate']")
    assert cand.get("tests") == "3" and cand.get("failures") == "1"
    failure = cand.find("testcase[@name='price']/failure")
    assert failure.get("message") == "turn 1: expected contains '49 USD'"
    assert "59 USD" in failure.text
    assert root.find("testsuite[@name='regress.baseline']/testcase[@name='refund']/failure") is not None
    assert "price" in out_html.read_text()


def test_gate_pass_exits_0_with_tag_filter(app, suite):
    result = invoke(app, suite, "--tag", "p1")
    assert result.exit_code == 0, result.output
    assert "GATE PASSED" in result.stdout
    assert "price" not in result.stdout


def test_command_line_gate_and_targets(app, suite, agent):
    same = invoke(app, suite, "--candidate", agent("deterministic"))
    assert same.exit_code == 0, same.output
    strict = invoke(app, suite, "--candidate", agent("deterministic"), "--min-pass-rate", "0.9")
    assert strict.exit_code == 1
    assert "candidate pass rate 66.7% is below min_pass_rate 90.0%" in strict.stdout


def test_workers_use_a_process_pool(app, suite, tmp_path):
    out_json = tmp_path / "w.json"
    result = invoke(app, suite, "--workers", "2", "--json", out_json)
    assert result.exit_code == 1, result.output
    report = json.loads(out_json.read_text())
    assert report["new_failures"] == ["price"]


def test_agent_errors_do_not_stop_the_suite(app, write_suite, agent, tmp_path):
    path = write_suite(f"""
        targets: {{candidate: "{agent('hanging')}"}}
        conversations:
          - {{id: a, turns: [{{user: x}}]}}
          - {{id: b, turns: [{{user: y}}]}}
    """)
    out_json = tmp_path / "e.json"
    result = invoke(app, path, "--timeout", "0.2", "--json", out_json)
    assert result.exit_code == 1
    report = json.loads(out_json.read_text())
    assert [e["results"]["candidate"]["error"] for e in report["conversations"]] == [
        "turn 1: timeout: no reply within 0.2 s"
    ] * 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("conversations:\n  - id: a\n    turns: [\n", "suite.yaml:3: malformed YAML"),
        ("conversations:\n  - id: a\n    turns: [{user: x, expect: [{smells-like: y}]}]\n",
         "unknown expectation type 'smells-like'; valid types: equals, contains"),
        ("conversations:\n  - id: a\n    turns: [{user: x}]\n", "no candidate target"),
    ],
)
def test_invalid_input_exits_2_with_one_line(app, write_suite, text, expected):
    result = invoke(app, write_suite(text))
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_unloadable_target_exits_2(app, suite):
    result = invoke(app, suite, "--candidate", "models:/no-such-model@candidate", "--tracking-uri",
                    f"sqlite:///{suite.parent}/mlflow.db")
    assert result.exit_code == 2
    last_line = result.stderr.strip().splitlines()[-1]  # mlflow logs its own INFO lines before
    assert last_line == (
        "error: cannot load target 'models:/no-such-model@candidate': "
        "Registered Model with name=no-such-model not found"
    )


def test_gate_unknown_tag_from_suite_exits_2(app, write_suite, agent):
    path = write_suite(f"""
        targets: {{candidate: "{agent('echo')}"}}
        gate: {{no_new_failures_tagged: [p0]}}
        conversations: [{{id: a, tags: [p1], turns: [{{user: x}}]}}]
    """)
    result = invoke(app, path)
    assert result.exit_code == 2
    assert "gate names unknown tag 'p0' in no_new_failures_tagged; tags used in the suite: p1" in result.stderr


def test_a_tracking_uri_password_is_masked_in_the_error(app, suite, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = invoke(app, suite, "--candidate", "models:/sales-agent@candidate",
                    "--tracking-uri", "http://alice:mlpass777@127.0.0.1:9")
    assert result.exit_code == 2
    assert "mlpass777" not in result.output and "http://alice:***@127.0.0.1:9" in result.stderr


def test_a_report_that_cannot_be_written_is_refused_before_the_run(app, suite, tmp_path):
    result = invoke(app, suite, "--html", tmp_path / "missing" / "report.html")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: cannot write a report to {tmp_path / 'missing' / 'report.html'}: the directory "
        f"{tmp_path / 'missing'} doesn't exist"
    )
    assert result.stdout == ""  # no conversation ran


@pytest.mark.parametrize("option", [["--workers", "0"], ["--bogus"]])
def test_a_usage_error_exits_2_not_the_gates_1(suite, option):
    """CI reads 1 as "the gate failed"; the real CLI (labmate.cli) maps other commands' usage errors to 1."""
    import subprocess
    import sys
    from pathlib import Path

    labmate = Path(sys.executable).with_name("labmate")
    result = subprocess.run([str(labmate), "regress", str(suite), *option], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Usage: labmate regress" in result.stderr and "Traceback" not in result.stderr


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
) + "conversations:\n  - {id: a, turns: [{user: x}]}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LAUGHS, "suite.yaml:3: YAML aliases are not supported in suites (found *a); write the value out, or share it "
                 "with `vars:` or `include:`"),
        ("options: {headers: x}\nconversations: [{id: a, turns: [{user: x}]}]\n",
         "suite.yaml:2: option 'headers' must map header names to strings, e.g. {Authorization: 'Bearer …'}"),
        ("options:\n  intent_path: 7\nconversations: [{id: a, turns: [{user: x}]}]\n",
         "suite.yaml:3: option 'intent_path' must be a JSON path string, e.g. '$.intent'"),
        ("conversations: [{id: a, repeat: 1001, turns: [{user: x}]}]\n",
         "suite.yaml:2: conversation 'a': 'repeat' must be an integer from 1 to 1000"),
        ("conversations: [{id: a, turns: [{user: x}]}]\n" + "#" * 3_000_000 + "\n",
         "suite.yaml: the file is larger than 2 MB, the limit for a suite file; split it into files that `include:` "
         "each other"),
    ],
)
def test_suites_the_loader_refuses_exit_2_with_the_message(app, write_suite, agent, text, expected):
    """With a candidate that would load: the suite itself is what is refused (a headers string used to reach
    the target's loader and end in a traceback)."""
    path = write_suite(f"targets: {{candidate: '{agent('echo')}'}}\n" + text)
    result = invoke(app, path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip() == f"error: {path.parent}/{expected}"


def test_an_mlflow_server_that_does_not_answer_is_said_in_seconds(suite, monkeypatch):
    """The terminal's MLflow limits reached only `say` and `shell`: `labmate regress` took four minutes of the
    client's retries to say so (the subprocess's 60 s timeout would end this test)."""
    import subprocess
    import sys
    from pathlib import Path

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)
    labmate = Path(sys.executable).with_name("labmate")
    result = subprocess.run([str(labmate), "regress", str(suite), "--candidate", "models:/sales-agent@candidate",
                             "--tracking-uri", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot load target 'models:/sales-agent@candidate'" in result.stderr, result.stderr
