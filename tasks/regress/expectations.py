"""Expectation types: parsing (validation at load time) and checking (against one turn's reply).

A parsed expectation is a plain dict: {"type", "value", "optional", "weight"} so it pickles.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tasks.regress.similarity import METHODS, similarity
from tasks.regress.templating import is_template, render_value

_STRING_TYPES = ("equals", "contains", "icontains", "starts-with", "not-contains", "regex")
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
DEFAULT_SIMILAR_THRESHOLD = 0.8


class ExpectationSpecError(ValueError):
    """Raised by parse_expectation; the suite loader adds file and line."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What one turn produced."""

    reply: str
    intent: str | None
    latency_ms: float
    data: Any  # the agent's structured output (dict) when it returned one, else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ExpectationSpecError(f"bad regex {pattern!r}: {exc}") from None


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
    value = raw[kind]
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise ExpectationSpecError(f"'optional' must be true or false, got {optional!r}")
    weight = raw.get("weight", 1.0)
    if not _is_number(weight) or weight < 0:
        raise ExpectationSpecError(f"'weight' must be a number >= 0, got {weight!r}")
    value = _parse_value(kind, value)
    return {"type": kind, "value": value, "optional": optional, "weight": float(weight)}


def _parse_value(kind: str, value: Any) -> Any:
    if kind in _STRING_TYPES:
        if kind == "not-contains" and isinstance(value, list):
            if not value or not all(isinstance(v, str) for v in value):
                raise ExpectationSpecError("'not-contains' needs a string or a non-empty list of strings")
            return list(value)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ExpectationSpecError(f"{kind!r} needs a string, got {type(value).__name__}")
        value = str(value)
        if kind == "regex" and not is_template(value):
            _check_regex(value)
        return value
    if kind in _LIST_TYPES:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ExpectationSpecError(f"{kind!r} needs a non-empty list of strings")
        return list(value)
    if kind in ("max-length", "latency-ms"):
        if not _is_number(value) or value <= 0:
            raise ExpectationSpecError(f"{kind!r} needs a positive number, got {value!r}")
        return value
    if kind == "intent":
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise ExpectationSpecError("'intent' needs an intent name or a list of accepted names")
    if kind == "json-path":
        return _parse_json_path(value)
    if kind == "similar":
        return _parse_similar(value)
    raise AssertionError(kind)  # pragma: no cover - EXPECTATION_TYPES and this function agree


def _parse_json_path(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        raise ExpectationSpecError("'json-path' needs a mapping with 'path' (and 'equals' or 'contains')")
    extra = set(value) - {"path", "equals", "contains"}
    if extra:
        raise ExpectationSpecError(
            f"'json-path' accepts path, equals, contains; unexpected: {', '.join(sorted(extra))}"
        )
    if "equals" in value and "contains" in value:
        raise ExpectationSpecError("'json-path' takes either 'equals' or 'contains', not both")
    compile_json_path(value["path"])
    return dict(value)


def _parse_similar(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"to": value}
    if not isinstance(value, dict) or not isinstance(value.get("to"), str):
        raise ExpectationSpecError("'similar' needs a mapping with 'to' (the reference reply) and 'threshold'")
    extra = set(value) - {"to", "threshold", "method"}
    if extra:
        raise ExpectationSpecError(
            f"'similar' accepts to, threshold, method; unexpected: {', '.join(sorted(extra))}"
        )
    threshold = value.get("threshold", DEFAULT_SIMILAR_THRESHOLD)
    if not _is_number(threshold) or not 0 <= threshold <= 1:
        raise ExpectationSpecError(f"'similar' threshold must be between 0 and 1, got {threshold!r}")
    method = value.get("method", "cosine")
    if method not in METHODS:
        raise ExpectationSpecError(f"'similar' method must be one of {', '.join(METHODS)}, got {method!r}")
    return {"to": value["to"], "threshold": float(threshold), "method": method}


@lru_cache(maxsize=1024)
def compile_json_path(path: str) -> Any:
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext import parse

    try:
        return parse(path)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise ExpectationSpecError(f"bad JSON path {path!r}: {exc}") from None


def describe(spec: dict[str, Any]) -> str:
    value = spec["value"]
    if spec["type"] == "json-path":
        rest = {k: v for k, v in value.items() if k != "path"}
        text = f"json-path {value['path']}" + (f" {next(iter(rest))} {next(iter(rest.values()))!r}" if rest else "")
    elif spec["type"] == "similar":
        text = f"similar to {value['to']!r} (>= {value['threshold']})"
    else:
        text = f"{spec['type']} {value!r}"
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
            return False, f"bad regex {value!r}: {exc}"
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
