"""`labmate health <service>` (container health checks) and `labmate doctor` (settings in effect,
where each came from, and a one-line verdict per configured service)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any

import typer


class Service(StrEnum):
    bot = "bot"
    worker = "worker"
    beat = "beat"
    mlflow = "mlflow"


def register(app: typer.Typer) -> None:
    app.command("health")(health)
    app.command("doctor")(doctor)
    app.command("config", hidden=True)(doctor)  # what people try first for "the settings in effect"


def health(
    service: Service | None = typer.Argument(
        None, help="Which process of this container to check; without it, the one the container runs (its first process).",
        show_default=False,
    ),
    port: int | None = typer.Option(
        None, min=1, max=65535, help="The bot's or the MLflow server's port: 3000 for bot and 5000 for mlflow unless given.", show_default=False
    ),
    timeout: float = typer.Option(3.0, help="Seconds to wait for the answer."),
    pid: int = typer.Option(1, hidden=True, help="The process whose command names the service (a container's is 1)."),
) -> None:
    """Exit 0 when this container's process answers: the bot's /healthz, the MLflow server's /health,
    or a Celery ping to this host's worker or beat. One line either way."""
    from labmate import checks

    if service is None:
        found = running_service(pid)
        if found is None:
            typer.echo("can't tell which labmate service this container runs: name it, e.g. `labmate health worker`",
                       err=True)
            raise typer.Exit(1)
        service, port = found[0], port or found[1]
    if service is Service.bot:
        verdict = checks.http_get("bot", f"http://127.0.0.1:{port or 3000}/healthz", timeout=timeout)
    elif service is Service.mlflow:
        verdict = checks.http_get("mlflow", f"http://127.0.0.1:{port or 5000}/health", timeout=timeout)
    elif service is Service.worker:
        verdict = checks.celery_node("worker", checks.worker_nodename(), timeout=timeout)
    else:
        verdict = checks.celery_node("beat", checks.beat_nodename(), timeout=timeout)
    typer.echo(verdict.line(), err=verdict.failed)
    raise typer.Exit(1 if verdict.failed else 0)


def running_service(pid: int) -> tuple[Service, int | None] | None:
    """The service a process runs, from its command line: the image's one HEALTHCHECK then fits every
    container made from it (`labmate worker`, `labmate beat`, `mlflow server`, `labmate serve`, which
    becomes uWSGI and keeps its port in LABMATE_SERVE_PORT)."""
    from pathlib import Path

    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    words = [Path(word).name if i < 3 else word for i, word in enumerate(argv)]

    def option(name: str) -> int | None:
        for i, word in enumerate(argv):
            value = word.removeprefix(f"{name}=") if word.startswith(f"{name}=") else None
            if word == name and i + 1 < len(argv):
                value = argv[i + 1]
            if value is not None and value.rpartition(":")[2].isdigit():
                return int(value.rpartition(":")[2])
        return None

    if "mlflow" in words[:3] and "server" in argv:
        return Service.mlflow, option("--port")
    if any("uwsgi" in word.lower() for word in words[:3]):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            environ = []
        port = next((v.partition("=")[2] for v in environ if v.startswith("LABMATE_SERVE_PORT=")), "")
        return Service.bot, int(port) if port.isdigit() else option("--http")
    if "labmate" in words[:3]:
        after = argv[words.index("labmate") + 1:]
        command = next((word for word in after if not word.startswith("-")), "")
        if command == "serve":
            return Service.bot, option("--port")
        if command in ("worker", "beat"):
            return Service(command), None
    return None


