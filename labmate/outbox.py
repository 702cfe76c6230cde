"""Where replies go, as seen from the jobs: `deliver(reply_to, template, context)`.

Jobs (in `tasks/`) sit below the chat fronts and may not import them, so the front that
starts a worker installs the delivery (`bot.post.Router`) here. A reply is a template name
and a plain context; the delivery renders it for Slack or for the terminal.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Delivery(Protocol):
    def deliver(self, reply_to: dict[str, Any], template: str, context: dict[str, Any]) -> None: ...


_delivery: Delivery | None = None


def install(delivery: Delivery) -> None:
    global _delivery
    _delivery = delivery


def installed() -> Delivery | None:
    return _delivery


def deliver(reply_to: dict[str, Any], template: str, context: dict[str, Any]) -> None:
    if _delivery is None:
        raise RuntimeError("no delivery installed: start workers with `labmate worker`")
    _delivery.deliver(reply_to, template, context)
