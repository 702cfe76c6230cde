"""One-line messages for configuration that can't be read: a TOML syntax error, or a value of the
wrong type in `labmate.toml` or the environment. Each names the file and line (or the variable)
and what was expected, instead of a traceback."""

from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import Any

from labmate.settings import HH_MM  # settings imports this module only when a file is wrong

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def toml_syntax_message(path: Path, exc: Exception) -> str:
    """`labmate.toml:3:9: invalid TOML: Expected '=' after a key in a key/value pair`."""
    text = str(exc)
    found = _POSITION.search(text)
    where = f"{path}:{found.group(1)}:{found.group(2)}" if found else str(path)
    reason = _POSITION.sub("", text) if found else text
    if not found and text.endswith("(at end of document)"):  # an unclosed array or table: its last line
        reason = text.removesuffix("(at end of document)").rstrip()
        try:
            where = f"{path}:{max(1, len(path.read_bytes().splitlines()))}"
        except OSError:
            pass
        reason += " (the file ends before it is closed)"
    return f"{where}: invalid TOML: {reason}"


def _dotted(raw: str) -> list[str]:
    return [part.strip().strip("\"'") for part in raw.split(".")]


def toml_line(path: Path, loc: tuple[Any, ...]) -> int | None:
    """The line of `path` where the value at location `loc` is written (tables, dotted keys, and the
    n-th `[[array.of.tables]]` entry for an index in `loc`; an index into an inline list is its key's line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    wanted = [str(part) for part in loc]
    table: list[str] = []
    entries: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(lines, start=1):
        header = _TABLE.match(line)
        if header:
            table = _dotted(header.group(1))
            if line.lstrip().startswith("[["):
                entry = entries[tuple(table)] = entries.get(tuple(table), -1) + 1
                table = [*table, str(entry)]
            if table == wanted:
                return number
            continue
        key = _KEY.match(line)
        if key:
            full = table + _dotted(key.group(1))
            if full == wanted[: len(full)] and len(full) >= min(len(wanted), len(table) + 1):
                return number
    return None


_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_KINDS = {"array": "a list", "object": "a table", "float": "a number", "int": "an integer", "str": "text",
          "bool": "true or false", "null": "nothing"}
_KIND = re.compile(r"`(\w+)`")
_ANY_KEY = "..."
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]+)`")
_FIELD = re.compile(r"^(\w+) ")  # a check's own "<setting> …" reason
_NAMED = re.compile(r"^\[(?P<table>[\w.-]+)\] (?P<key>[^\s=]+) =")  # a check's own "[table] key = …" reason


def _kind(found: re.Match[str]) -> str:
    return _KINDS.get(found.group(1), found.group(1))


def _steps(where: str) -> list[str | int]:
    return [name if name else (_ANY_KEY if index == _ANY_KEY else int(index))
            for name, index in _STEP.findall(where)]


def _unwrap(kind: Any) -> Any:
    """The type under `Annotated[...]` and `X | None`."""
    from typing import Annotated, Union, get_args, get_origin

    while True:
        origin = get_origin(kind)
        if origin is Annotated:
            kind = get_args(kind)[0]
        elif origin in (Union, UnionType):
            members = [m for m in get_args(kind) if m is not type(None)]
            kind = next((m for m in members if hasattr(m, "__struct_fields__")), members[0])
        else:
            return kind


def _child(kind: Any, step: str | int) -> Any:
    from typing import get_args

    from labmate.settings import _hints

    kind = _unwrap(kind)
    if hasattr(kind, "__struct_fields__"):
        return _hints(kind).get(str(step), Any)
    arguments = get_args(kind)
    return arguments[-1] if arguments else Any


def _resolve(steps: list[str | int], root: type, table: Any) -> tuple[list[str | int], Any, Any]:
    """The location with each unnamed dict key (msgspec says `[...]`) replaced by the key whose value
    fails on its own; the type and the value found there."""
    from msgspec import ValidationError, convert

    from labmate.settings import _decoded

    kind, value, resolved = root, table, []
    for step in steps:
        child = _child(kind, step)
        if step == _ANY_KEY and isinstance(value, dict):
            for key, item in value.items():
                try:
                    convert(item, child, strict=False, dec_hook=_decoded)
                except (ValidationError, ValueError, TypeError):
                    step = key
                    break
        resolved.append(step)
        kind = child
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and isinstance(step, int) and step < len(value):
            value = value[step]
        else:
            value = None
    return resolved, kind, value


PATTERNS = {HH_MM: "a 24-hour time of day as HH:MM, e.g. '09:30'"}


def _expected(reason: str, kind: Any, value: Any) -> str:
    """msgspec's reason as the user's words: what would have worked, and what was there."""
    from typing import Literal, get_args, get_origin

    kind = _unwrap(kind)
    unknown = _UNKNOWN.match(reason)
    if unknown and hasattr(kind, "__struct_fields__"):
        from difflib import get_close_matches

        keys: tuple[str, ...] = kind.__struct_fields__
        close = get_close_matches(unknown.group(1), keys, n=1)
        if close:
            return f"unknown key {unknown.group(1)!r}; did you mean {close[0]!r}?"
        if len(keys) > 12:  # the top level: every setting
            return f"unknown key {unknown.group(1)!r}; the settings table in README.md lists the keys"
        return f"unknown key {unknown.group(1)!r}; the keys are {', '.join(keys)}"
    missing = re.match(r"Object missing required field `([^`]+)`", reason)
    if missing:
        return f"missing {missing.group(1)!r}"
    if reason.startswith("Invalid enum value") and get_origin(kind) is Literal:
        message = "expected one of " + ", ".join(repr(choice) for choice in get_args(kind))
    elif reason.startswith("Expected "):
        message = "expected " + _KIND.sub(_kind, reason.removeprefix("Expected ")).replace("matching regex", "matching")
        for pattern, words in PATTERNS.items():  # a pattern people would have to read as a regex
            message = message.replace(f"text matching {pattern!r}", words)
    else:
        return reason
    if isinstance(value, (str, int, float, bool)):  # the value itself says more than its type
        message = re.sub(r", got [a-z ]+$", "", message) + f", got {value!r}"
    return message


def validation_message(error: str, table: dict[str, Any], path: Path, env_names: dict[str, str],
                       from_env: set[str]) -> str:
    """msgspec's `Expected `array`, got `str` - at `$.access.admins`` as
    `labmate.toml:3: access.admins: expected a list, got 'U1'`, or the environment variable's name
    when the value came from there."""
    from labmate.settings import Settings

    found = _AT.match(error)
    reason, where = (found.group("reason"), found.group("where") or "") if found else (error, "")
    loc, kind, value = _resolve(_steps(where), Settings, table)
    expected = _expected(reason, kind, value)
    if loc and loc[0] in from_env:
        return f"environment variable {env_names[str(loc[0])]}: {expected}"
    field = _FIELD.match(reason) if not loc else None
    if field and field.group(1) in env_names:  # Settings.__post_init__'s check of one top-level setting
        key = field.group(1)
        if key in from_env:
            return f"environment variable {env_names[key]}: {expected}"
        line = toml_line(path, (key,)) if path.is_file() else None
        return f"{path}:{line}: {expected}" if line else f"{path}: {expected}"
    named = _NAMED.match(reason)
    if named:  # a table's own check (its __post_init__) names its key
        line = toml_line(path, (*_dotted(named.group("table")), named.group("key"))) if path.is_file() else None
        return f"{path}:{line}: {expected}" if line else f"{path}: {expected}"
    unknown = _UNKNOWN.match(reason)
    own = _FIELD.match(reason)  # a table's own check whose reason starts with one of its keys
    if unknown:
        at = (*loc, unknown.group(1))
    elif own and own.group(1) in getattr(_unwrap(kind), "__struct_fields__", ()):
        at = (*loc, own.group(1))
    else:
        at = tuple(loc)
    line = toml_line(path, at) if path.is_file() else None
    if not loc:
        return f"{path}:{line}: {expected}" if line else f"{path}: {expected}"
    where = _readable(loc)
    return f"{path}:{line}: {where}: {expected}" if line else f"{path}: {where}: {expected}"


def _readable(loc: list[str | int]) -> str:
    """`digest.channels (entry 2).at`: msgspec counts list entries from 0, people from 1."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f" (entry {part + 1})"
        else:
            text += f".{part}" if text else str(part)
    return text
