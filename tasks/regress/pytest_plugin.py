"""pytest plugin: each conversation of a suite under conversations/ becomes a test item.

    pytest conversations/ --agent models:/sales-agent@candidate

Nothing is collected without --agent, so the project's own test runs are unaffected. This
module is loaded in every pytest run: it imports only pytest at import time; the engine is
imported when a suite is actually collected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ENTRY_POINT_NAME = "labmate_regress"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # Loaded with `-p tasks.regress.pytest_plugin` while the package is also installed: claim the
    # entry-point name so pytest does not try to register this same module a second time.
    if pluginmanager.get_plugin(ENTRY_POINT_NAME) is None:
        pluginmanager.set_blocked(ENTRY_POINT_NAME)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labmate-regress", "regression conversations")
    group.addoption(
        "--agent",
        default=None,
        help="Target URI (models:/…, runs:/…, package.module:function, http(s)://…) to run the "
        "conversations of conversations/*.yaml suites against. Without it no suite is collected.",
    )
    group.addoption("--regress-timeout", type=float, default=None, help="Seconds per turn (default 10).")
    group.addoption(
        "--regress-tracking-uri",
        default=None,
        help="MLflow tracking URI for models:/ targets (default: MLFLOW_TRACKING_URI, else labmate's embedded store).",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("agent", None) is None:
        return  # not a regression run: this pytest is someone else's
    timeout = config.getoption("regress_timeout", None)
    if timeout is not None and timeout <= 0:
        raise pytest.UsageError(f"--regress-timeout must be positive (seconds per turn), not {timeout:g}")
    from labmate.bootstrap import person_waiting

    person_waiting()


def _is_suite_path(file_path: Path) -> bool:
    if file_path.suffix not in (".yaml", ".yml") or "conversations" not in file_path.parent.parts:
        return False
    from tasks.regress.suite import looks_like_suite

    return looks_like_suite(file_path)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if parent.config.getoption("agent", None) is None or not _is_suite_path(file_path):
        return None
    return SuiteFile.from_parent(parent, path=file_path)


class SuiteFile(pytest.File):
    def collect(self) -> Any:
        from tasks.regress.suite import load_suite

        suite = load_suite(self.path)
        config = self.config
        options = dict(suite.options)
        if config.getoption("regress_timeout") is not None:
            options["timeout"] = config.getoption("regress_timeout")
        options["tracking_uri"] = config.getoption("regress_tracking_uri") or _default_tracking_uri()
        for conversation in suite.conversations:
            yield ConversationItem.from_parent(
                self, name=conversation["id"], conversation=conversation, options=options
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        from tasks.regress.errors import RegressError

        if isinstance(excinfo.value, RegressError):
            return f"invalid suite: {excinfo.value}"
        return super().repr_failure(excinfo)


class ConversationFailed(Exception):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result["status"])
        self.result = result


class ConversationItem(pytest.Item):
    def __init__(self, *, conversation: dict[str, Any], options: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conversation = conversation
        self.options = options
        self.extra_keyword_matches.update(conversation["tags"])

    def runtest(self) -> None:
        from tasks.regress.runner import run_conversation

        result = run_conversation(self.conversation, self.config.getoption("agent"), self.options)
        if result["status"] != "pass":
            raise ConversationFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:  # type: ignore[override]
        from tasks.regress.errors import RegressError

        if isinstance(excinfo.value, ConversationFailed):
            return format_failure(self.conversation, excinfo.value.result)
        if isinstance(excinfo.value, RegressError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.conversation.get("line")
        return self.path, (line - 1) if line else None, f"conversation {self.conversation['id']}"


def format_failure(conversation: dict[str, Any], result: dict[str, Any]) -> str:
    from tasks.regress.runner import first_failure

    lines = [f"conversation {conversation['id']!r} ({conversation['file']}:{conversation['line']}): {result['status']}"]
    if result["runs"] > 1:
        lines.append(f"passed {result['passed_runs']}/{result['runs']} runs, needs {conversation['pass_rate']:.0%}")
    turn, expectation = first_failure(result)
    if turn is not None:
        lines.append(f"turn {turn['index']}: user: {turn['user']}")
        lines.append(f"  reply: {turn['reply']!r}")
        if expectation is not None:
            detail = f" ({expectation['detail']})" if expectation["detail"] else ""
            lines.append(f"  expected: {expectation['description']}{detail}")
        if turn["error"]:
            lines.append(f"  error: {turn['error']}")
    elif result["error"]:
        lines.append(f"error: {result['error']}")
    else:
        lines.append(f"score {result['score']:.2f} below min_score {conversation['min_score']:.2f}")
    return "\n".join(lines)


def _default_tracking_uri() -> str:
    """The same store `labmate demo` and `labmate regress` use (imported only when a suite runs)."""
    from labmate.settings import get_settings

    return get_settings().mlflow_tracking_uri
