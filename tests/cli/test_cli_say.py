"""`labmate say … --json` end to end, as a subprocess: exit codes, payloads, jobs, audit."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

LABMATE = str(Path(sys.executable).with_name("labmate"))
RUN = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@dataclass
class Said:
    code: int
    payloads: Any
    stdout: str
    stderr: str


@pytest.fixture
def say(lab_home: Path, migrated: str, tmp_path: Path):
    """`labmate say` as a subprocess, in a home whose knowledge base is at head (a fresh one is
    migrated by the first process: the docs' commands and the README's test cover that)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(lab_home), LABMATE_CONFIG=str(tmp_path / "labmate.toml"))

    def run(*args: str) -> Said:
        proc = subprocess.run(
            [LABMATE, "say", *args, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
        )
        try:
            payloads = json.loads(proc.stdout)
        except json.JSONDecodeError:
            payloads = None
        return Said(proc.returncode, payloads, proc.stdout, proc.stderr)

    return run


def as_slack_user(tmp_path: Path, user: str, extra: str = "") -> None:
    """Map this machine's login to a Slack user id, as a team does in labmate.toml."""
    import getpass

    (tmp_path / "labmate.toml").write_text(f'{extra}\n[terminal]\nusers = {{ "{getpass.getuser()}" = "{user}" }}\n')


def db_path(lab_home: Path) -> Path:
    return lab_home / "labmate.db"


def texts(payload: dict[str, Any]) -> list[str]:
    out = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            out.append(block["text"]["text"])
        out.extend(e["text"] for e in block.get("elements", []))
    return out


def test_decide_prints_the_block_kit_payload_with_the_text_escaped(say, lab_home, tmp_path):
    as_slack_user(tmp_path, "U0ALICE")
    typed = 'ship it <!channel> "v3" \\ok <@U123> <https://evil|ok>'
    said = say(f"decide {typed} #release", "--channel", "C0LAB")
    assert said.code == 0, said.stderr
    assert isinstance(said.payloads, list) and len(said.payloads) == 1
    (payload,) = said.payloads
    assert set(payload) == {"text", "blocks"}
    escaped = 'ship it &lt;!channel&gt; "v3" \\ok &lt;@U123&gt; &lt;https://evil|ok&gt;'
    section = payload["blocks"][0]["text"]["text"]
    assert section == f":memo: *Decision #1* logged by <@U0ALICE>\n>{escaped}"
    assert payload["text"] == f"Decision #1 logged: {escaped}"
    assert "<!channel>" not in said.stdout and "<@U123>" not in said.stdout

    with sqlite3.connect(db_path(lab_home)) as conn:
        assert conn.execute("SELECT text, author, channel FROM decisions").fetchall() == [(typed, "U0ALICE", "C0LAB")]
        rows = conn.execute('SELECT "user", channel, source, verb, outcome FROM audit_events').fetchall()
    assert rows == [("U0ALICE", "C0LAB", "shell", "decide", "ok")]


def test_decide_with_a_run_prints_the_reply_and_the_jobs_reply(say, lab_home):
    said = say(f"decide promote the ranker run:{RUN}")
    assert said.code == 0, said.stderr
    assert len(said.payloads) == 2
    first, second = said.payloads
    assert first["text"] == "Decision #1 logged: promote the ranker"
    assert any("(checking…)" in t for t in texts(first))
    assert second["text"] == "Decision #1: 1 link(s) not found in MLflow"
    assert f"run `{RUN}` was not found in MLflow" in second["blocks"][0]["text"]["text"]
    with sqlite3.connect(db_path(lab_home)) as conn:
        assert conn.execute("SELECT status FROM decision_links").fetchall() == [("missing",)]
        assert conn.execute("SELECT outcome FROM audit_events").fetchall() == [("ok",)]


def test_lab_prefix_is_optional(say):
    assert say("/lab decide drop bigrams #features").code == 0
    with_prefix = say("/lab decisions bigrams")
    without = say("decisions bigrams")
    assert with_prefix.code == without.code == 0
    assert with_prefix.payloads == without.payloads
    assert "drop bigrams" in with_prefix.payloads[0]["blocks"][1]["text"]["text"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("decied ship it", "I don't know the command `decied`. Did you mean `decide`?"),
        ("decide #release", "A decision needs some text saying what was decided."),
        ('decide x exp:"wine quality', "The quote `\"` before `wine quality` is never closed."),
        ("supersede 5 x", "There is no decision #5."),
    ],
)
def test_bad_input_exits_1(say, text, message):
    said = say(text)
    assert said.code == 1, said.stderr
    (payload,) = said.payloads
    assert message in payload["blocks"][0]["text"]["text"]
    assert "Traceback" not in said.stderr


