"""Target adapters: an MLflow model URI, a Python callable, or an HTTP endpoint.

Every adapter is a callable taking the conversation so far (a list of {"role", "content"}) and
returning an AgentOutput. Loaded targets are cached per process, so a model loads once per
worker process rather than once per conversation.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.regress.errors import TargetLoadError

Messages = list[dict[str, str]]
DEFAULT_REPLY_PATH = "$.reply"
DEFAULT_INTENT_PATH = "$.intent"
_MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:", "file://", "dbfs:/", "s3://", "gs://")
_CALLABLE = re.compile(r"^(?P<module>[A-Za-z_][\w.]*|.+\.py):(?P<attr>[A-Za-z_][\w.]*)$")


class AgentOutputError(ValueError):
    """The agent answered with something that is neither a reply string nor a {"reply": ...} dict."""


@dataclass(frozen=True, slots=True)
class AgentOutput:
    reply: str
    intent: str | None
    data: Any


Agent = Callable[[Messages], Any]  # output goes through normalize_output

_cache: dict[tuple[Any, ...], Agent] = {}
_cache_lock = threading.Lock()


def target_kind(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return "http"
    if uri.startswith(_MLFLOW_SCHEMES):
        return "mlflow"
    if _CALLABLE.match(uri):
        return "callable"
    if Path(uri, "MLmodel").is_file():
        return "mlflow"
    raise TargetLoadError(
        f"cannot load target {uri!r}: not a model URI (models:/…, runs:/…), "
        "a callable (package.module:function) or an http(s):// endpoint"
    )


def load_target(uri: str, options: dict[str, Any] | None = None) -> Agent:
    options = options or {}
    key = (
        uri,
        options.get("reply_path"),
        options.get("intent_path"),
        repr(sorted((options.get("headers") or {}).items())),
        options.get("tracking_uri"),
        os.getpid(),
    )
    with _cache_lock:
        agent = _cache.get(key)
        if agent is None:
            agent = _load(uri, options)
            _cache[key] = agent
        return agent


def _load(uri: str, options: dict[str, Any]) -> Agent:
    kind = target_kind(uri)
    if kind == "http":
        return _http_agent(uri, options)
    if kind == "callable":
        return _load_callable(uri)
    return _load_mlflow(uri, options)


def load_raw(uri: str, options: dict[str, Any] | None = None) -> Callable[[Messages], Any]:
    """The agent itself, without the runner's adapter (benchmarks compare against it)."""
    kind = target_kind(uri)
    if kind == "callable":
        return _load_callable(uri)
    if kind == "mlflow":
        return _load_mlflow(uri, options or {})
    raise TargetLoadError(f"no raw agent for {uri!r}: HTTP targets are only reachable through the adapter")


def normalize_output(raw: Any) -> AgentOutput:
    if isinstance(raw, AgentOutput):
        return raw
    if hasattr(raw, "tolist") and not isinstance(raw, str | dict):  # numpy array / pandas Series
        raw = raw.tolist()
    if isinstance(raw, list | tuple):
        if len(raw) != 1:
            raise AgentOutputError(f"the agent returned a list of {len(raw)} items; expected one reply")
        return normalize_output(raw[0])
    if isinstance(raw, str):
        return AgentOutput(raw, None, None)
    if isinstance(raw, dict):
        reply = raw.get("reply")
        if not isinstance(reply, str):
            raise AgentOutputError(f"the agent returned a dict without a string 'reply' (keys: {sorted(raw)})")
        intent = raw.get("intent")
        return AgentOutput(reply, None if intent is None else str(intent), raw)
    raise AgentOutputError(
        f"the agent returned {type(raw).__name__}; expected a str or a dict with 'reply'"
    )


def _load_callable(uri: str) -> Callable[[Messages], Any]:
    match = _CALLABLE.match(uri)
    assert match is not None
    module_name, attr = match["module"], match["attr"]
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:
        raise TargetLoadError(f"cannot load target {uri!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetLoadError(f"cannot load target {uri!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetLoadError(f"cannot load target {uri!r}: {attr!r} is not callable")
    return obj


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    name = "_regress_target_" + re.sub(r"\W", "_", str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _load_mlflow(uri: str, options: dict[str, Any]) -> Callable[[Messages], Any]:
    from tasks.mlflow_io.models import load_pyfunc

    try:
        return load_pyfunc(uri, options.get("tracking_uri"))
    except Exception as exc:  # MlflowException, OSError, import errors inside the model…
        from labmate.settings import mask_url

        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TargetLoadError(f"cannot load target {uri!r}: {mask_url(first_line)}") from None


def _http_agent(url: str, options: dict[str, Any]) -> Agent:
    import requests

    from tasks.regress.expectations import ExpectationSpecError, compile_json_path

    try:
        reply_path = compile_json_path(options.get("reply_path") or DEFAULT_REPLY_PATH)
        intent_path = compile_json_path(options.get("intent_path") or DEFAULT_INTENT_PATH)
    except ExpectationSpecError as exc:
        raise TargetLoadError(f"cannot load target {url!r}: {exc}") from None
    headers = dict(options.get("headers") or {})
    timeout = options.get("timeout") or 10.0
    local = threading.local()

    def call(messages: Messages) -> AgentOutput:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.post(url, json={"messages": messages}, headers=headers, timeout=timeout)
        response.raise_for_status()
        data = response.json()
        replies = [m.value for m in reply_path.find(data)]
        if not replies or not isinstance(replies[0], str):
            raise AgentOutputError(f"no string reply at {options.get('reply_path') or DEFAULT_REPLY_PATH}")
        intents = [m.value for m in intent_path.find(data)]
        intent = str(intents[0]) if intents and intents[0] is not None else None
        return AgentOutput(replies[0], intent, data)

    return call
