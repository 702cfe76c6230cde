"""Configuration as a user meets it: malformed labmate.toml, usage errors, --help, `labmate doctor`,
and where state lives by default. Real `labmate` processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

LABMATE = str(Path(sys.executable).with_name("labmate"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slack"))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "labmate.toml").touch(exist_ok=True)  # LABMATE_CONFIG names it: an empty one is no configuration
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update({"LABMATE_HOME": str(tmp_path / "home"), "LABMATE_CONFIG": str(tmp_path / "labmate.toml"), **extra})
    return env


def _labmate(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LABMATE, *args], cwd=tmp_path, env=_env(tmp_path, **extra), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[access]\nadmins = ["U1"\nverbs = {}\n', ":3:1: invalid TOML: "),
        ('command = "/lab"\n[access]\nadmins = "U1"\n', ":3: access.admins: expected a list, got 'U1'"),
        ('[access.verbs]\nsupersede = "S0LEADS"\n', ":2: access.verbs.supersede: expected a list, got 'S0LEADS'"),
        ('job_timeout = "soon"\n', ":1: job_timeout: expected a number, got 'soon'"),
        ('job_timeout = 0\n', ":1: job_timeout: expected a number > 0.0, got 0"),
        ('job_timeout = inf\n', ":1: job_timeout: expected a number <= 86400.0, got inf"),  # TOML's inf: wait for ever
        ('[cleanup]\nsnooze_days = inf\n', ":2: cleanup.snooze_days: expected a number <= 3650.0, got inf"),
        ('[cleanup.experiments.a]\ntop_k = 1\n[cleanup.experiments.b]\ntop_k = -1\n',
         ":4: cleanup.experiments.b.top_k: expected an integer >= 0, got -1"),
        ('[regress.suites.chat]\nallow_htp = true\n',
         ":2: regress.suites.chat: unknown key 'allow_htp'; did you mean 'allow_http'?"),
        ('[access]\nadmins = []\nowners = ["U1"]\n', ":3: access: unknown key 'owners'; the keys are admins, verbs"),
        ('hoem = "/srv/labmate"\n', ":1: unknown key 'hoem'; did you mean 'home'?"),
        # a typo must not leave the default (anyone may launch) in force
        ('[projects.p]\nuri = "x"\nexperiment = "e"\nlauncher = ["U0"]\n',
         ":4: projects.p: unknown key 'launcher'; did you mean 'launchers'?"),
        ('[metric_directions]\nloss = "lower"\nval_f1 = "up"\n', ":3: [metric_directions] val_f1 = 'up': say \"lower\""),
        ('[access]\nadmins = ["U1",\n"U2",\n', ":3: invalid TOML: "),
        (b'command = "/lab"\n# caf\xe9\n', ":2: not UTF-8 text (byte 0xe9); save the file as UTF-8"),
        ('[projects.p]\nuri = "x"\nexperiment = "e"\non_worker_lost = "maybe"\n',
         ":4: projects.p.on_worker_lost: expected one of 'fail', 'retry', got 'maybe'"),
        # secrets are read from the environment only
        ('command = "/lab"\nslack_bot_token = "xoxb-1"\n',
         ":2: slack_bot_token is a secret, read from the environment only: remove it from the file and set SLACK_BOT_TOKEN"),
        ('[[digest.channels]]\nchannel = "C1"\nat = "25:99"\n',
         ":3: digest.channels (entry 1).at: expected a 24-hour time of day as HH:MM, e.g. '09:30', got '25:99'"),
        # the clean-up's time said its regex: "expected text matching '^([01][0-9]|2[0-3]):[0-5][0-9]$'"
        ('[cleanup]\ndaily_at = "7:05"\n', ":2: cleanup.daily_at: expected a 24-hour time of day as HH:MM, e.g. '09:30', got '7:05'"),
        # the entry that is wrong, not the first with that key; counted from 1, as people do
        ('[[digest.channels]]\nchannel = "C1"\nat = "09:00"\n\n[[digest.channels]]\nchannel = "C2"\nat = "25:00"\n',
         ":7: digest.channels (entry 2).at: expected a 24-hour time of day as HH:MM, e.g. '09:30', got '25:00'"),
        ('[[digest.channels]]\nchannel = "C1"\ntimezone = "UTC"\n[[digest.channels]]\nchannel = "C2"\n'
         'timezone = "Mars/Olympus"\n',
         ":6: digest.channels (entry 2): timezone 'Mars/Olympus' of the digest for C2 is not a time zone; use an IANA"),
        ('[access]\nadmins = ["U1", 2]\n', ":2: access.admins (entry 2): expected text, got 2"),
        # a mistyped verb would leave the real one open to everyone
        ('[access]\nadmins = ["U1"]\n[access.verbs]\nsupersed = ["U1"]\n',
         ":4: [access.verbs] supersed = …: there is no command 'supersed'; did you mean 'supersede'?"),
    ],
)
def test_a_malformed_labmate_toml_is_one_line_and_exit_1(tmp_path, toml, expected):
    (tmp_path / "labmate.toml").write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    result = _labmate(tmp_path, "say", "help")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"labmate: {tmp_path / 'labmate.toml'}{expected}"), lines[0]


def test_a_config_path_that_is_not_a_file_says_so(tmp_path):
    result = _labmate(tmp_path, "say", "help", LABMATE_CONFIG=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"labmate: {tmp_path}: can't be read (Is a directory); point LABMATE_CONFIG at a readable file"
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LABMATE_REAP_EVERY", "0", "expected a number > 0.0, got '0'"),  # beat would spin
        ("LABMATE_JOB_STALE_AFTER", "-5", "expected a number > 0.0, got '-5'"),
        ("LABMATE_SLACK_TIMEOUT", "0", "expected a number > 0.0, got '0'"),  # every Slack call would fail
        ("LABMATE_DELIVERY_RETRIES", "-1", "expected an integer >= 0, got '-1'"),
    ],
)
def test_a_setting_out_of_its_range_is_refused(tmp_path, variable, value, expected):
    result = _labmate(tmp_path, "say", "help", **{variable: value})
    assert result.returncode == 1
    assert result.stderr.strip() == f"labmate: environment variable {variable}: {expected}"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LABMATE_BROKER_URL", "ftp://x", "broker_url 'ftp://x' is not a broker labmate can use: give redis://"),
        ("LABMATE_RESULT_BACKEND", "mongodb://u:pw@x", "result_backend 'mongodb://u:***@x' is not a result store"),
    ],
)
def test_a_broker_labmate_cannot_use_is_one_line_not_a_traceback(tmp_path, variable, value, expected):
    """Celery raised KeyError('No such transport: ftp') from deep inside `labmate worker`."""
    for command in (["worker"], ["doctor", "--no-check"]):
        result = _labmate(tmp_path, *command, **{variable: value})
        assert result.returncode == 1
        assert result.stderr.startswith(f"labmate: environment variable {variable}: {expected}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_worker_or_beat_on_the_embedded_broker_is_a_configuration_error(tmp_path, command):
    result = _labmate(tmp_path, command)
    assert result.returncode == 1  # wrong input, not an internal error (2)
    assert f"labmate {command} needs a shared broker: set LABMATE_BROKER_URL=redis://" in " ".join(result.stderr.split())


def test_a_wrong_environment_value_names_the_variable(tmp_path):
    result = _labmate(tmp_path, "say", "help", LABMATE_JOB_TIMEOUT="soon")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "labmate: environment variable LABMATE_JOB_TIMEOUT: expected a number, got 'soon'"
    )


def test_a_wrong_file_value_the_environment_overrides_is_refused_too(tmp_path):
    """It was never read while LABMATE_HOME was set, and broke the first start without the variable."""
    (tmp_path / "labmate.toml").write_text('command = "/lab"\nhome = 5\n')
    result = _labmate(tmp_path, "say", "help")  # LABMATE_HOME is set (_env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"labmate: {tmp_path / 'labmate.toml'}:2: home: expected text, got 5"
    (tmp_path / "labmate.toml").write_text('home = "elsewhere"\n')
    assert _labmate(tmp_path, "say", "help").returncode == 0


@pytest.mark.parametrize("args", [["say"], ["say", "--bogus", "help"], ["nope"]])
def test_usage_errors_exit_1_as_the_readme_says(tmp_path, args):
    result = _labmate(tmp_path, *args)
    assert result.returncode == 1, result
    assert "Usage: labmate" in result.stderr and "Traceback" not in result.stderr


def test_help_shows_no_type_for_flags(tmp_path):
    shown = _labmate(tmp_path, "say", "--help", COLUMNS="120").stdout
    json_line = next(line for line in shown.splitlines() if "--json" in line)
    help_line = next(line for line in shown.splitlines() if "--help" in line)
    assert "<bool>" not in shown
    assert "Print the Block Kit payloads" in json_line and "Show this message" in help_line
    user_line = next(line for line in shown.splitlines() if "--user" in line)
    assert "<str>" in user_line  # value options keep theirs
    assert "[terminal] allow_acting_as" in user_line  # where to set it, not eaten as rich markup


def test_the_default_home_is_the_user_data_directory(tmp_path, monkeypatch):
    """Not the working directory: the same command from elsewhere finds the same store."""
    from labmate.settings import load_settings

    monkeypatch.delenv("LABMATE_HOME")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    if sys.platform == "darwin":
        expected = tmp_path / "user" / "Library" / "Application Support" / "labmate"
    else:
        expected = tmp_path / "user" / ".local" / "share" / "labmate"
    assert load_settings().home == expected
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_settings().home == expected


def test_an_empty_labmate_home_is_the_default_not_the_working_directory(tmp_path, monkeypatch):
    from labmate.settings import load_settings

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "labmate.toml").touch()
    assert load_settings({"LABMATE_HOME": " "}, tmp_path / "labmate.toml").home == load_settings({}, tmp_path / "labmate.toml").home
    assert load_settings({"LABMATE_HOME": ""}, tmp_path / "labmate.toml").home.is_absolute()


@pytest.mark.parametrize("command", [["say", "decisions"], ["demo"], ["shell"], ["db", "upgrade"]])
def test_a_home_labmate_cannot_use_is_one_line_and_exit_1(tmp_path, command):
    """A file where LABMATE_HOME points, or a directory labmate can't write to: what is wrong and what to
    do, not a traceback, an error id, or a log file that can't exist."""
    (tmp_path / "afile").write_text("")
    result = subprocess.run([LABMATE, *command], cwd=tmp_path, env=_env(tmp_path, LABMATE_HOME=str(tmp_path / "afile")),
                            input="", capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == (f"labmate: LABMATE_HOME {tmp_path / 'afile'} is a file, not a directory: point "
                                     "LABMATE_HOME at a directory you can write to, or unset it for the default")
    assert "Traceback" not in result.stdout + result.stderr and "E-" not in result.stdout


def test_doctor_says_when_the_home_is_not_usable(tmp_path):
    (tmp_path / "afile").write_text("")
    result = _labmate(tmp_path, "doctor", LABMATE_HOME=str(tmp_path / "afile" / "labmate"))
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert line.startswith(f"FAILED  home: labmate can't create its home {tmp_path / 'afile' / 'labmate'}: {tmp_path / 'afile'} is not")


@pytest.mark.parametrize("source", ["environment", "labmate.toml"])
def test_a_home_starting_with_a_tilde_is_in_the_users_home(tmp_path, monkeypatch, source):
    """Not a directory named `~` under wherever labmate was run from."""
    from labmate.settings import load_settings

    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    config = tmp_path / "labmate.toml"
    config.write_text('home = "~/labstore"\n' if source == "labmate.toml" else "")
    environ = {"LABMATE_HOME": "~/labstore"} if source == "environment" else {}
    settings = load_settings(environ, config)
    assert settings.home == tmp_path / "user" / "labstore"
    assert settings.database_url == f"sqlite:///{tmp_path / 'user' / 'labstore' / 'labmate.db'}"


def test_doctor_shows_sources_masks_secrets_and_checks_services(tmp_path):
    from fakeslack import FakeSlack

    (tmp_path / "labmate.toml").write_text(
        'decision_emoji = "pushpin"\n[access]\nadmins = ["U0ADMIN"]\n'
        '[cleanup]\ngc_backend_store_uri = "postgresql://mlflow:gc-db-password@db/mlflow"\n'
        '[projects.train]\nuri = "https://bot:git-token-secret@git.example.com/acme/train.git"\nexperiment = "e"\n'
        '[[digest.channels]]\nchannel = "C1"\n[[digest.channels]]\nchannel = "C2"\nat = "08:30"\n'
    )
    with FakeSlack(token="xoxb-doctor-secret-token") as slack:
        result = _labmate(
            tmp_path,
            "doctor",
            COLUMNS="200",
            SLACK_BOT_TOKEN="xoxb-doctor-secret-token",
            SLACK_SIGNING_SECRET="doctor-signing-secret",
            LABMATE_SLACK_API_URL=slack.api_url,
            LABMATE_COMMAND="/mate",
        )
        assert [c.method for c in slack.calls()] == ["auth.test"]
    out = result.stdout
    assert out.splitlines()[0] == f"configuration file (LABMATE_CONFIG): {tmp_path / 'labmate.toml'}"
    assert "xoxb-doctor-secret-token" not in out + result.stderr and "doctor-signing-secret" not in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "set (hidden)" in rows["slack_bot_token"] and "environment (SLACK_BOT_TOKEN)" in rows["slack_bot_token"]
    assert "/mate" in rows["command"] and "environment (LABMATE_COMMAND)" in rows["command"]
    assert rows["decision_emoji"].split()[1:] == ["pushpin", "labmate.toml"]
    assert rows["job_timeout"].split()[-1] == "default"
    # a table's settings one per row, each with its own source; passwords in any URL masked
    assert "gc-db-password" not in out and "git-token-secret" not in out
    assert rows["cleanup.gc_backend_store_uri"].split()[1:] == ["postgresql://mlflow:***@db/mlflow", "labmate.toml"]
    assert rows["projects.train.uri"].split()[1] == "https://bot:***@git.example.com/acme/train.git"
    assert rows["projects.train.time_limit"].split()[-1] == "default"
    assert rows["access.admins"].split()[1:] == ["U0ADMIN", "labmate.toml"]
    entries = [line.split() for line in out.splitlines() if line.startswith("digest.channels (entry 2).")]
    assert [e[3:] for e in entries[:2]] == [["C2", "labmate.toml"], ["08:30", "labmate.toml"]]
    verdicts = {
        line.split()[1].rstrip(":"): line for line in out.splitlines() if line.split(" ", 1)[0] in ("ok", "FAILED", "skipped")
    }
    assert list(verdicts) == ["home", "database", "broker", "mlflow", "projects", "slack"]
    assert verdicts["projects"] == "ok      projects: train (fetched by the worker)"
    # labmate doctor creates nothing: the fresh home and its knowledge base are reported as what comes first
    assert verdicts["home"].startswith("ok      home:") and "not created yet" in verdicts["home"]
    assert verdicts["database"].startswith("ok      database: sqlite:///") and "not created yet" in verdicts["database"]
    assert not (tmp_path / "home").exists()
    assert verdicts["broker"].startswith("ok      broker: memory://")
    assert verdicts["slack"].startswith("ok      slack: bot @")
    assert result.returncode == 0, out


def test_doctor_passes_on_a_migrated_embedded_setup(tmp_path):
    assert _labmate(tmp_path, "db", "upgrade").returncode == 0
    result = _labmate(tmp_path, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"configuration file (LABMATE_CONFIG): {tmp_path / 'labmate.toml'}"
    assert "skipped slack: no SLACK_BOT_TOKEN" in result.stdout


def test_doctor_without_a_labmate_toml_says_only_defaults_apply(tmp_path):
    env = {k: v for k, v in _env(tmp_path).items() if k != "LABMATE_CONFIG"}
    (tmp_path / "labmate.toml").unlink()
    result = subprocess.run([LABMATE, "doctor", "--no-check"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"configuration file (the working directory's labmate.toml): {tmp_path / 'labmate.toml'}: not found, so only "
        "the environment and the defaults apply"
    )


@pytest.mark.parametrize("command", [["say", "help"], ["doctor"], ["serve"], ["worker"]])
def test_a_labmate_config_naming_a_missing_file_is_refused(tmp_path, command):
    """A mistyped path silently dropped [access] and the projects' launchers: everyone could launch."""
    missing = tmp_path / "labmate.tolm"
    result = _labmate(tmp_path, *command, LABMATE_CONFIG=str(missing))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"labmate: {missing}: not found, though LABMATE_CONFIG names it; create it (it may be empty) or unset "
        "LABMATE_CONFIG to read ./labmate.toml"
    )


def test_doctor_says_an_unreachable_database_in_one_line(tmp_path):
    """libpq's message spans lines (a tab-indented "Is the server running…"); the verdict doesn't."""
    result = _labmate(tmp_path, "doctor", LABMATE_DATABASE_URL="postgresql://labmate:pw@127.0.0.1:1/labmate")
    lines = result.stdout.splitlines()
    database = next(i for i, line in enumerate(lines) if line.startswith("FAILED  database:"))
    assert "127.0.0.1" in lines[database] and "labmate:***@" in lines[database]
    assert lines[database + 1].split()[1] == "broker:", lines[database:database + 2]
    assert result.returncode == 1


@pytest.mark.parametrize("command", [["serve"], ["demo"], ["db", "upgrade"], ["say", "help"]])
def test_a_database_that_is_down_at_start_is_one_line_and_exit_1(tmp_path, command):
    result = _labmate(tmp_path, *command, LABMATE_DATABASE_URL="postgresql://labmate:pw@127.0.0.1:1/labmate",
                      SLACK_BOT_TOKEN="xoxb-x", SLACK_SIGNING_SECRET="s")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("labmate: the knowledge base at postgresql://labmate:***@127.0.0.1:1/labmate "
                                    "can't be reached (connection failed: "), result.stderr
    assert result.stderr.count("\n") == 1 and "pw" not in result.stderr


def test_the_demo_against_an_mlflow_server_that_does_not_answer_stops_at_once(tmp_path):
    """Not minutes of MLflow's client retrying with warnings: one line and exit 1."""
    result = _labmate(tmp_path, "demo", MLFLOW_TRACKING_URI="http://127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.startswith("labmate: the MLflow server http://127.0.0.1:1/") and "did not answer" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(("word", "value"), [("off", False), ("no", False), ("yes", True), ("ON", True), ("0", False)])
def test_a_flag_in_the_environment_takes_yes_no_and_on_off(word, value):
    from labmate.settings import load_settings

    assert load_settings({"LABMATE_WORKER_PRELOAD": word}, Path("/nonexistent/labmate.toml")).worker_preload is value


@pytest.mark.parametrize("url", ["nonsense", "mysql://kb:pw@db/labmate"])
@pytest.mark.parametrize("source", ["environment", "file"])
def test_a_database_url_labmate_cannot_use_is_one_line_naming_the_setting(tmp_path, url, source):
    if source == "file":
        (tmp_path / "labmate.toml").write_text(f'command = "/lab"\ndatabase_url = "{url}"\n')
        result = _labmate(tmp_path, "doctor")
        where = f"{tmp_path / 'labmate.toml'}:2: "
    else:
        result = _labmate(tmp_path, "doctor", LABMATE_DATABASE_URL=url)
        where = "environment variable LABMATE_DATABASE_URL: "
    assert result.returncode == 1 and result.stdout == ""
    shown = url.replace(":pw@", ":***@")
    assert result.stderr == (f"labmate: {where}database_url '{shown}' is not a knowledge base labmate can use: give "
                             "sqlite:///path/to/labmate.db or postgresql://user:password@host:5432/database\n")


def test_doctor_checks_an_mlflow_server_with_credentials_in_its_uri_without_showing_them(tmp_path):
    """MLflow's client takes `http://user:password@host`; the check sends them as Basic auth (urllib
    would read them as part of the host name) and shows the address with the password masked."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    expected = "Basic " + base64.b64encode(b"ml:s3cr3t").decode()

    class Tracking(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.headers.get("Authorization") == expected else 401)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tracking)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        result = _labmate(tmp_path, "doctor", MLFLOW_TRACKING_URI=f"http://ml:s3cr3t@127.0.0.1:{port}")
        wrong = _labmate(tmp_path, "doctor", MLFLOW_TRACKING_URI=f"http://ml:wrong@127.0.0.1:{port}")
    finally:
        server.shutdown()
    line = next(line for line in result.stdout.splitlines() if " mlflow:" in line)
    assert line.startswith(f"ok      mlflow: http://ml:***@127.0.0.1:{port}/api/2.0/mlflow/experiments/search"), line
    assert "s3cr3t" not in result.stdout + result.stderr
    assert next(line for line in wrong.stdout.splitlines() if " mlflow:" in line).startswith("FAILED")


def test_say_with_an_mlflow_server_that_does_not_answer_says_so_within_seconds(tmp_path):
    """Not MLflow's default seven retries over about four minutes: the terminal's own bounds."""
    started = time.monotonic()
    result = _labmate(tmp_path, "say", "--json", "best sales-agent", MLFLOW_TRACKING_URI="http://ml:s3cr3t@127.0.0.1:1")
    assert time.monotonic() - started < 30
    assert "MLflow at `http://ml:***@127.0.0.1:1` can't be reached right now" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr  # the answer goes to chat: the password never


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("watch sales-agent", "MLflow at `http://ml:***@127.0.0.1:1` can't be reached right now"),
        # the decision is saved before its links are checked: the reply says so first
        ("decide ship it exp:sales-agent",
         "Decision #1 is saved, but its MLflow links weren't checked: MLflow at `http://ml:***@127.0.0.1:1` can't be reached"),
        ("run sales-agent epochs=1", "It did not start: MLflow at `http://ml:***@127.0.0.1:1` can't be reached right now"),
    ],
)
def test_every_job_says_mlflow_cannot_be_reached_not_an_error_id(tmp_path, command, said):
    """watch and a decision's link check answered "The job … failed" with an error id (exit 2); a launch's
    card said "It did not start: MlflowException (error id …)" and exited 0."""
    result = _labmate(tmp_path, "say", "--json", command, MLFLOW_TRACKING_URI="http://ml:s3cr3t@127.0.0.1:1",
                      MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")  # the terminal's own bounds are tested above
    assert result.returncode == 1, result.stdout + result.stderr
    assert said in result.stdout and "Error id" not in result.stdout, result.stdout
    assert "s3cr3t" not in result.stdout + result.stderr + (tmp_path / "home" / "labmate.log").read_text()


def test_say_that_stops_waiting_for_a_job_says_so_and_exits_at_once(tmp_path):
    """The job is still retrying MLflow (seven retries, as the user asked) when LABMATE_JOB_TIMEOUT
    ends the wait: a message with an error id, exit 2, and the process ends without waiting for it."""
    started = time.monotonic()
    result = _labmate(tmp_path, "say", "--json", "best sales-agent", MLFLOW_TRACKING_URI="http://127.0.0.1:1",
                      MLFLOW_HTTP_REQUEST_MAX_RETRIES="7", LABMATE_JOB_TIMEOUT="2")
    assert time.monotonic() - started < 20
    assert result.returncode == 2, result.stdout + result.stderr
    text = json.dumps(json.loads(result.stdout)[-1])
    assert "The answer didn't come within 2 s (LABMATE_JOB_TIMEOUT), so labmate stopped waiting for it." in text, text
    error_id = re.search(r"Error id `(E-[0-9a-f]+)`", text).group(1)
    assert error_id in (tmp_path / "home" / "labmate.log").read_text()


def test_the_settings_know_the_grammars_verbs():
    from bot.grammar import VERBS
    from labmate.settings import VERB_NAMES

    assert VERB_NAMES == tuple(verb.name for verb in VERBS)


def test_the_shell_leaves_without_an_answer_past_the_timeout_and_masks_the_mlflow_uri(tmp_path):
    """Leaving waits LABMATE_JOB_TIMEOUT for answers still being worked on, says it gave up, and
    exits then (not when the job, still retrying MLflow, ends); the banner shows no password."""
    started = time.monotonic()
    result = subprocess.run(
        [LABMATE, "shell"], input="best sales-agent\n", cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=_env(tmp_path, MLFLOW_TRACKING_URI="http://ml:s3cr3t@127.0.0.1:1", MLFLOW_HTTP_REQUEST_MAX_RETRIES="7",
                 LABMATE_JOB_TIMEOUT="2"),
    )
    assert time.monotonic() - started < 20
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "Leaving without the answers that didn't come within 2 s (LABMATE_JOB_TIMEOUT)." in text, text
    assert "s3cr3t" not in result.stdout + result.stderr and "ml:***@127.0.0.1:1" in text


def test_doctor_in_a_narrow_terminal_shows_each_value_whole_on_its_line(tmp_path):
    """At 80 columns the table left the value column 12 characters: `sqlite:////t` / `mp/r4/home/l` / …"""
    (tmp_path / "labmate.toml").touch()
    result = _labmate(tmp_path, "doctor", "--no-check", COLUMNS="80")
    home = tmp_path / "home"
    assert f"database_url = sqlite:///{home}/labmate.db  (default)" in result.stdout, result.stdout
    assert f"home = {home}  (environment (LABMATE_HOME))" in result.stdout, result.stdout
    wide = _labmate(tmp_path, "doctor", "--no-check", COLUMNS="250").stdout
    assert wide.splitlines()[1].split() == ["setting", "value", "from"]


@pytest.mark.parametrize(("args", "expected"), [
    (["worker", "--loglevel", "BOGUS"], "Invalid value for '--loglevel': 'BOGUS' is not a log level; use one of DEBUG"),
    (["beat", "--loglevel", "loud"], "Invalid value for '--loglevel': 'loud' is not a log level"),
    (["serve", "--port", "99999"], "Invalid value for '--port'"),  # uWSGI served on another port, and said 99999
    (["serve", "--workers", "0"], "Invalid value for '--workers'"),  # uWSGI ran with no workers: never healthy
    (["health", "bot", "--port", "0"], "Invalid value for '--port'"),
])
def test_impossible_process_options_are_usage_errors_not_tracebacks(tmp_path, args, expected):
    result = _labmate(tmp_path, *args, LABMATE_BROKER_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 1 and expected in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_credits_an_empty_variable_to_nothing(tmp_path):
    """`LABMATE_HOME=` counts as unset: the home came from labmate.toml, and doctor said the environment."""
    (tmp_path / "labmate.toml").write_text(f'home = "{tmp_path / "from-toml"}"\n')
    result = _labmate(tmp_path, "doctor", "--no-check", COLUMNS="250", LABMATE_HOME="")
    [home] = [line for line in result.stdout.splitlines() if line.startswith("home ")]
    assert home.split() == ["home", str(tmp_path / "from-toml"), "labmate.toml"]


def test_doctor_with_a_shared_broker_and_no_bot_token_fails_the_slack_check(tmp_path):
    """The workers post every Slack answer: without the token they dropped each one, and doctor said "skipped"."""
    result = _labmate(tmp_path, "doctor", COLUMNS="250", LABMATE_BROKER_URL="redis://127.0.0.1:6379/0")
    [slack] = [line for line in result.stdout.splitlines() if line.split(" ", 1)[-1].lstrip().startswith("slack:")]
    assert slack.startswith("FAILED") and "no SLACK_BOT_TOKEN: with a shared broker the workers post" in slack, slack


def test_doctor_fails_a_project_whose_mlproject_is_not_where_labmate_toml_says(tmp_path):
    """`[projects.ghost] uri = "nowhere"` passed every check; only `run ghost` said there was no MLproject."""
    project = tmp_path / "tiny"
    project.mkdir()
    (project / "MLproject").write_text("name: tiny\nentry_points:\n  main:\n    command: python train.py\n")
    (tmp_path / "labmate.toml").write_text(
        f'[projects.tiny]\nuri = "{project}"\nexperiment = "tiny"\n'
        '[projects.ghost]\nuri = "nowhere"\nexperiment = "ghost"\n'
        f'[projects.typo]\nuri = "{project}"\nentry_points = ["trian"]\nexperiment = "tiny"\n'
    )
    result = _labmate(tmp_path, "doctor", COLUMNS="250")
    [line] = [x for x in result.stdout.splitlines() if x.split(" ", 1)[-1].lstrip().startswith("projects:")]
    assert line.startswith("FAILED  projects: ghost: There is no MLproject file in ") and "nowhere" in line, line
    assert "typo: its MLproject has no entry point trian" in line and "tiny:" not in line, line
    assert result.returncode == 1


def test_labmate_config_is_doctor(tmp_path):
    """`labmate config` is what people try first for the settings in effect; it said "No such command"."""
    shown = _labmate(tmp_path, "config", "--no-check")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == _labmate(tmp_path, "doctor", "--no-check").stdout


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LABMATE_DATABASE_URL", "postgresql://u:pw@h:notaport/db",
         "database_url 'postgresql://u:***@h:notaport/db' has a port that isn't a number"),
        ("LABMATE_HOME", "~nosuchuser0/x", "home '~nosuchuser0/x': there is no such user's home to expand"),
        ("LABMATE_HOME", "/tmp/q?mode=ro", "home '/tmp/q?mode=ro' contains ?, # or %"),
        ("LABMATE_HOME", "/tmp/pct%41dir", "home '/tmp/pct%41dir' contains ?, # or %"),
    ],
)
def test_a_database_url_or_home_labmate_cannot_use_is_one_line_not_a_traceback(tmp_path, variable, value, expected):
    """A port that isn't a number crashed `doctor` and `db upgrade` with a traceback; `?` in the home put
    the knowledge base outside it (`sqlite:////tmp/q?mode=ro/labmate.db` is the file /tmp/q)."""
    for command in (["doctor"], ["db", "upgrade"], ["say", "help"]):
        result = _labmate(tmp_path, *command, **{variable: value})
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert result.stderr.startswith(f"labmate: environment variable {variable}: {expected}"), result.stderr
        assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("option", ["--channel", "--user"])
def test_a_user_or_channel_longer_than_an_id_is_a_usage_error(tmp_path, option):
    """On PostgreSQL a 200-character --channel failed the audit insert: an internal error, and no row."""
    result = _labmate(tmp_path, "say", "decisions", option, "c" * 200)
    assert result.returncode == 1 and f"{option} takes one word of at most 64 printable characters" in result.stderr
