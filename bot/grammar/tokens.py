"""Pieces shared by the verbs' parsers: words (quoted or not), tags, people, time windows.

Names are what MLflow users write: `/Users/dana@example.com/wine quality`, with spaces, slashes,
`@`, quotes and any script. A name with a space is quoted, with straight quotes (`"…"`, `'…'`) or
the curly ones Slack's clients type (`“…”`, `‘…’`); `quote()` turns a name back into the form
that parses, so every suggestion can be pasted as it is shown.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta

from msgspec import Struct

from labmate.errors import UsageError
from labmate.quoting import QUOTES, TAG_MARKS, quote

__all__ = ["QUOTES", "TAG_MARKS", "Split", "Word", "head", "quote", "since", "split", "tag", "user_ref", "words"]
MAX_TAG = 64
SLACK_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
PLAIN_USER = re.compile(r"^@?([\w.-]{1,64})$")
DURATION = re.compile(r"^([0-9]{1,4})([mhdw])$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SINCE_HELP = "`since:7d`, `since:12h`, `since:2w`, `since:yesterday`, `since:monday` or `since:2026-11-01`"


class Word(Struct, frozen=True):
    text: str
    quoted: bool = False


class Split(Struct, frozen=True):
    """Text split into `key:value` options, `#tags` and the remaining words (in order)."""

    words: list[str]
    tags: list[str]
    options: list[tuple[str, str]]
    quoted: frozenset[int] = frozenset()
    """Indexes into `words` of the words that were quoted (never keywords, never tags)."""


def _closing(text: str, start: int) -> int:
    """Index of the quote closing the one at `start` (followed by a space or the end), or -1."""
    closers = QUOTES[text[start]]
    i = start + 1
    while i < len(text):
        if text[i] in closers and (i + 1 == len(text) or text[i + 1].isspace()):
            return i
        i += 1
    return -1


def words(text: str, *, unquote: bool = True) -> list[Word]:
    """Whitespace-separated words; a word that starts with a quote runs to its closing quote, and so
    does a `key:` followed by a quote. With `unquote=False` (free text such as a decision) only
    option values are unquoted and an unbalanced quote is just a character."""
    found: list[Word] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        token = text[i:j]
        key, colon, value = token.partition(":")
        prefix = key + colon if colon and re.fullmatch(r"[A-Za-z_]+", key) and value[:1] in QUOTES else ""
        opening = i + len(prefix)
        if opening < n and text[opening] in QUOTES and (unquote or prefix):
            end = _closing(text, opening)
            if end == -1:
                if unquote or prefix:
                    raise UsageError(
                        f"The quote `{text[opening]}` before `{text[opening + 1 : opening + 31]}` is never closed.",
                        hint='Close it with the same kind of quote, e.g. `summary "wine quality"`.',
                    )
            else:
                inner = text[opening + 1 : end]
                if not inner.strip():
                    raise UsageError("Those quotes hold nothing; put the name between them, e.g. `\"wine quality\"`.")
                found.append(Word(prefix + inner, True))
                i = end + 1
                continue
        found.append(Word(token))
        i = j
    return found


def head(text: str) -> tuple[Word | None, str]:
    """The first word of `text` (quoted or not) and the raw text after it."""
    stripped = text.lstrip()
    if not stripped:
        return None, ""
    if stripped[0] in QUOTES:
        first = words(stripped)[0]
        end = _closing(stripped, 0)
        return first, stripped[end + 1 :]
    parts = stripped.split(None, 1)
    return Word(parts[0]), parts[1] if len(parts) > 1 else ""


def tag(token: str) -> str | None:
    """`#release` -> `release`; `#リリース` -> `リリース`. None for words that aren't tags (`#12,`, `#-x`).
    A `#` word in any script that can't be a tag is refused rather than left in the text."""
    if len(token) < 2 or token[0] not in TAG_MARKS:
        return None
    body = unicodedata.normalize("NFKC", token[1:])
    ok = body[0].isalnum() and all(ch.isalnum() or ch in "_.-" or unicodedata.category(ch)[0] == "M" for ch in body)
    if ok and len(body) <= MAX_TAG:
        return body.lower()
    if any(ord(ch) > 127 and ch.isalpha() for ch in body) or (ok and len(body) > MAX_TAG):
        why = f"longer than {MAX_TAG} characters" if ok else "a tag is letters, digits, `_`, `.` and `-` only"
        raise UsageError(
            f"`{token[:70]}` looks like a tag but can't be one: {why}.",
            hint="e.g. `#release` or `#リリース`; to keep the `#` as text, put a space after it.",
        )
    return None


SINGLE = frozenset({"top", "since", "by", "status"})
"""Options that take one value: a second one used to replace the first without a word."""


def split(text: str, keys: tuple[str, ...], *, unquote: bool = True) -> Split:
    result: list[str] = []
    tags: list[str] = []
    options: list[tuple[str, str]] = []
    quoted: set[int] = set()
    for word in words(text, unquote=unquote):
        token = word.text
        key, sep, value = token.partition(":")
        if sep and key.lower() in keys:
            if not value:
                raise UsageError(f"`{key}:` needs a value right after the colon, e.g. `{key}:{_example(key)}`.")
            given = next((v for k, v in options if k == key.lower()), None)
            if given is not None and key.lower() in SINGLE:
                raise UsageError(f"`{key.lower()}:` is given twice (`{key.lower()}:{given[:20]}`, `{key.lower()}:{value[:20]}`): "
                                 "give it once.")
            options.append((key.lower(), value))
            continue
        if not word.quoted:
            found = tag(token)
            if found is not None:
                tags.append(found)
                continue
        if word.quoted:
            quoted.add(len(result))
        result.append(token)
    return Split(result, tags, options, frozenset(quoted))


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
    if re.fullmatch(r"[0-9]+[mhdw]", lowered):
        raise UsageError(f"`since:{value}` goes back too far: a count of minutes, hours, days or weeks has at "
                         f"most 4 digits. For older windows give the date, e.g. `since:2020-01-01`.")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"`since:{value}` is not a time I understand. Try {SINCE_HELP}.") from None
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)
