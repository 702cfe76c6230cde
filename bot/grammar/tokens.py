"""Pieces shared by the verbs' parsers: tags, people, time windows and MLflow references."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from labmate.errors import UsageError

TAG = re.compile(r"(?<!\S)#([A-Za-z0-9][\w.-]{0,63})(?!\S)")
SLACK_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
PLAIN_USER = re.compile(r"^@?([\w.-]{1,64})$")
DURATION = re.compile(r"^(\d{1,4})([mhdw])$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SINCE_HELP = "`since:7d`, `since:12h`, `since:2w`, `since:yesterday`, `since:monday` or `since:2026-11-01`"


@dataclass(frozen=True)
class Split:
    """Text split into `key:value` options, `#tags` and the remaining words (in order)."""

    words: list[str]
    tags: list[str]
    options: list[tuple[str, str]]


def split(text: str, keys: tuple[str, ...]) -> Split:
    words: list[str] = []
    tags: list[str] = []
    options: list[tuple[str, str]] = []
    for token in text.split():
        match = TAG.fullmatch(token)
        if match:
            tags.append(match.group(1).lower())
            continue
        key, sep, value = token.partition(":")
        if sep and key.lower() in keys:
            if not value:
                raise UsageError(f"`{key}:` needs a value right after the colon, e.g. `{key}:{_example(key)}`.")
            options.append((key.lower(), value))
            continue
        words.append(token)
    return Split(words, tags, options)


def _example(key: str) -> str:
    return {
        "by": "@dana",
        "since": "7d",
        "run": "3f9a2c1d",
        "exp": "sales-agent",
        "model": "sales-agent/3",
        "status": "failed",
        "tag": "team=nlp",
        "top": "5",
    }.get(key, "value")


def user_ref(value: str) -> str:
    """A Slack mention `<@U123|name>`, `@name` or `U123` -> the id or name as stored as author."""
    match = SLACK_USER.match(value)
    if match:
        return match.group(1)
    match = PLAIN_USER.match(value)
    if match:
        return match.group(1)
    raise UsageError(f"`by:{value}` is not a person. Use `by:@name` or mention them: `by:@dana`.")


def since(value: str, now: datetime) -> datetime:
    """Start of a time window, from `7d`, `12h`, `2w`, `yesterday`, a weekday or an ISO date."""
    lowered = value.lower()
    match = DURATION.match(lowered)
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    today = datetime.combine(now.date(), datetime.min.time(), tzinfo=now.tzinfo or UTC)
    if lowered == "today":
        return today
    if lowered == "yesterday":
        return today - timedelta(days=1)
    if lowered in WEEKDAYS:
        back = (now.weekday() - WEEKDAYS.index(lowered)) % 7 or 7
        return today - timedelta(days=back)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"`since:{value}` is not a time I understand. Try {SINCE_HELP}.") from None
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)
