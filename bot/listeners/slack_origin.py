"""Slack payloads -> Origin (who, where, where replies go, and the key that dedupes retries)."""

from __future__ import annotations

from typing import Any

from bot.origin import EVENT_KEY, Origin


def from_command(body: dict[str, Any]) -> Origin:
    return Origin(
        user=body.get("user_id", ""),
        channel=body.get("channel_id", ""),
        channel_name=body.get("channel_name", ""),
        source="slack",
        response_url=body.get("response_url"),
        idempotency_key=f"cmd:{body['trigger_id']}" if body.get("trigger_id") else None,
    )


def from_event(body: dict[str, Any], event: dict[str, Any], *, key_suffix: str = "") -> Origin:
    ts = event.get("ts") or event.get("item", {}).get("ts")
    return Origin(
        user=event.get("user", ""),
        channel=event.get("channel") or event.get("item", {}).get("channel", ""),
        source="slack",
        thread_ts=event.get("thread_ts") or ts,
        idempotency_key=f"{EVENT_KEY}{body['event_id']}{key_suffix}" if body.get("event_id") else None,
    )
