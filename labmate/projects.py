"""Which projects may run, what their entry points take, and the exact command a launch runs.

Pure (PyYAML and the standard library): the bot checks a launch's parameters here before anything
is stored, and the worker builds the training process's argv here, so both read an MLproject the
same way. Values are checked against the entry point's declared types (MLflow's own `float`,
`int`, `string`, `path`, `uri`) with strict patterns, because MLflow itself doesn't check them.

No shell ever sees a value: the entry point's command template is split into words once (as a
POSIX shell would split it), each `{name}` placeholder is replaced inside its word, and the words
become the child process's argv. A command that needs a shell (pipes, `&&`, redirections,
`$VAR`, globs) is refused, not run through one.
"""

from __future__ import annotations

import math
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any

import yaml

from labmate.errors import LabmateError, UsageError
from labmate.settings import ParameterDeclaration, ProjectConfig, Settings

TYPES = ("float", "int", "string", "path", "uri")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")
# ASCII digits only: `\d` would also take `٣` or `３`, which a training script may read differently or not at all.
FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
INT = re.compile(r"[+-]?[0-9]+")
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""An `int` value must fit in 64 bits (what a C long, NumPy's int64 or an MLflow step can hold)."""
STEPS_MAX = 2**31 - 1
"""The largest `total_steps` the launches table stores (an SQL INTEGER); a larger total shows no bar."""
PATH = re.compile(r"^[\w][\w./-]{0,254}$")
URI = re.compile(r"^[a-z][a-z0-9+.-]{0,15}://[^\s\x00-\x1f\x7f]{1,2000}$")
REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Zl": "a line break",
    "Zp": "a line break",
}
"""Unicode categories no value may contain: control characters (line breaks among them), format
characters (e.g. U+202E, which reverses how the rest of a line is shown) and line/paragraph separators."""
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85")
MAX_STRING = 500
SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?~\[\]]")
EXAMPLES = {"float": "0.001", "int": "5", "string": "baseline", "path": "data/train.csv", "uri": "s3://bucket/data"}


class ProjectError(LabmateError):
    """A project that can't be launched as configured (the admins' to fix, not the user's)."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: str | None

    @property
    def required(self) -> bool:
        return self.default is None

    def describe(self) -> str:
        return f"{self.name} ({self.type}{'' if self.required else f', default {self.default}'})"


@dataclass(frozen=True)
class EntryPoint:
    name: str
    parameters: dict[str, Parameter]
    command: str | None
    """None when only labmate.toml declares it (a git project: the worker reads the real command)."""

    def listing(self) -> str:
        return ", ".join(p.describe() for p in self.parameters.values()) or "none"


@dataclass(frozen=True)
class Resolved:
    """A launch's parameters after checking: every declared one, with the defaults filled in."""

    project: str
    entry_point: str
    params: dict[str, str]
    given: tuple[str, ...]


