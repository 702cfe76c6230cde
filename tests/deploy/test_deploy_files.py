"""docker-compose.yml and the Dockerfile can't be run here (no Docker engine), so check what they
say against the real CLIs; tests/deploy/test_services_run.py runs each service's command."""

from __future__ import annotations

import re
import shlex
import tomllib

import click
import pytest
import typer.main
import yaml

from labmate.cli import app
from labmate.settings import settings_env_names
from tests.deploy.compose import COMPOSE_FILE, DOCKERFILE, ROOT, rendered

COMPOSE = rendered()
DOCKER = DOCKERFILE.read_text()
LABMATE_SERVICES = {"bot": "serve", "worker": "worker", "launch-worker": "worker", "beat": "beat"}
# Each service built from the image, and the `labmate health` check that fits it.
HEALTH = {"mlflow": "mlflow", "bot": "bot", "worker": "worker", "launch-worker": "worker", "beat": "beat"}


def _cli():
    return typer.main.get_command(app)


def _resolve(argv: list[str]):
    """Walk argv through the real labmate CLI; parse the options too, as the CLI would."""
    command = _cli()
    args = list(argv)
    while hasattr(command, "get_command") and args and not args[0].startswith("-"):
        sub = command.get_command(command.context_class(command), args[0])
        assert sub is not None, f"`labmate {' '.join(argv)}`: no subcommand {args[0]!r}"
        command, args = sub, args[1:]
    ctx = command.make_context("labmate", args, resilient_parsing=False)
    assert ctx is not None
    return command, ctx


def test_compose_has_the_whole_stack():
    assert {"redis", "postgres", "mlflow", "bot", "worker", "beat"} <= set(COMPOSE["services"])


@pytest.mark.parametrize("secret", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "POSTGRES_PASSWORD"])
def test_compose_requires_the_secrets(secret):
    from tests.deploy.compose import ENV, interpolate

    with pytest.raises(ValueError, match=secret):
        interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), {k: v for k, v in ENV.items() if k != secret})


