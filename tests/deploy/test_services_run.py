"""Each compose service's command, run here with the same flags and environment (only host names,
ports and paths swapped for local ones), and each service's health check command against it.

No Docker engine on this machine, so this is the nearest thing to `docker compose up`: the MLflow
server with compose's flags answering `Host: mlflow:5000`, a worker and a beat on Redis answering
the health checks compose runs in their containers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.conftest import POSTGRES_URL, service_or_skip
from tests.deploy.compose import DOCKERFILE, ENV, ROOT, rendered
from tests.ports import free_port

COMPOSE = rendered()
BIN = Path(sys.executable).parent
# A Redis database apart from the one the other tests' workers use, and a key prefix of this run's own
# (stack_env), so two runs of the suite at once don't answer each other's health checks.
SPARE_REDIS = os.environ.get("LABMATE_TEST_REDIS_SPARE_URL", "redis://127.0.0.1:6379/10")

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def _localised(value: str, swaps: dict[str, str]) -> str:
    for old, new in swaps.items():
        value = value.replace(old, new)
    return value


def _health(service: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The service's compose health check command, as compose runs it (`CMD labmate health …`)."""
    test = COMPOSE["services"][service]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "labmate"]
    argv = [str(BIN / "labmate"), *test[2:], *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def _image_health(proc: subprocess.Popen, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK, which names no service: it checks what the container's first
    process runs; here that process is `proc` (`--pid`)."""
    test = json.loads(re.search(r"^\s*CMD (\[.*\])$", DOCKERFILE.read_text().split("HEALTHCHECK", 1)[1], re.M).group(1))
    assert test == ["labmate", "health"], test
    return subprocess.run([str(BIN / "labmate"), *test[1:], "--pid", str(proc.pid), "--timeout", "2"],
                          env=env, capture_output=True, text=True, timeout=60)


def _budget(service: str) -> float:
    """How long compose waits for the service to be healthy before calling it unhealthy."""
    check = COMPOSE["services"][service]["healthcheck"]

    def seconds(value: object) -> float:  # `docker compose config` gives nanoseconds or "30s"
        if isinstance(value, (int, float)):
            return value / 1e9
        return float(str(value).removesuffix("s"))

    return seconds(check.get("start_period", 0)) + seconds(check["interval"]) * int(check["retries"])


def _wait_healthy(service: str, *args: str, env: dict[str, str], proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    result = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{service} exited with {proc.returncode}"
        result = _health(service, *args, "--timeout", "2", env=env)
        if result.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"{service} never became healthy: {result and (result.stdout + result.stderr)}")


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """Fresh `labmate` and `mlflow` databases, as deploy/postgres-init.sql makes them."""
    base = service_or_skip("PostgreSQL", POSTGRES_URL)
    suffix = uuid.uuid4().hex[:8]
    names = {"labmate": f"compose_kb_{suffix}", "mlflow": f"compose_mlflow_{suffix}"}
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"CREATE DATABASE {name}"))
    server = base.rsplit("/", 1)[0]
    yield {role: f"{server}/{name}" for role, name in names.items()}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def test_the_postgres_health_check_passes_only_once_the_mlflow_database_exists(databases):
    """compose's check, run against the local server (its user and the test's database names swapped in)."""
    test = COMPOSE["services"]["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    server = make_url(databases["mlflow"])

    def check(database: str) -> int:
        argv = [database if arg == "mlflow" else arg for arg in test[1:]]
        argv[argv.index("-U") + 1] = server.username or "postgres"
        argv[argv.index("-h") + 1] = server.host or "127.0.0.1"
        return subprocess.run([*argv, "-p", str(server.port or 5432)], capture_output=True, timeout=30).returncode

    assert check(str(server.database)) == 0
    assert check(f"missing_{uuid.uuid4().hex[:8]}") != 0  # the database the init script makes isn't there yet


@pytest.fixture(scope="module")
def mlflow_process(databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, int]]:
    """`mlflow server` with compose's flags: the PostgreSQL backend, proxied artifacts, and the
    allowed hosts and CORS origins exactly as written in docker-compose.yml."""
    service = COMPOSE["services"]["mlflow"]
    port = free_port()
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    mlflow_db = databases["mlflow"].replace("postgresql://", "postgresql+psycopg://")
    argv = [str(BIN / service["entrypoint"][0])]
    for arg in service["command"]:
        if arg.startswith("--backend-store-uri="):
            arg = f"--backend-store-uri={mlflow_db}"
        elif arg.startswith("--artifacts-destination="):
            arg = f"--artifacts-destination={artifacts}"
        elif arg.startswith("--host="):
            arg = "--host=127.0.0.1"
        elif arg.startswith("--port="):
            arg = f"--port={port}"
        argv.append(arg)
    argv.append("--workers=1")  # one process is enough here; compose keeps MLflow's default
    env = {**os.environ, **service.get("environment", {})}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait_healthy("mlflow", "--port", str(port), env=env, proc=proc, seconds=_budget("mlflow"))
        yield proc, port
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def mlflow_server(mlflow_process: tuple[subprocess.Popen, int]) -> int:
    return mlflow_process[1]


def _get(port: int, path: str, host: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_images_health_check_finds_the_mlflow_server_and_its_port(mlflow_process):
    proc, port = mlflow_process
    answer = _image_health(proc, dict(os.environ))
    assert answer.returncode == 0 and answer.stdout.startswith("ok      mlflow:"), answer
    assert f":{port}/health" in answer.stdout


def test_mlflow_server_answers_its_service_name(mlflow_server):
    api = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(mlflow_server, api, "mlflow:5000") == 200
    assert _get(mlflow_server, api, f"localhost:{mlflow_server}") == 200
    assert _get(mlflow_server, api, "evil.example:5000") == 403  # the check is on, not disabled


def _descendants(pid: int) -> list[str]:
    """The command lines of every process below `pid` (Linux's /proc; the image is Linux too)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            found.append((Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
        todo += children.get(child, [])
    return found


def test_mlflow_server_runs_without_its_job_runner(mlflow_process):
    """MLflow 3 starts a job runner and a huey consumer per job type (~230 MB each) unless told not to;
    labmate submits no MLflow jobs, so compose turns it off."""
    server, _ = mlflow_process
    time.sleep(2)  # the runner, when on, starts its consumers right after the server answers
    processes = _descendants(server.pid)
    assert processes, "the server runs its web workers as child processes"
    assert not [p for p in processes if "huey" in p or "job_runner" in p], processes


@pytest.fixture(scope="module")
def stack_env(databases: dict[str, str], mlflow_server: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The labmate services' compose environment, with the hosts swapped for local ones (the
    compose password stays in the URL: the local server trusts it, and doctor must mask it)."""
    local = make_url(databases["labmate"]).set(password=ENV["POSTGRES_PASSWORD"])
    swaps = {
        f"postgresql://labmate:{ENV['POSTGRES_PASSWORD']}@postgres:5432/labmate": local.render_as_string(hide_password=False),
        "redis://redis:6379/0": SPARE_REDIS,
        "redis://redis:6379/1": SPARE_REDIS,
        "http://mlflow:5000": f"http://127.0.0.1:{mlflow_server}",
        "/var/lib/labmate": str(tmp_path_factory.mktemp("labmate-home")),
    }
    service_or_skip("Redis", SPARE_REDIS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    for name, value in COMPOSE["services"]["worker"]["environment"].items():
        env[name] = _localised(str(value), swaps)
    env["LABMATE_BROKER_KEY_PREFIX"] = f"deploy-{uuid.uuid4().hex[:8]}:"
    return env


def _start(service: str, env: dict[str, str]) -> subprocess.Popen:
    command = COMPOSE["services"][service]["command"]
    return subprocess.Popen(
        [str(BIN / "labmate"), *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_worker_and_beat_start_together_and_answer_their_health_checks(stack_env):
    assert _health("worker", "--timeout", "1", env=stack_env).returncode == 1  # nothing answers yet
    worker, beat = _start("worker", stack_env), _start("beat", stack_env)
    try:
        _wait_healthy("worker", env=stack_env, proc=worker, seconds=_budget("worker"))
        _wait_healthy("beat", env=stack_env, proc=beat, seconds=_budget("beat"))
        for proc, name in ((worker, "worker"), (beat, "beat")):
            answer = _image_health(proc, stack_env)
            assert answer.returncode == 0 and answer.stdout.startswith(f"ok      {name}:"), answer
        no_slack = {k: v for k, v in stack_env.items() if not k.startswith("SLACK_")}
        doctor = subprocess.run([str(BIN / "labmate"), "doctor"], env=no_slack, capture_output=True, text=True, timeout=60)
        lines = {line.split(":")[0].split()[-1]: line for line in doctor.stdout.splitlines() if ":" in line}
        assert lines["database"].startswith("ok"), doctor.stdout
        assert lines["broker"].startswith("ok"), doctor.stdout
        assert lines["mlflow"].startswith("ok"), doctor.stdout
        assert "localhost" not in lines["database"] and "127.0.0.1" in lines["database"], doctor.stdout
        assert ENV["POSTGRES_PASSWORD"] not in doctor.stdout + doctor.stderr  # the database password is masked
    finally:
        worker_log, beat_log = _stop(worker), _stop(beat)
    assert "Traceback" not in worker_log, worker_log
    assert "Traceback" not in beat_log, beat_log
    assert "preloaded MLflow and matplotlib for the pool" in worker_log  # the default; the fault labs turn it off


def test_the_bot_serves_with_compose_flags_and_answers_its_health_check(stack_env, tmp_path):
    """`serve --port 3000 --workers 2` as compose runs it (port swapped), Slack pointed at the fake
    Web API with its token (the real Slack can't be reached from here)."""
    import signal

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slack"))
    from fakeslack import FakeSlack
    from slackreq import BOT_TOKEN, SIGNING_SECRET

    command = list(COMPOSE["services"]["bot"]["command"])
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    with FakeSlack(token=BOT_TOKEN) as fake:
        env = {**stack_env, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "LABMATE_SLACK_API_URL": fake.api_url}
        bot = subprocess.Popen(
            [str(BIN / "labmate"), *command, "--host", "127.0.0.1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        try:
            _wait_healthy("bot", "--port", str(port), env=env, proc=bot, seconds=_budget("bot"))
            answer = _image_health(bot, env)  # `labmate serve` became uWSGI, which renamed itself
            assert answer.returncode == 0 and answer.stdout.startswith("ok      bot:"), answer
            assert f":{port}/healthz" in answer.stdout
        finally:
            if bot.poll() is None:
                bot.send_signal(signal.SIGTERM)
                try:
                    bot.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(bot.pid, signal.SIGKILL)
                    bot.communicate()
    refused = _health("bot", "--port", str(port), "--timeout", "1", env=env)
    assert refused.returncode == 1 and "did not answer" in refused.stderr  # the check can fail


def test_the_socket_mode_bot_serves_with_the_overrides_flags_and_answers_its_health_checks(stack_env):
    """deploy/socket-mode.yml's bot command (port swapped), Slack's side faked: the compose health
    check and the image's (which finds the port in the command line) answer once it is connected."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slack"))
    from fakeslack import FakeSlack
    from fakesocket import FakeSocketMode
    from slackreq import BOT_TOKEN

    socket_mode = rendered({"SLACK_APP_TOKEN": "xapp-compose-test"}, overrides=(ROOT / "deploy" / "socket-mode.yml",))
    command = list(socket_mode["services"]["bot"]["command"])
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    with FakeSlack(token=BOT_TOKEN, app_token="xapp-compose-test") as fake, FakeSocketMode() as slack:
        fake.socket_url = slack.url
        env = {**stack_env, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": "xapp-compose-test",
               "LABMATE_SLACK_API_URL": fake.api_url}
        bot = subprocess.Popen([str(BIN / "labmate"), *command, "--host", "127.0.0.1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_healthy("bot", "--port", str(port), env=env, proc=bot, seconds=_budget("bot"))
            assert slack.connected() == 1
            answer = _image_health(bot, env)
            assert answer.returncode == 0 and f":{port}/healthz answered 200" in answer.stdout, answer
        finally:
            out = _stop(bot)
    assert "Traceback" not in out, out


def test_the_demo_against_the_compose_mlflow_server_keeps_artifacts_on_the_server(mlflow_server, tmp_path):
    """`labmate demo` pointed at the stack's server: the experiment's artifacts go where the server was
    told (its proxied `mlflow-artifacts:` store), not to a path on the machine that ran the demo."""
    from mlflow import MlflowClient

    uri = f"http://127.0.0.1:{mlflow_server}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(tmp_path / "home"), MLFLOW_TRACKING_URI=uri)
    done = subprocess.run([str(BIN / "labmate"), "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name("sales-agent")
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    version = client.get_model_version_by_alias("sales-agent", "candidate")
    assert client.download_artifacts(version.run_id, "", str(tmp_path / "fetched"))  # through the server
