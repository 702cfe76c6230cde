"""docker-compose.yml as compose would render it: `docker compose config` where the client has the
compose plugin, else the YAML with compose's `${VAR:-default}` / `${VAR:?error}` interpolation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# What a .env would hold: the secrets compose requires (placeholders, never real ones).
ENV = {"SLACK_BOT_TOKEN": "xoxb-compose-test", "SLACK_SIGNING_SECRET": "compose-test-secret",
       "POSTGRES_PASSWORD": "composetestpassword"}
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if op in (":-", "-") and not current:
            return arg
        if op in (":?", "?") and not current:
            raise ValueError(f"{name}: {arg}")
        return current or ""

    return _VAR.sub(sub, value)


def compose_cli() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


def rendered(env: dict[str, str] | None = None, *, overrides: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file, and any override files after it (`docker compose -f docker-compose.yml -f …`)."""
    env = {**ENV, **(env or {})}
    if compose_cli():
        files = [arg for path in (COMPOSE_FILE, *overrides) for arg in ("-f", str(path))]
        out = subprocess.run(
            ["docker", "compose", *files, "config", "--format", "json"],
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out)
    merged = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)
    for path in overrides:
        merged = merge(merged, interpolate(yaml.load(path.read_text(), Loader=_ComposeLoader), env))
    return merged


class _Reset:
    """Compose's `!reset` tag: the key is removed from what the files before set."""


class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_constructor("!reset", lambda loader, node: _Reset())


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, as far as ours and the README's use it: mappings (services,
    environment) merge key by key, `!reset` removes, a service's volumes merge by their target path, and
    other lists (a command) are replaced. Compose appends some lists (ports, expose); this replaces
    them, so an override that adds to one of those needs the CLI's rendering."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            if isinstance(value, _Reset):
                out.pop(key, None)
            elif key == "volumes" and isinstance(value, list) and isinstance(base.get(key), list):
                by_target = {_target(v): v for v in base[key]} | {_target(v): v for v in value}
                out[key] = list(by_target.values())
            else:
                out[key] = merge(base.get(key), value)
        return out
    return override


def _target(volume: str | dict[str, Any]) -> str:
    """`source:target[:mode]` or the long syntax's `target`."""
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
