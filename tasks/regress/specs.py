"""Typed expectations: one pydantic model per kind, a discriminated union on `type`, unknown keys forbidden.

A suite's `- contains: text` (with `optional:` / `weight:`) becomes `{"type": "contains", "value": "text", …}`
and is validated as one of these models; the runner keeps using the plain dict (`as_dict`), which pickles
and travels to workers. Every check raises ValueError with the message the suite loader shows with the
file and line (the same messages as before the models existed).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from tasks.regress.similarity import METHODS
from tasks.regress.templating import is_template

DEFAULT_SIMILAR_THRESHOLD = 0.8
TextKind = Literal["equals", "contains", "icontains", "starts-with", "regex"]
ListKind = Literal["contains-any", "contains-all", "icontains-any", "icontains-all"]
NumberKind = Literal["max-length", "latency-ms"]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


class _Spec(BaseModel):
    """What every expectation has: its kind, its value, and the modifiers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    optional: bool = False
    weight: float = 1.0

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        optional = data.get("optional", False)
        if not isinstance(optional, bool):
            raise ValueError(f"'optional' must be true or false, got {optional!r}")
        weight = data.get("weight", 1.0)
        if not _is_number(weight) or weight < 0:
            raise ValueError(f"'weight' must be a number >= 0, got {weight!r}")
        return {**data, "value": cls.checked_value(str(data["type"]), data.get("value"))}

    @classmethod
    def checked_value(cls, kind: str, value: Any) -> Any:
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        value = self.value  # type: ignore[attr-defined]
        if isinstance(value, BaseModel):
            value = value.model_dump(exclude_unset=True)
        return {"type": self.type, "value": value, "optional": self.optional, "weight": float(self.weight)}  # type: ignore[attr-defined]


class TextExpectation(_Spec):
    type: TextKind
    value: str

    @classmethod
    def checked_value(cls, kind: str, value: Any) -> Any:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"{kind!r} needs a string, got {type(value).__name__}")
        value = str(value)
        if kind == "regex" and not is_template(value):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"bad regex {value!r}: {exc}") from None
        return value


class NotContainsExpectation(_Spec):
    type: Literal["not-contains"]
    value: str | list[str]

    @classmethod
    def checked_value(cls, kind: str, value: Any) -> Any:
        if isinstance(value, list):
            if not _strings(value):
                raise ValueError("'not-contains' needs a string or a non-empty list of strings")
            return list(value)
        return TextExpectation.checked_value(kind, value)


class ListExpectation(_Spec):
    type: ListKind
    value: list[str]

    @classmethod
    def checked_value(cls, kind: str, value: Any) -> Any:
        if not _strings(value):
            raise ValueError(f"{kind!r} needs a non-empty list of strings")
        return list(value)


class NumberExpectation(_Spec):
    type: NumberKind
    value: int | float

    @classmethod
    def checked_value(cls, kind: str, value: Any) -> Any:
        if not _is_number(value) or value <= 0:
            raise ValueError(f"{kind!r} needs a positive number, got {value!r}")
        return value


class IntentExpectation(_Spec):
    type: Literal["intent"]
    value: str | list[str]

    @classmethod
    def checked_value(cls, kind: str, value: Any) -> Any:
        if isinstance(value, str) and value:
            return value
        if _strings(value):
            return list(value)
        raise ValueError("'intent' needs an intent name or a list of accepted names")


class JsonPath(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    equals: Any = None
    contains: Any = None


class JsonPathExpectation(_Spec):
    type: Literal["json-path"]
    value: JsonPath

    @classmethod
    def checked_value(cls, kind: str, value: Any) -> Any:
        from tasks.regress.expectations import ExpectationSpecError, compile_json_path

        if isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, dict) or not isinstance(value.get("path"), str):
            raise ValueError("'json-path' needs a mapping with 'path' (and 'equals' or 'contains')")
        extra = set(value) - set(JsonPath.model_fields)
        if extra:
            raise ValueError(f"'json-path' accepts path, equals, contains; unexpected: {', '.join(sorted(extra))}")
        if "equals" in value and "contains" in value:
            raise ValueError("'json-path' takes either 'equals' or 'contains', not both")
        try:
            compile_json_path(value["path"])
        except ExpectationSpecError as exc:
            raise ValueError(str(exc)) from None
        return dict(value)


class Similar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    to: str
    threshold: float = DEFAULT_SIMILAR_THRESHOLD
    method: str = "cosine"


