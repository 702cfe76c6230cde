"""Reading the Slack message a decision is logged from (reaction or shortcut)."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.messages.mrkdwn import unescape
from bot.slack_client import reader

# What Slack answers when the bot can't see the message (not a member, or no such message/thread).
UNREADABLE = ("not_in_channel", "channel_not_found", "thread_not_found", "message_not_found")


class SlackUnanswered(Exception):
    """Slack did not answer a read, even after the retries: the person is told to try again."""


def fetch(client: WebClient, channel: str, ts: str) -> dict[str, Any] | None:
    client = reader(client)
    try:
        history = client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1)
        for message in history.get("messages", []):
            if message.get("ts") == ts:
                return message
        replies = client.conversations_replies(channel=channel, ts=ts, latest=ts, inclusive=True, limit=1)
    except SlackApiError as exc:
        if exc.response is not None and exc.response.get("error") in UNREADABLE:
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


def typed_text(message: dict[str, Any]) -> str:
    """Slack sends `&`, `<`, `>` escaped; the decision stores what the person typed."""
    return unescape(message.get("text", "")).strip()


__all__ = ["SlackUnanswered", "fetch", "permalink", "typed_text", "unescape"]
