"""The small exception hierarchy every front turns into a message.

A `LabmateError` is the user's to fix and is shown as it is; anything else is ours: the user
gets an error id and the traceback goes to the log under that id.
"""

from __future__ import annotations

import secrets


class LabmateError(Exception):
    outcome = "user_error"

    def __init__(self, message: str, *, hint: str = "", markup: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.markup = markup
        """True only when the message was built from trusted parts (it may then hold mentions)."""


class UsageError(LabmateError):
    """The text doesn't parse as a command; `hint` shows what would."""


class AccessDenied(LabmateError):
    outcome = "refused"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message, hint=hint, markup=True)


class NotFoundError(LabmateError):
    pass


class TooLong(UsageError):
    pass


def new_error_id() -> str:
    return "E-" + secrets.token_hex(4)
