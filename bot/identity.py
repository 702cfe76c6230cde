"""Who is typing in the terminal: the operating-system user, unless labmate.toml maps them to their
Slack id. Acting as somebody else (`--user`) needs an explicit setting, and the audit row keeps
both names: `user` (as whom the command ran) and `actor` (who typed it)."""

from __future__ import annotations

import getpass

from bot.messages import mrkdwn
from labmate.errors import AccessDenied
from labmate.settings import Settings


def login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def terminal_user(requested: str | None, settings: Settings) -> tuple[str, str]:
    """(user, actor) for a terminal session; AccessDenied when `requested` is someone else and this
    login may not act as others."""
    me = login()
    own = settings.terminal.users.get(me, me)
    if requested is None or requested in (own, me):
        return own, me
    if me in settings.terminal.allow_acting_as:
        return requested, me
    shown = mrkdwn.escape(me)
    raise AccessDenied(
        f"You are {mrkdwn.code(me)} here, so you can't run commands as {mrkdwn.code(requested)}.",
        hint=f'To act as others from this terminal, an admin adds `allow_acting_as = ["{shown}"]` under '
        f'`[terminal]` in labmate.toml; to be your Slack self here, `users = {{ "{shown}" = "U…" }}`.',
    )
