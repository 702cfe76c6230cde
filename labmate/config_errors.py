"""One-line messages for configuration that can't be read: a TOML syntax error, or a value of the
wrong type in `labmate.toml` or the environment. Each names the file and line (or the variable)
and what was expected, instead of a traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def toml_syntax_message(path: Path, exc: Exception) -> str:
    """`labmate.toml:3:9: invalid TOML: Expected '=' after a key in a key/value pair`."""
    text = str(exc)
    found = _POSITION.search(text)
    where = f"{path}:{found.group(1)}:{found.group(2)}" if found else str(path)
    reason = _POSITION.sub("", text) if found else text
    return f"{where}: invalid TOML: {reason}"


def _dotted(raw: str) -> list[str]:
    return [part.strip().strip("\"'") for part in raw.split(".")]


def toml_line(path: Path, loc: tuple[Any, ...]) -> int | None:
    """The line of `path` where the value at pydantic location `loc` is written (tables and dotted keys)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    wanted = [str(part) for part in loc if not isinstance(part, int)]
    table: list[str] = []
    for number, line in enumerate(lines, start=1):
        header = _TABLE.match(line)
        if header:
            table = _dotted(header.group(1))
            if table == wanted:
                return number
            continue
        key = _KEY.match(line)
        if key:
            full = table + _dotted(key.group(1))
            if full == wanted[: len(full)] and len(full) >= min(len(wanted), len(table) + 1):
                return number
    return None


def _expected(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    message = re.sub(r"^Input should be ", "expected ", message)
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and not isinstance(value, dict):
        message += f", got {value!r}"
    return message


def validation_message(exc: Any, path: Path) -> str:
    """The first wrong value: `labmate.toml:2: access.admins: expected a valid list, got 'U1'`."""
    from labmate.settings import Settings

    error = exc.errors()[0]
    loc = tuple(error.get("loc", ()))
    env_names: list[str] = []
    for name, field in Settings.model_fields.items():
        choices = [str(c) for c in getattr(field.validation_alias, "choices", [])]
        if loc and (str(loc[0]) == name or str(loc[0]) in choices):
            loc = (name, *loc[1:])  # pydantic reports the alias; the TOML key is the field's name
            env_names = [c for c in choices if c.isupper()]
            break
    for name in env_names:
        if name in os.environ:
            return f"environment variable {name}: {_expected(error)}"
    dotted = ".".join(str(part) for part in loc) or "settings"
    line = toml_line(path, loc) if path.is_file() else None
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {dotted}: {_expected(error)}"