def test_no_database_password_is_written_in_the_compose_file():
    urls = re.findall(r"postgresql(?:\+\w+)?://(?:\$\{[^}]*\}|[^\s\"'$])+", COMPOSE_FILE.read_text())
    assert len(urls) == 2, urls  # the knowledge base's and MLflow's backend store
    for url in urls:
        assert re.match(r"postgresql(?:\+\w+)?://labmate:\$\{POSTGRES_PASSWORD:\?[^}]*\}@postgres:5432/", url), url
    assert COMPOSE["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "composetestpassword"


def test_labmate_services_run_real_subcommands():
    entry = shlex.split(re.search(r'ENTRYPOINT \["(\w+)"\]', DOCKER).group(1))
    assert entry == ["labmate"]
    for name, subcommand in LABMATE_SERVICES.items():
        command, _ = _resolve(COMPOSE["services"][name]["command"])
        assert command.name == subcommand


def test_the_images_health_check_names_no_service_so_it_fits_every_container():
    """`docker run labmate:latest worker` (docs/launch.md) inherits the image's check: one probing the
    bot's port would call every worker unhealthy (test_services_run.py runs it against each process)."""
    check = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", DOCKER, re.M | re.S).group(1)
    command, ctx = _resolve(yaml.safe_load(check)[1:])
    assert command.name == "health" and ctx.params["service"] is None


def test_the_image_has_git_for_projects_given_by_a_git_uri():
    install = re.search(r"^RUN apt-get .*?$", DOCKER, re.M).group(0)
    assert "install" in install and " git" in install


def test_dockerfile_default_command_is_serve():
    default = re.search(r"^CMD (\[.*\])$", DOCKER, re.M).group(1)
    assert _resolve(yaml.safe_load(default))[0].name == "serve"


def test_environment_names_match_the_settings_class():
    names = settings_env_names()
    for service in LABMATE_SERVICES:
        env = COMPOSE["services"][service]["environment"]
        unknown = set(env) - names
        assert not unknown, f"{service} sets variables the settings class doesn't read: {unknown}"
        assert {"LABMATE_DATABASE_URL", "LABMATE_BROKER_URL", "MLFLOW_TRACKING_URI"} <= set(env)
        assert env["LABMATE_BROKER_URL"].startswith("redis://redis:")
        assert env["LABMATE_DATABASE_URL"].startswith("postgresql://")


def test_services_point_at_hosts_the_compose_file_defines():
    services = set(COMPOSE["services"])
    env = COMPOSE["services"]["bot"]["environment"]
    for value in env.values():
        match = re.match(r"\w[\w+]*://(?:[^@/]*@)?([\w-]+)[:/]", str(value))
        if match and match.group(1) not in ("localhost",):
            assert match.group(1) in services, f"{value} names a host that isn't a service"


def _mlflow_options(compose: dict | None = None) -> dict[str, str]:
    from mlflow.cli import cli as mlflow_cli

    service = (compose or COMPOSE)["services"]["mlflow"]
    assert service["entrypoint"] == ["mlflow"]
    server = mlflow_cli.get_command(click.Context(mlflow_cli), service["command"][0])
    assert server is not None
    ctx = server.make_context("mlflow server", list(service["command"][1:]))
    return ctx.params


def test_mlflow_server_accepts_the_service_name_as_host():
    """Bot and worker send `Host: mlflow:5000`; MLflow's DNS-rebinding check refuses any host it
    wasn't told about, so the service name must be allowed (and the published localhost port)."""
    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    assert not is_allowed_host_header(get_default_allowed_hosts(), "mlflow:5000")  # why the flag is needed
    params = _mlflow_options()
    allowed = [h.strip() for h in params["allowed_hosts"].split(",")]
    tracking = COMPOSE["services"]["worker"]["environment"]["MLFLOW_TRACKING_URI"]
    host = tracking.split("://", 1)[1].rstrip("/")
    assert host == "mlflow:5000"
    assert is_allowed_host_header(allowed, host)
    assert is_allowed_host_header(allowed, "localhost:5000")
    assert not is_allowed_host_header(allowed, "evil.example:5000")
    # the UI address a team sets in .env is both the bot's link target and an allowed origin
    custom = rendered({"LABMATE_MLFLOW_UI_URL": "https://mlflow.acme.example"})
    assert custom["services"]["bot"]["environment"]["LABMATE_MLFLOW_UI_URL"] == "https://mlflow.acme.example"
    assert "https://mlflow.acme.example" in _mlflow_options(custom)["cors_allowed_origins"].split(",")


def test_every_service_has_a_health_check_that_fits_it():
    for name, service in COMPOSE["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no health check"
        if name in HEALTH:
            assert test[0] == "CMD" and test[1] == "labmate", test
            command, ctx = _resolve(test[2:])
            assert command.name == "health" and ctx.params["service"] == HEALTH[name], f"{name} checks {test}"
    assert set(HEALTH) | {"redis", "postgres"} == set(COMPOSE["services"])
    # A query over TCP in the database the init script creates: on a fresh volume the image's first,
    # socket-only server runs the init scripts (test_services_run.py runs this check).
    postgres = COMPOSE["services"]["postgres"]["healthcheck"]["test"]
    assert postgres[1] == "psql" and postgres[postgres.index("-h") + 1] == "127.0.0.1", postgres
    assert postgres[postgres.index("-d") + 1] == "mlflow", postgres


def test_restart_policies_and_start_order_on_health():
    services = COMPOSE["services"]
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition["condition"] == "service_healthy", f"{name} starts before {dependency} is healthy"
            assert "healthcheck" in services[dependency]
    assert set(services["worker"]["depends_on"]) == {"redis", "postgres", "mlflow"}
    assert {"redis", "postgres"} <= set(services["bot"]["depends_on"])
    assert {"redis", "postgres"} <= set(services["beat"]["depends_on"])


SOCKET_MODE = ROOT / "deploy" / "socket-mode.yml"


def test_the_socket_mode_override_serves_over_the_socket_with_the_same_health_check():
    """`docker compose -f docker-compose.yml -f deploy/socket-mode.yml`: only the bot changes; its
    command is Socket Mode's, it needs the app token, publishes no port, and the health check it
    keeps probes the port the command serves /healthz on (test_services_run.py runs both)."""
    socket_mode = rendered({"SLACK_APP_TOKEN": "xapp-compose-test"}, overrides=(SOCKET_MODE,))
    bot = socket_mode["services"]["bot"]
    command, ctx = _resolve(bot["command"])
    assert command.name == "serve" and ctx.params["socket_mode"] is True
    assert not bot.get("ports")
    assert bot["environment"]["SLACK_APP_TOKEN"] == "xapp-compose-test"
    assert bot["environment"]["SLACK_BOT_TOKEN"] == COMPOSE["services"]["bot"]["environment"]["SLACK_BOT_TOKEN"]
    check = bot["healthcheck"]["test"]
    assert check == COMPOSE["services"]["bot"]["healthcheck"]["test"]
    assert check[check.index("--port") + 1] == str(ctx.params["port"])
    others = {name: service for name, service in socket_mode["services"].items() if name != "bot"}
    assert others == {name: service for name, service in COMPOSE["services"].items() if name != "bot"}
    from tests.deploy.compose import ENV, _ComposeLoader, interpolate

    with pytest.raises(ValueError, match="SLACK_APP_TOKEN"):  # compose's own check, as for the other secrets
        interpolate(yaml.load(SOCKET_MODE.read_text(), Loader=_ComposeLoader), ENV)


def test_one_beat_only():
    assert COMPOSE["services"]["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_beats_schedule_file_is_on_a_volume():
    """`labmate beat` keeps its schedule in LABMATE_HOME; in the container's own layer it would be
    lost with each new container, and with it when each periodic job last ran."""
    beat = COMPOSE["services"]["beat"]
    home = beat["environment"]["LABMATE_HOME"]
    mounts: dict[str, str] = {}  # target -> volume, from compose's short form or the long form it renders
    for volume in beat.get("volumes", []):
        source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        mounts[target] = source
    assert mounts.get(home) in COMPOSE["volumes"], beat.get("volumes")


def test_dockerfile_copies_every_package():
    for package in ("labmate", "bot", "tasks", "models"):
        assert f"COPY {package} ./{package}" in DOCKER


def test_the_image_installs_what_pyproject_declares_plus_the_server():
    """The image runs `mlflow server`, so it installs the project with its `server` extra, and
    nothing beside it: the same requirements `pip install` would take from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installs = re.findall(r"pip install ([^\n\\&]+)", DOCKER)
    assert [shlex.split(i) for i in installs] == [[".[server]"]]
    assert any(req.startswith("mlflow>=") for req in project["optional-dependencies"]["server"])
    assert any(req.startswith("mlflow-skinny") for req in project["dependencies"])


def test_the_readmes_override_gives_every_labmate_service_its_config_and_keeps_their_volumes(tmp_path) -> None:
    """README: the stack has no labmate.toml unless an override mounts one where the image's working
    directory makes labmate read it."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"docker-compose\.override\.yml.*?```yaml\n(.*?)```", readme, re.S)
    assert block, "the README shows the override"
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(block.group(1))
    workdir = re.search(r"^WORKDIR (\S+)", DOCKER, re.M)
    assert workdir
    merged = rendered(overrides=(override,))
    for name in LABMATE_SERVICES:
        volumes = merged["services"][name].get("volumes", [])
        targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in volumes]
        assert f"{workdir.group(1)}/labmate.toml" in targets, name
        before = COMPOSE["services"][name].get("volumes", [])
        assert len(volumes) == len(before) + 1, f"{name} lost a volume: {volumes}"


def test_a_stopped_launch_worker_may_finish_the_run_it_holds() -> None:
    """compose's default 10 s before SIGKILL would fail every run in flight on a redeploy."""
    grace = str(COMPOSE["services"]["launch-worker"].get("stop_grace_period", "10s"))
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", grace)  # `docker compose config` writes 30m0s
    assert parts and grace, grace
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    assert hours * 3600 + minutes * 60 + seconds >= 600, grace
