"""Reading the Slack message a decision is logged from (reaction or shortcut)."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient

from bot.messages.mrkdwn import unescape


def fetch(client: WebClient, channel: str, ts: str) -> dict[str, Any] | None:
    history = client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1)
    for message in history.get("messages", []):
        if message.get("ts") == ts:
            return message
    replies = client.conversations_replies(channel=channel, ts=ts, latest=ts, inclusive=True, limit=1)
    for message in replies.get("messages", []):
        if message.get("ts") == ts:
            return message
    return None


def permalink(client: WebClient, channel: str, ts: str) -> str | None:
    try:
        return client.chat_getPermalink(channel=channel, message_ts=ts).get("permalink")
    except Exception:
        return None


def typed_text(message: dict[str, Any]) -> str:
    """Slack sends `&`, `<`, `>` escaped; the decision stores what the person typed."""
    return unescape(message.get("text", "")).strip()


__all__ = ["fetch", "permalink", "typed_text", "unescape"]