def doctor(
    check: bool = typer.Option(True, "--check/--no-check", help="Also check each configured service."),
) -> None:
    """Show the settings in effect and where each comes from (default, labmate.toml, environment),
    secrets masked; then check the home, database, broker, MLflow, the launchable projects and Slack. Exit 1 if a check failed."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from labmate import checks
    from labmate.settings import _config_path

    rows = settings_in_effect()  # first: a configuration that can't be read stops here, in one line
    console = Console()
    path = _config_path().resolve()
    named = "LABMATE_CONFIG" if "LABMATE_CONFIG" in os.environ else "the working directory's labmate.toml"
    found = "" if path.is_file() else ": not found, so only the environment and the defaults apply"
    console.print(Text(f"configuration file ({named}): {path}{found}"), soft_wrap=True)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    if sum(widths) + 2 * 2 <= console.width:
        table = Table(box=None, pad_edge=False)
        table.add_column("setting", no_wrap=True)
        table.add_column("value", overflow="fold")
        table.add_column("from", no_wrap=True)  # the file is named in full on the first line
        for name, value, source in rows:
            table.add_row(name, Text(value), Text(source))  # values are data, not rich markup
        console.print(table)
    else:  # too narrow for the table: it cut URLs and paths into 12-character pieces
        for name, value, source in rows:
            console.print(Text.assemble(name, " = ", value, (f"  ({source})", "dim")), soft_wrap=True, highlight=False)
    if not check:
        return
    console.print()
    verdicts = [checks.home(), checks.database(), checks.broker(), checks.mlflow(), checks.projects(), checks.slack()]
    for verdict in verdicts:
        style = "red" if verdict.failed else ("dim" if verdict.status == checks.SKIPPED else "green")
        status, rest = verdict.line().split(" ", 1)
        console.print(Text.assemble((status, style), " ", rest), soft_wrap=True, highlight=False)
    raise typer.Exit(1 if any(v.failed for v in verdicts) else 0)


def settings_in_effect() -> list[tuple[str, str, str]]:
    """(name, value as shown, source) for every setting, a table's settings one per row under their
    dotted name (`projects.sales-agent.uri`); secrets show only whether they are set, and a password in
    any URL (a database, a git project) is masked."""
    from msgspec import Struct, to_builtins

    from labmate.settings import SecretStr, Settings, _config_path, env_names, from_environment, get_settings

    settings = get_settings()
    path = _config_path()
    toml = _toml_table(path)
    rows: list[tuple[str, str, str]] = []
    envs = env_names()
    read = from_environment(os.environ)  # what the settings took from it (`LABMATE_HOME=` is unset, not a source)
    for name in Settings.__struct_fields__:
        env = envs[name] if name in read else None
        value: Any = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "set (hidden)" if value.get_secret_value() else "empty"
        elif name == "result_backend" and not value:
            shown = "in-process (embedded broker)" if settings.embedded_broker else "the broker's Redis"
        elif isinstance(value, (Struct, dict)):
            for dotted, leaf, written in _leaves(name, to_builtins(value), toml.get(name)):
                rows.append((dotted, _shown(leaf), path.name if written else "default"))
            continue
        else:
            shown = _shown(value)
        source = f"environment ({env})" if env else (path.name if name in toml else "default")
        rows.append((name, shown, source))
    return rows


def _leaves(name: str, value: Any, written: Any) -> list[tuple[str, Any, bool]]:
    """A table's values one per dotted name, each with whether labmate.toml wrote it."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):  # [[digest.channels]]
        entries = written if isinstance(written, list) else []
        return [leaf for i, item in enumerate(value)
                for leaf in _leaves(f"{name} (entry {i + 1})", item, entries[i] if i < len(entries) else None)]
    if not isinstance(value, dict) or not value:
        return [(name, value, written is not None)]
    inner = written if isinstance(written, dict) else {}
    return [leaf for key, item in value.items() for leaf in _leaves(f"{name}.{key}", item, inner.get(key))]


def _shown(value: Any) -> str:
    from labmate.settings import mask_url

    if value is None or value in ("", {}, []):
        return "not set"
    if isinstance(value, list):
        return ", ".join(mask_url(str(item)) for item in value)
    return mask_url(str(value))


def _toml_table(path: Any) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


