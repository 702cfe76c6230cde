"""Reading the Slack message a decision is logged from (reaction or shortcut)."""

from __future__ import annotations

import re
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.messages.mrkdwn import unescape
from bot.slack_client import reader

# What Slack answers when the bot can't see the channel, and when it sees no such message or thread.
NOT_A_MEMBER = ("not_in_channel", "channel_not_found")
GONE = ("thread_not_found", "message_not_found")


class SlackUnanswered(Exception):
    """Slack did not answer a read, even after the retries: the person is told to try again."""


class NotAMember(Exception):
    """The bot can't read the channel: the person is told to invite it."""


def fetch(client: WebClient, channel: str, ts: str) -> dict[str, Any] | None:
    """The message, or None when the channel has no such message (deleted); NotAMember when the bot
    can't read the channel at all."""
    client = reader(client)
    try:
        history = client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1)
        for message in history.get("messages", []):
            if message.get("ts") == ts:
                return message
        replies = client.conversations_replies(channel=channel, ts=ts, latest=ts, inclusive=True, limit=1)
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        if error in NOT_A_MEMBER:
            raise NotAMember(error) from exc
        if error in GONE:
            return None
        raise
    except (OSError, TimeoutError) as exc:  # URLError, a reset, a timeout: after the reader's retries
        raise SlackUnanswered(str(exc)) from exc
    for message in replies.get("messages", []):
        if message.get("ts") == ts:
            return message
    return None


def permalink(client: WebClient, channel: str, ts: str) -> str | None:
    try:
        return reader(client).chat_getPermalink(channel=channel, message_ts=ts).get("permalink")
    except Exception:
        return None


SLACK_MARKUP = re.compile(r"<([^<>\n]+)>")


def _readable(match: re.Match[str]) -> str:
    target, _, label = match.group(1).partition("|")
    if target.startswith("@"):  # a person: their name when Slack sent one
        return "@" + (label.lstrip("@") or target[1:])
    if target.startswith("#"):  # a channel, quoted: a bare `#ml` would be read as a tag and leave the text
        return f"“#{label.lstrip('#') or target[1:]}”"
    if target.startswith("!subteam^"):
        return label or "@" + target.removeprefix("!subteam^")
    if target.startswith("!"):  # @here, @channel, a date: the words, no longer a broadcast
        return label or "@" + target[1:].split("^")[0]
    if target.startswith("mailto:"):
        return label or target.removeprefix("mailto:")
    return f"{label} ({target})" if label and label != target else target


def typed_text(message: dict[str, Any]) -> str:
    """What the person wrote, as words: Slack sends mentions, channels and links as markup
    (`<@U1>`, `<#C1|ml>`, `<https://x|the doc>`) and `&`, `<`, `>` escaped. A decision shows its text
    escaped everywhere, so markup kept as it was would read `<https://x|the doc>`; it is stored as
    `@U1`, `“#ml”`, `the doc (https://x)`."""
    return unescape(SLACK_MARKUP.sub(_readable, message.get("text", ""))).strip()


__all__ = ["NotAMember", "SlackUnanswered", "fetch", "permalink", "typed_text", "unescape"]