def test_refusal_exits_1_and_names_who_may(say, tmp_path, lab_home):
    as_slack_user(tmp_path, "UOTHER", '[access]\nadmins = ["UADMIN"]\n\n[access.verbs]\ndecide = ["UWRITER"]\n')
    said = say("decide ship it", "--channel", "C9")
    assert said.code == 1
    assert "limited to <@UWRITER> and the admins (<@UADMIN>)" in said.payloads[0]["text"]
    with sqlite3.connect(db_path(lab_home)) as conn:
        assert conn.execute('SELECT "user", channel, outcome FROM audit_events').fetchall() == [("UOTHER", "C9", "refused")]
        assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (0,)


def test_help_exits_0(say):
    said = say("help")
    assert said.code == 0
    assert said.payloads[0]["text"] == "labmate commands"


def test_damaged_knowledge_base_exits_2_with_an_error_id(say, lab_home):
    """The schema says head but the search table is gone: an internal error, not a traceback on stdout."""
    assert say("decide ship it").code == 0
    with sqlite3.connect(db_path(lab_home)) as conn:
        conn.execute("DROP TABLE decisions_fts")
    said = say("decisions ship")
    assert said.code == 2
    (payload,) = said.payloads
    context = payload["blocks"][-1]["elements"][0]["text"]
    assert context.startswith("Error id `E-")
    error_id = context.split("`")[1]
    assert payload["text"] == "Something went wrong on my side, so this was not done."
    log = (lab_home / "labmate.log").read_text()
    assert error_id in log and "Traceback" in log  # the traceback is in the log, under the id
    assert "Traceback" not in said.stdout and "Traceback" not in said.stderr


def test_corrupt_database_file_exits_2_with_an_error_id(say, lab_home):
    lab_home.mkdir(parents=True, exist_ok=True)
    db_path(lab_home).write_bytes(b"this is not a database" * 500)
    said = say("decisions ship")
    assert said.code == 2
    assert said.payloads is not None
    assert "Error id `E-" in json.dumps(said.payloads)
    assert "could not open its knowledge base" in said.payloads[0]["text"]
    assert "Traceback" not in said.stdout + said.stderr


def test_the_terminal_user_is_the_login_and_the_audit_says_so(say, lab_home):
    import getpass

    assert say("decide ship it").code == 0
    with sqlite3.connect(db_path(lab_home)) as conn:
        assert conn.execute('SELECT "user", actor FROM audit_events').fetchall() == [(getpass.getuser(), getpass.getuser())]
        assert conn.execute("SELECT author FROM decisions").fetchall() == [(getpass.getuser(),)]


def test_acting_as_someone_else_is_refused_without_the_setting(say, lab_home):
    said = say("supersede 1 ship it", "--user", "U0ADMIN")
    assert said.code == 1
    text = said.payloads[0]["text"]
    assert "so you can't run commands as `U0ADMIN`" in text
    with sqlite3.connect(db_path(lab_home)) as conn:
        import getpass

        rows = conn.execute('SELECT "user", actor, outcome FROM audit_events').fetchall()
        assert rows == [("U0ADMIN", getpass.getuser(), "refused")]


def test_acting_as_someone_else_with_the_setting_records_both(say, lab_home, tmp_path):
    import getpass

    me = getpass.getuser()
    (tmp_path / "labmate.toml").write_text(f'[terminal]\nallow_acting_as = ["{me}"]\n')
    said = say("decide ship it", "--user", "U0ADMIN")
    assert said.code == 0, said.stderr
    with sqlite3.connect(db_path(lab_home)) as conn:
        assert conn.execute('SELECT "user", actor FROM audit_events').fetchall() == [("U0ADMIN", me)]
        assert conn.execute("SELECT author FROM decisions").fetchall() == [("U0ADMIN",)]