def _default(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _parameter(name: str, raw: Any, where: str) -> Parameter:
    if isinstance(raw, str):
        kind, default = raw, None  # MLflow: a bare type, no default
    elif isinstance(raw, dict):
        kind, default = raw.get("type", "string"), _default(raw.get("default"))
    else:
        raise ProjectError(f"{where}: parameter `{name}` must be a type or a mapping, not {raw!r}.")
    if kind not in TYPES:
        raise ProjectError(f"{where}: parameter `{name}` has type `{kind}`; labmate launches {', '.join(TYPES)}.")
    if not NAME.match(name):
        raise ProjectError(f"{where}: parameter name `{name}` can't be passed safely (letters, digits, `_`).")
    return Parameter(name, kind, default)


def find_mlproject(directory: Path) -> Path | None:
    """MLflow's rule: a file named `MLproject` in any letter case."""
    try:
        return next((p for p in directory.iterdir() if p.name.lower() == "mlproject" and p.is_file()), None)
    except OSError:
        return None


def read_entry_points(directory: Path) -> dict[str, EntryPoint]:
    """The entry points of the MLproject in `directory`, read as MLflow reads them."""
    path = find_mlproject(directory)
    if path is None:
        raise ProjectError(f"There is no MLproject file in {directory}.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProjectError(f"{path} can't be read: {exc}") from None
    found = {}
    for name, body in (data.get("entry_points") or {}).items():
        body = body or {}
        where = f"{path} entry point `{name}`"
        params = {str(k): _parameter(str(k), v, where) for k, v in (body.get("parameters") or {}).items()}
        found[str(name)] = EntryPoint(str(name), params, str(body.get("command") or ""))
    return found


def declared_entry_point(name: str, declared: dict[str, ParameterDeclaration]) -> EntryPoint:
    params = {k: Parameter(k, d.type, _default(d.default)) for k, d in declared.items()}
    for key in params:
        if not NAME.match(key):
            raise ProjectError(f"labmate.toml: parameter name `{key}` can't be passed safely (letters, digits, `_`).")
    return EntryPoint(name, params, None)


def lookup(settings: Settings, name: str) -> ProjectConfig:
    project = settings.projects.get(name)
    if project is None:
        known = ", ".join(f"`{n}`" for n in sorted(settings.projects)) or "none (labmate.toml has no [projects])"
        shown = name if len(name) <= 64 else name[:64] + "…"
        raise UsageError(
            f"There is no project `{shown}` that I may launch. Launchable projects: {known}.",
            hint="Projects are configured in labmate.toml under [projects.<name>].",
        )
    return project


def entry_point_name(project_name: str, project: ProjectConfig, requested: str | None) -> str:
    if requested is None:
        return project.entry_points[0]
    if requested not in project.entry_points:
        allowed = ", ".join(f"`{project_name}:{e}`" for e in project.entry_points)
        shown = requested if len(requested) <= 64 else requested[:64] + "…"
        raise UsageError(f"`{project_name}` has no launchable entry point `{shown}`. Try {allowed}.")
    return requested


def entry_point(project_name: str, project: ProjectConfig, name: str) -> EntryPoint:
    """The entry point as the bot can know it: from the local MLproject, or labmate.toml for a git project."""
    if name in project.parameters:
        return declared_entry_point(name, project.parameters[name])
    if project.remote:
        raise ProjectError(
            f"`{project_name}` is fetched from git by the worker, and labmate.toml doesn't declare the parameters "
            f"of its entry point `{name}`, so I can't check your values here.",
            hint=f"An admin can declare them under [projects.{project_name}.parameters.{name}].",
        )
    found = read_entry_points(project.local_path())
    if name not in found:
        raise ProjectError(f"The MLproject of `{project_name}` ({project.local_path()}) has no entry point `{name}`.")
    return found[name]


# -- values ---------------------------------------------------------------------------------------


ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _refused_character(value: str) -> str | None:
    """The first character of `value` that no value may contain, or None."""
    return next((ch for ch in value if unicodedata.category(ch) in REFUSED_CATEGORIES), None)


def _escaped(ch: str) -> str:
    return ESCAPES.get(ch) or (f"\\u{ord(ch):04x}" if unicodedata.category(ch) in REFUSED_CATEGORIES else ch)


def _shown(value: str) -> str:
    """`value` as a message can show it: line breaks and invisible characters escaped, at most 60 characters."""
    text = "".join(_escaped(ch) for ch in value[:200])
    return text if len(text) <= 60 else text[:60] + "…"


def _character(ch: str) -> str:
    """`U+202E RIGHT-TO-LEFT OVERRIDE`, `U+000A` (control characters have no name)."""
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def _kind(ch: str) -> str:
    return "a line break" if ch in LINE_BREAKS else REFUSED_CATEGORIES[unicodedata.category(ch)]


def check_value(param: Parameter, value: str) -> str:
    """The value as the training process will get it, or UsageError saying what was wrong."""
    bad = f"`{_shown(value)}` is not a valid {param.type} for `{param.name}`"
    example = f"e.g. `{param.name}={EXAMPLES[param.type]}`"
    if not value and param.type in ("float", "int"):
        default = "" if param.required else f", or leave `{param.name}` out for its default ({param.default})"
        raise UsageError(f"`{param.name}=` has no value: say the {param.type} after `=`, {example}{default}.")
    refused = _refused_character(value)
    if refused is not None:
        raise UsageError(
            f"{bad}: it contains {_kind(refused)} ({_character(refused)}). A value can't contain line breaks, "
            f"control or invisible formatting characters; {example}."
        )
    if param.type in ("float", "int") and any(ch.isdigit() and not "0" <= ch <= "9" for ch in value):
        other = next(ch for ch in value if ch.isdigit() and not "0" <= ch <= "9")
        raise UsageError(f"{bad}: `{other}` ({_character(other)}) is not one of the digits 0-9; {example}.")
    if param.type == "float":
        if not FLOAT.fullmatch(value):
            raise UsageError(f"{bad}: write a plain number, {example}.")
        if not math.isfinite(float(value)):
            raise UsageError(f"{bad}: it is beyond what a float can hold (about ±1.8e308); write a finite number, {example}.")
    elif param.type == "int":
        if not INT.fullmatch(value):
            raise UsageError(f"{bad}: write a whole number, {example}.")
        negative = value.startswith("-")
        digits = value.lstrip("+-").lstrip("0") or "0"
        number = int(digits) * (-1 if negative else 1) if len(digits) <= 20 else None  # longer: out of range anyway
        if number is None or not INT_MIN <= number <= INT_MAX:
            raise UsageError(
                f"`{_shown(value)}` is too {'small' if negative else 'large'} for `{param.name}`: an int must fit in "
                f"64 bits, so it is at {'least' if negative else 'most'} {INT_MIN if negative else INT_MAX}; {example}."
            )
    elif param.type == "path":
        parts = value.split("/")
        if not PATH.match(value) or ".." in parts:
            raise UsageError(
                f"{bad}: a path is relative to the project (letters, digits, `_`, `-`, `.`, `/`; no `..`), {example}."
            )
    elif param.type == "uri":
        if not URI.match(value):
            raise UsageError(f"{bad}: write a URI like `s3://bucket/data`.")
    else:
        if len(value) > MAX_STRING:
            raise UsageError(f"The value of `{param.name}` is {len(value)} characters; the most is {MAX_STRING}.")
        if value.startswith("-"):
            raise UsageError(f"{bad}: a value may not start with `-` (the training script would read it as an option).")
    return value


def resolve(
    project_name: str,
    entry: EntryPoint,
    pairs: list[tuple[str | None, str]],
) -> Resolved:
    """Check `name=value` pairs (a None name is a word that isn't `name=value`) against the entry point:
    every problem names the parameter list."""
    listing = f"Parameters of `{project_name}:{entry.name}`: {entry.listing()}."
    given: dict[str, str] = {}
    for name, value in pairs:
        if name is None:
            raise UsageError(
                f"I can't read `{_shown(value)}`: parameters are written `name=value`, with no spaces around `=` "
                "(quote a value that has spaces).",
                hint=listing,
            )
        if name not in entry.parameters:
            import difflib

            close = difflib.get_close_matches(name, list(entry.parameters), n=1, cutoff=0.6)
            meant = f" Did you mean `{close[0]}`?" if close else ""
            raise UsageError(f"`{_shown(name)}` is not a parameter of `{project_name}:{entry.name}`.{meant}", hint=listing)
        if name in given:
            raise UsageError(f"`{name}` is given twice; give each parameter once.", hint=listing)
        try:
            given[name] = check_value(entry.parameters[name], value)
        except UsageError as exc:
            exc.hint = listing
            raise
    missing = [p for p in entry.parameters.values() if p.required and p.name not in given]
    if missing:
        names = ", ".join(f"`{p.name}` ({p.type})" for p in missing)
        raise UsageError(f"`{project_name}:{entry.name}` needs a value for {names}.", hint=listing)
    params = {name: given.get(name, p.default or "") for name, p in entry.parameters.items()}
    return Resolved(project_name, entry.name, params, tuple(given))


def total_steps(project: ProjectConfig, params: dict[str, str]) -> int | None:
    value = params.get(project.progress_param)
    if value is None or not INT.fullmatch(value) or len(value) > 20:
        return None
    return int(value) if 0 < int(value) <= STEPS_MAX else None


# -- the command -----------------------------------------------------------------------------------


def placeholders(template: str) -> list[str]:
    return [field for _, field, _, _ in Formatter().parse(template) if field is not None]


def command_argv(entry: EntryPoint, params: dict[str, str], work_dir: Path) -> list[str]:
    """The argv that runs `entry` with `params` (already checked) in `work_dir`, with no shell.

    Each word of the template is formatted on its own, so a value is always exactly (part of) one
    argument. `path` values become absolute paths inside the project, as MLflow makes them."""
    if not entry.command:
        raise ProjectError(f"Entry point `{entry.name}` has no command.")
    bare = re.sub(r"\{[^{}]*\}", "", entry.command.replace("{{", "").replace("}}", ""))
    syntax = SHELL_SYNTAX.search(bare)
    if syntax:
        raise ProjectError(
            f"Entry point `{entry.name}` needs a shell (its command uses `{syntax.group(0)}`), and labmate starts "
            "training without one so that no value can be read as shell code.",
            hint="Move that logic into a script and call it from the entry point.",
        )
    try:
        words = shlex.split(entry.command, comments=False, posix=True)
    except ValueError as exc:
        raise ProjectError(f"Entry point `{entry.name}` has a command I can't split into words: {exc}.") from None
    if not words or "=" in words[0]:
        raise ProjectError(
            f"Entry point `{entry.name}` needs a shell (it starts with a variable assignment or is empty).",
            hint="Set environment variables in a script and call it from the entry point.",
        )
    values = dict(params)
    for name, param in entry.parameters.items():
        if param.type == "path" and values.get(name):
            target = (work_dir / values[name]).resolve()
            if not target.is_relative_to(work_dir.resolve()):
                raise UsageError(f"`{name}={values[name]}` points outside the project.")
            if not target.exists():
                raise UsageError(f"`{name}={values[name]}`: there is no such file in the project.")
            values[name] = str(target)
    argv = []
    for word in words:
        unknown = [f for f in placeholders(word) if f not in values]
        if unknown:
            raise ProjectError(f"Entry point `{entry.name}` uses `{{{unknown[0]}}}`, which it doesn't declare.")
        argv.append(word.format_map(values))
    return argv


def shown_command(argv: list[str]) -> str:
    return shlex.join(argv)
