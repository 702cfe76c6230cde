"""Expectation types: parsing (validation at load time, by the pydantic models in specs.py) and checking
(against one turn's reply).

A parsed expectation is a plain dict: {"type", "value", "optional", "weight"} so it pickles.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tasks.regress import specs
from tasks.regress.similarity import similarity
from tasks.regress.templating import render_value

_LIST_TYPES = ("contains-any", "contains-all", "icontains-any", "icontains-all")
EXPECTATION_TYPES: tuple[str, ...] = (
    "equals",
    "contains",
    "contains-any",
    "contains-all",
    "icontains",
    "icontains-any",
    "icontains-all",
    "not-contains",
    "regex",
    "starts-with",
    "max-length",
    "latency-ms",
    "intent",
    "json-path",
    "similar",
)
MODIFIERS = ("optional", "weight")


class ExpectationSpecError(ValueError):
    """Raised by parse_expectation; the suite loader adds file and line."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What one turn produced."""

    reply: str
    intent: str | None
    latency_ms: float
    data: Any  # the agent's structured output (dict) when it returned one, else None


def parse_expectation(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str) and raw in EXPECTATION_TYPES:
        raise ExpectationSpecError(f"expectation {raw!r} needs a value, e.g. '- {raw}: ...'")
    if not isinstance(raw, dict):
        raise ExpectationSpecError(
            f"an expectation must be a mapping like '- contains: text', got {type(raw).__name__}"
        )
    kinds = [key for key in raw if key not in MODIFIERS]
    unknown = [k for k in kinds if k not in EXPECTATION_TYPES]
    if unknown:
        raise ExpectationSpecError(
            f"unknown expectation type {unknown[0]!r}; valid types: {', '.join(EXPECTATION_TYPES)}"
        )
    if len(kinds) != 1:
        raise ExpectationSpecError(
            "each expectation needs exactly one type "
            f"(got {', '.join(map(repr, kinds)) or 'none'}); valid types: {', '.join(EXPECTATION_TYPES)}"
        )
    kind = kinds[0]
    try:
        return specs.validate(kind, raw[kind], {m: raw[m] for m in MODIFIERS if m in raw})
    except ValueError as exc:
        raise ExpectationSpecError(str(exc)) from None


@lru_cache(maxsize=1024)
def compile_json_path(path: str) -> Any:
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext import parse

    try:
        return parse(path)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise ExpectationSpecError(f"bad JSON path {path!r}: {exc}") from None


def shown(value: Any) -> str:
    """A suite's value as its author wrote it: quoted, but a regex's backslashes not doubled as repr would."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return repr(value)


def describe(spec: dict[str, Any]) -> str:
    value = spec["value"]
    if spec["type"] == "json-path":
        rest = {k: v for k, v in value.items() if k != "path"}
        text = f"json-path {value['path']}" + (f" {next(iter(rest))} {next(iter(rest.values()))!r}" if rest else "")
    elif spec["type"] == "similar":
        text = f"similar to {value['to']!r} (>= {value['threshold']})"
    else:
        text = f"{spec['type']} {shown(value)}"
    return text + (" (optional)" if spec.get("optional") else "")


def render_spec(spec: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """The spec with template variables filled in; raises jinja2 errors for undefined ones."""
    value = render_value(spec["value"], variables)
    return spec if value == spec["value"] else {**spec, "value": value}


def check(spec: dict[str, Any], obs: Observation) -> tuple[bool, str]:
    """Checks a rendered spec (see render_spec); returns (passed, detail)."""
    kind = spec["type"]
    value = spec["value"]
    reply = obs.reply
    if kind == "equals":
        return reply.strip() == value.strip(), ""
    if kind == "contains":
        return value in reply, ""
    if kind == "icontains":
        return value.lower() in reply.lower(), ""
    if kind in _LIST_TYPES:
        haystack = reply.lower() if kind.startswith("i") else reply
        needles = [v.lower() for v in value] if kind.startswith("i") else value
        found = [n in haystack for n in needles]
        if kind.endswith("-any"):
            return any(found), ""
        missing = [v for v, ok in zip(value, found, strict=True) if not ok]
        return not missing, f"missing {missing!r}" if missing else ""
    if kind == "not-contains":
        needles = value if isinstance(value, list) else [value]
        present = [n for n in needles if n in reply]
        return not present, f"found {present!r}" if present else ""
    if kind == "regex":
        try:
            return re.search(value, reply) is not None, ""
        except re.error as exc:
            return False, f"bad regex {shown(value)}: {exc}"
    if kind == "starts-with":
        return reply.lstrip().startswith(value), ""
    if kind == "max-length":
        return len(reply) <= value, f"length {len(reply)}"
    if kind == "latency-ms":
        return obs.latency_ms <= value, f"took {obs.latency_ms:.0f} ms"
    if kind == "intent":
        if obs.intent is None:
            return False, "the agent reported no intent"
        accepted = value if isinstance(value, list) else [value]
        return obs.intent in accepted, f"intent was {obs.intent!r}"
    if kind == "json-path":
        return _check_json_path(value, obs)
    if kind == "similar":
        score = similarity(reply, value["to"], value["method"])
        return score >= value["threshold"], f"similarity {score:.2f}"
    raise AssertionError(kind)  # pragma: no cover


def _check_json_path(value: dict[str, Any], obs: Observation) -> tuple[bool, str]:
    data = obs.data
    if data is None:
        try:
            data = json.loads(obs.reply)
        except ValueError:
            return False, "the reply is not structured (no dict output, not JSON)"
    matches = [m.value for m in compile_json_path(value["path"]).find(data)]
    if not matches:
        return False, f"{value['path']} matched nothing"
    if "equals" in value:
        ok = any(m == value["equals"] for m in matches)
        return ok, f"{value['path']} was {matches[0]!r}"
    if "contains" in value:
        needle = value["contains"]
        ok = any(
            (needle in m) if isinstance(m, list | dict) else (str(needle) in str(m)) for m in matches
        )
        return ok, f"{value['path']} was {matches[0]!r}"
    return True, ""