def test_the_shell_takes_the_same_short_options_as_say(say, lab_home, tmp_path):
    """`labmate shell -u U0ADMIN -c C1`: acting as someone else is refused without the setting, and
    allowed with it, recording both and the channel, as `say -u` does."""
    import getpass

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(lab_home), LABMATE_CONFIG=str(tmp_path / "labmate.toml"))

    def shell(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LABMATE, "shell", *args], input="decide ship it\n", cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180)

    assert shell("-u", "U0ADMIN", "-c", "C1").returncode == 1
    (tmp_path / "labmate.toml").write_text(f'[terminal]\nallow_acting_as = ["{getpass.getuser()}"]\n')
    assert shell("-u", "U0ADMIN", "-c", "C1").returncode == 0
    with sqlite3.connect(db_path(lab_home)) as conn:
        assert conn.execute('SELECT "user", actor, channel, outcome FROM audit_events ORDER BY id').fetchall()[-1] == (
            "U0ADMIN", getpass.getuser(), "C1", "ok")


def test_a_launch_a_say_left_running_is_failed_by_the_next_command_even_status(lab_home, migrated, tmp_path):
    """`say "run …"` past LABMATE_JOB_TIMEOUT exits and its in-process worker (and the run) with it; once
    the job's heartbeat is stale, the next command, even `status` (which starts no worker), fails the
    launch instead of listing it as running for good (docs/launch.md says so)."""
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(lab_home), LABMATE_CONFIG=str(tmp_path / "labmate.toml"), LABMATE_JOB_STALE_AFTER="2")

    def say(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LABMATE, "say", *args], cwd=tmp_path, env={**env, **extra}, capture_output=True,
                              text=True, timeout=180)

    # 40 s: on a loaded or slow machine the in-process worker needs seconds to start and create the MLflow run
    left = say("run sales-agent epochs=2000", LABMATE_JOB_TIMEOUT="40")
    assert left.returncode == 2 and "still running" not in left.stderr, left.stdout + left.stderr
    told = " ".join(re.sub(r"[│╭╮╰╯─]", " ", left.stdout).split())  # not "ask again": that starts another run
    assert "The run didn't end within 40 s (LABMATE_JOB_TIMEOUT)" in told and "Asking again starts a new run" in told
    assert "status may show it running for 2 s more (LABMATE_JOB_STALE_AFTER), then the next" in told, told
    assert "running" in " ".join(say("status").stdout.split())  # its heartbeat is fresh yet: it may be running
    time.sleep(3)
    shown = " ".join(say("status").stdout.split())
    assert "0 launches queued or running" in shown, shown
    with sqlite3.connect(db_path(lab_home)) as db:
        (status, reason, run_id), = db.execute("SELECT status, reason, mlflow_run_id FROM launches").fetchall()
    assert status == "failed" and "the terminal session that asked for it ended with its process" in reason
    assert run_id, "the launch never got as far as creating its MLflow run"
    with sqlite3.connect(lab_home / "mlflow.db") as db:  # it stayed RUNNING: `runs`, cleanup and watch saw it run
        assert db.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchall() == [("FAILED",)]
    assert "sales-agent-L1" not in say("runs sales-agent status:running").stdout


def test_a_link_check_quotes_mlflows_reason_with_its_capitals(say):
    """The reason, put inside a sentence, was lower-cased to "mLflow has no experiment"."""
    said = say("decide test scoping run:demo-bigram exp:bogus")
    assert said.code == 0, said.stdout + said.stderr
    checked = " ".join(json.dumps(p) for p in said.payloads)
    assert "(MLflow has no experiment" in checked and "mLflow" not in checked, checked
    found = " ".join(json.dumps(p) for p in say("decide try it exp:Default").payloads)  # MLflow's own experiment
    assert "experiment `Default`: id 0" in found and "experiment Default" not in found, found


def test_the_example_questions_about_a_logged_decision_are_answered(say):
    """After `labmate demo`'s suggested decision, labmate's own example questions said "No decision
    mentions “candidate”, “model”" although one did; a query of punctuation listed every decision."""
    assert say("decide ship the candidate model:sales-agent@candidate #release").code == 0
    for question in ("what did we decide about the candidate model?", "ask why did we pick the candidate model?"):
        said = say(question)
        assert said.code == 0, said.stdout + said.stderr
        (payload,) = said.payloads
        assert payload["text"] == "1 decision that links a model and mentions “candidate”"
        assert payload["blocks"][0]["text"]["text"] == "*Decisions that link a model and mention* “candidate”"
        assert payload["blocks"][1]["text"]["text"] == "*#1* ship the candidate"
    said = say("decisions (((")
    assert said.code == 1
    assert said.payloads[0]["text"] == (
        "`(((` has no words to search for: the decision log is searched by words, not punctuation."
    )
    said = say("find sales-agent limit 0")
    assert said.code == 1
    assert said.payloads[0]["text"] == "`limit 0` needs a whole number from 1 to 50, e.g. `limit 5`."


