"""Where replies go, as seen from the jobs: `deliver(reply_to, template, context, key=…)`.

Jobs (in `tasks/`) sit below the chat fronts and may not import them, so the front that
starts a worker installs the delivery (`bot.post.Router`) here. A reply is a template name
and a plain context; the delivery renders it for Slack or for the terminal.

A `key` names the message: the first delivery under a key posts it, a later one edits that
message in place (a card), and the same content under the same key is not posted twice (a
redelivered or retried job). Without a key every delivery is a new message.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A reply could not be delivered."""


class TransientDeliveryError(DeliveryError):
    """Slack was busy, rate limited, slow or unreachable: try again later (after `retry_after` s)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Slack refused the reply for a reason a retry won't change (no access, bad token, bad blocks)."""


class Delivery(Protocol):
    def deliver(
        self, reply_to: dict[str, Any], template: str, context: dict[str, Any], *, key: str | None = None, final: bool = True
    ) -> str | None: ...


_delivery: Delivery | None = None


def install(delivery: Delivery) -> None:
    global _delivery
    _delivery = delivery


def installed() -> Delivery | None:
    return _delivery


def reaches_slack() -> bool:
    """False when this process's delivery has no Slack token (a worker started without SLACK_BOT_TOKEN): its
    Slack replies are dropped with a warning, and a job's answer is recorded as undelivered instead."""
    return bool(getattr(_delivery, "reaches_slack", True))


def deliver(
    reply_to: dict[str, Any], template: str, context: dict[str, Any], *, key: str | None = None, final: bool = True
) -> str | None:
    """Post (or, under a known key, edit) a reply; returns the message's id (Slack ts) when there is one.

    `final=False` marks an intermediate state of a changing message: it may be skipped to respect
    Slack's rate limits (the next one carries the newer state). Raises TransientDeliveryError or
    PermanentDeliveryError when Slack doesn't take it.
    """
    if _delivery is None:
        raise RuntimeError("no delivery installed: start workers with `labmate worker`")
    return _delivery.deliver(reply_to, template, context, key=key, final=final)
