"""Jinja2 in a sandbox with StrictUndefined: a missing variable is an error, never an empty string."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateRuntimeError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@lru_cache(maxsize=4096)
def _compiled(text: str) -> Any:
    return _ENV.from_string(text)


def render(text: str, variables: dict[str, Any]) -> str:
    """A template that breaks while rendering (`{{ 1/0 }}`, a range over the sandbox's limit) raises a
    TemplateRuntimeError, so the conversation errors like any other template mistake."""
    if not is_template(text):
        return text
    try:
        return _compiled(text).render(variables)
    except TemplateError:
        raise
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise TemplateRuntimeError(f"{type(exc).__name__}: {exc}") from exc


def render_value(value: Any, variables: dict[str, Any]) -> Any:
    """Render strings inside a value (str, list, dict) and leave everything else alone."""
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, list):
        return [render_value(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, variables) for k, v in value.items()}
    return value


def referenced_variables(value: Any) -> set[str]:
    """Names a template value reads; raises TemplateSyntaxError for a broken template."""
    if isinstance(value, str):
        if not is_template(value):
            return set()
        return set(meta.find_undeclared_variables(_ENV.parse(value)))
    if isinstance(value, list):
        return set().union(*(referenced_variables(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(referenced_variables(v) for v in value.values())) if value else set()
    return set()


__all__ = ["TemplateSyntaxError", "is_template", "referenced_variables", "render", "render_value"]
