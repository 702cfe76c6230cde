"""Errors the CLI turns into exit code 2 with a one-line message (no traceback)."""

from __future__ import annotations


class RegressError(Exception):
    """Base class: a problem with the suite or the target, not with the agent's replies."""


class SuiteError(RegressError):
    """A suite file that cannot be used; the message names the file and the line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.detail = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class TargetLoadError(RegressError):
    """A target URI that cannot be turned into a callable agent."""


class NoCandidate(RegressError):
    """Neither the command nor the suite names a candidate target."""