def test_two_first_commands_at_once_on_a_new_home_both_open_the_mlflow_store(tmp_path):
    """Each `say` checks its decision's run link, the first use of a new embedded MLflow store: both
    created MLflow's tables at once, and one failed ("table latest_metrics already exists"; or the
    store was left half-migrated for good)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(tmp_path / "home"), LABMATE_CONFIG=str(tmp_path / "labmate.toml"))
    (tmp_path / "labmate.toml").touch()
    says = [subprocess.Popen([LABMATE, "say", f"decide keep {n} run:{RUN}", "--json"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in ("this", "that")]
    outputs = [proc.communicate(timeout=180) for proc in says]
    assert [proc.returncode for proc in says] == [0, 0], outputs
    for stdout, stderr in outputs:
        assert "was not found in MLflow" in stdout and "Warning" not in stderr, (stdout, stderr)
    again = subprocess.run([LABMATE, "say", "best sales-agent val_f1"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=180)
    assert again.returncode == 1 and "MLflow has no experiment" in again.stdout, again.stdout + again.stderr


def test_bytes_that_are_not_utf8_are_refused_and_audited(say, lab_home):
    """Argv decodes them as lone surrogates, which no database stores: an internal error, and no audit row."""
    said = say("decide caf\udcff #enc")
    assert said.code == 1, said.stderr
    assert "bytes that aren't valid UTF-8" in json.dumps(said.payloads)
    with sqlite3.connect(db_path(lab_home)) as db:
        assert db.execute("SELECT verb, outcome, text FROM audit_events").fetchall() == [
            ("decide", "user_error", "decide caf\ufffd #enc")
        ]
        assert db.execute("SELECT count(*) FROM decisions").fetchone() == (0,)


def test_ctrl_c_while_waiting_for_a_job_leaves_at_once(lab_home, migrated, tmp_path):
    """The interpreter's exit joined the embedded worker's pool thread: Ctrl-C left only when the job
    ended (two minutes of MLflow retries), and a second Ctrl-C printed a traceback."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(lab_home), LABMATE_CONFIG=str(tmp_path / "labmate.toml"),
               MLFLOW_TRACKING_URI="http://127.0.0.1:9", MLFLOW_HTTP_REQUEST_MAX_RETRIES="7")
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:  # a file, not a pipe: a pipe nobody reads could fill and block the child
        proc = subprocess.Popen([LABMATE, "say", "best sales-agent"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
    try:
        deadline = time.monotonic() + 60
        while "Working on it" not in (line := proc.stdout.readline()):  # type: ignore[union-attr]
            assert line and time.monotonic() < deadline, "no 'Working on it' card"
        time.sleep(3)  # the job is running: in MLflow's retries against a port nobody listens on
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        proc.communicate(timeout=30)
        assert time.monotonic() - started < 10 and proc.returncode == 130
        assert "Traceback" not in errors.read_text()
        assert "Stopped waiting. What this command started stops with this terminal;" in errors.read_text()
    finally:
        proc.kill()


def test_ctrl_c_at_the_shell_prompt_clears_the_line_and_the_shell_goes_on(lab_home, migrated, tmp_path):
    """It quit the whole shell (exit 0); Python's own prompt, psql and the others clear the line."""
    import pty
    import select
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(lab_home), LABMATE_CONFIG=str(tmp_path / "labmate.toml"), TERM="xterm")
    main, child = pty.openpty()
    proc = subprocess.Popen([LABMATE, "shell"], cwd=tmp_path, env=env, stdin=child, stdout=child, stderr=child,
                            start_new_session=True)
    os.close(child)
    seen = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
            if select.select([main], [], [], 0.2)[0]:
                try:
                    seen += os.read(main, 65536)
                except OSError:
                    break

    try:
        read_until(b"lab>")
        os.write(main, b"decide half typed\x03")
        time.sleep(0.5)
        assert proc.poll() is None, "Ctrl-C at the prompt ended the shell"
        os.write(main, b"help\r")
        read_until(b"details and examples")
        os.write(main, b"exit\r")
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(main)
    with sqlite3.connect(db_path(lab_home)) as db:
        assert db.execute("SELECT verb FROM audit_events").fetchall() == [("help",)], "the half-typed line never ran"