class SimilarExpectation(_Spec):
    type: Literal["similar"]
    value: Similar

    @classmethod
    def checked_value(cls, kind: str, value: Any) -> Any:
        if isinstance(value, str):
            value = {"to": value}
        if not isinstance(value, dict) or not isinstance(value.get("to"), str):
            raise ValueError("'similar' needs a mapping with 'to' (the reference reply) and 'threshold'")
        extra = set(value) - set(Similar.model_fields)
        if extra:
            raise ValueError(f"'similar' accepts to, threshold, method; unexpected: {', '.join(sorted(extra))}")
        threshold = value.get("threshold", DEFAULT_SIMILAR_THRESHOLD)
        if not _is_number(threshold) or not 0 <= threshold <= 1:
            raise ValueError(f"'similar' threshold must be between 0 and 1, got {threshold!r}")
        method = value.get("method", "cosine")
        if method not in METHODS:
            raise ValueError(f"'similar' method must be one of {', '.join(METHODS)}, got {method!r}")
        return {"to": value["to"], "threshold": float(threshold), "method": method}


Expectation = Annotated[
    TextExpectation | NotContainsExpectation | ListExpectation | NumberExpectation | IntentExpectation
    | JsonPathExpectation | SimilarExpectation,
    Field(discriminator="type"),
]
ADAPTER: TypeAdapter[Any] = TypeAdapter(Expectation)


class SpecMessage:
    """The first error of a ValidationError, as the message the suite loader shows."""

    PREFIX: ClassVar[str] = "Value error, "

    @classmethod
    def of(cls, exc: ValidationError) -> str:
        first = exc.errors()[0]
        error = (first.get("ctx") or {}).get("error")
        if isinstance(error, ValueError):
            return str(error)
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])


def validate(kind: str, value: Any, modifiers: dict[str, Any]) -> dict[str, Any]:
    """The expectation as the runner's plain dict; ValueError with the loader's message."""
    try:
        spec = ADAPTER.validate_python({"type": kind, "value": value, **modifiers})
    except ValidationError as exc:
        raise ValueError(SpecMessage.of(exc)) from None
    return spec.as_dict()


# -- conversations and turns ----------------------------------------------------------------------

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_REPEAT = 1000
"""A conversation runs at most this many times (`repeat:`) in one run."""


class ConversationSpec(BaseModel):
    """A conversation's own keys (its turns are checked one by one, each with its line)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str | int
    tags: list[str] = Field(default_factory=list)
    vars: dict[Any, Any] = Field(default_factory=dict)
    repeat: int = Field(1, ge=1, le=MAX_REPEAT)
    pass_rate: float = Field(1.0, ge=0, le=1)
    min_score: float = Field(1.0, ge=0, le=1)
    turns: list[Any] = Field(min_length=1)
    description: Any = None

    @model_validator(mode="before")
    @classmethod
    def _one_tag(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("tags"), str):
            return {**data, "tags": [data["tags"]]}
        return data

    @model_validator(mode="after")
    def _id_pattern(self) -> ConversationSpec:
        if not CONVERSATION_ID.match(str(self.id)):
            raise ValueError("id")
        return self


class TurnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    user: str
    expect: list[Any] | None = None
    capture: dict[Any, Any] = Field(default_factory=dict)


def first_problem(exc: ValidationError, order: tuple[str, ...]) -> tuple[str, str]:
    """(the key, the kind of problem) the loader reports first: an unknown key before anything else,
    then the keys in `order` (the order the file format documents them in)."""
    errors = exc.errors()
    for error in errors:
        if error["type"] == "extra_forbidden":
            return str(error["loc"][0]), "unknown"
    found = [(str(e["loc"][0]) if e["loc"] else "id", str(e["type"])) for e in errors]
    return min(found, key=lambda p: order.index(p[0]) if p[0] in order else len(order))


# -- the suite's targets, options and gate --------------------------------------------------------


class TargetsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    baseline: str = Field("", min_length=1)  # a default is not validated: absent is fine, empty or null is not
    candidate: str = Field("", min_length=1)


class OptionsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    timeout: float | None = Field(None, gt=0)
    reply_path: str | None = None
    intent_path: str | None = None
    headers: dict[str, str] | None = None

    @field_validator("reply_path", "intent_path")
    @classmethod
    def _json_path(cls, value: str | None) -> str | None:
        from tasks.regress.expectations import ExpectationSpecError, compile_json_path

        if value is not None:
            try:
                compile_json_path(value)
            except ExpectationSpecError as exc:
                raise ValueError(str(exc)) from None
        return value


class GateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    min_pass_rate: float = Field(1.0, ge=0, le=1)
    max_drop: float = Field(0.0, ge=0, le=1)
    p95_latency_ms: float = Field(1.0, gt=0)
    no_new_failures_tagged: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _one_tag(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("no_new_failures_tagged"), str):
            return {**data, "no_new_failures_tagged": [data["no_new_failures_tagged"]]}
        return data
