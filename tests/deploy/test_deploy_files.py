"""docker-compose.yml and the Dockerfile can't be run here (no Docker engine), so check what they say."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import typer.main
import yaml

from labmate.cli import app
from labmate.settings import settings_env_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


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
    return command


def test_compose_has_the_whole_stack():
    assert {"redis", "postgres", "mlflow", "bot", "worker", "beat"} <= set(COMPOSE["services"])


def test_labmate_services_run_real_subcommands():
    entry = shlex.split(re.search(r'ENTRYPOINT \["(\w+)"\]', DOCKERFILE).group(1))
    assert entry == ["labmate"]
    for name in ("bot", "worker", "beat"):
        command = _resolve(COMPOSE["services"][name]["command"])
        assert command.name == {"bot": "serve", "worker": "worker", "beat": "beat"}[name]


def test_dockerfile_default_command_is_serve():
    default = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1)
    assert _resolve(yaml.safe_load(default)).name == "serve"


def test_environment_names_match_the_settings_class():
    names = settings_env_names()
    for service in ("bot", "worker", "beat"):
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


def test_mlflow_server_command_is_real():
    from mlflow.cli import cli as mlflow_cli

    service = COMPOSE["services"]["mlflow"]
    assert service["entrypoint"] == ["mlflow"]
    server = mlflow_cli.get_command(click.Context(mlflow_cli), service["command"][0])
    assert server is not None
    server.make_context("mlflow server", service["command"][1:])


def test_one_beat_only():
    assert COMPOSE["services"]["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_dockerfile_copies_every_package():
    for package in ("labmate", "bot", "tasks", "models"):
        assert f"COPY {package} ./{package}" in DOCKERFILE
