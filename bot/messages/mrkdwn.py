"""Escaping for Slack mrkdwn: user text must never become a mention, a link or formatting control."""

from __future__ import annotations

from urllib.parse import urlsplit

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


class Mrkdwn(str):
    """Text already safe for mrkdwn (built by `link`, `user` or a template); not escaped again."""


def escape(value: object) -> str:
    if isinstance(value, Mrkdwn):
        return str(value)
    return str(value).translate(_ESCAPES)


def link(url: str, label: str) -> Mrkdwn:
    """A link whose URL we built; the label is user text and gets escaped (`|` too, it would end the label)."""
    if urlsplit(url).scheme not in ("http", "https"):
        return Mrkdwn(escape(label))
    return Mrkdwn(f"<{escape(url)}|{escape(label).replace('|', '¦')}>")


def user(user_id: str) -> Mrkdwn:
    """A mention of a Slack user id we know is real (an author from our own records)."""
    if user_id[:1] in ("U", "W") and user_id[1:].isalnum() and user_id.isupper():
        return Mrkdwn(f"<@{user_id}>")
    return Mrkdwn(escape(user_id))


def channel(channel_id: str) -> Mrkdwn:
    """A channel link for a Slack channel id; anything else (the terminal's label) as escaped text."""
    if channel_id[:1] in ("C", "G", "D") and channel_id[1:].isalnum() and channel_id.isupper():
        return Mrkdwn(f"<#{channel_id}>")
    return Mrkdwn(escape(channel_id))


CODE_TICK = "\u02cb"
"""A backtick in user text shown as code: Slack has no escape for one inside code, and a real one would end it."""


def code_text(value: object) -> str:
    """Text as inline code, before escaping (for messages escaped later, such as errors): Slack
    formats nothing inside code, so the text's `*`, `_` or `~` can't open or close a span around it.
    Its backticks are shown as `ˋ` and its line breaks as spaces (inline code is one line)."""
    text = " ".join(str(value).split()).replace("`", CODE_TICK)
    return f"`{text}`" if text else ""


def code(value: object) -> Mrkdwn:
    """User text as inline code, escaped: the template filter `code`."""
    return Mrkdwn(escape(code_text(value)))


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
