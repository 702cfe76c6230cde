"""Small agents for the regression engine's tests and benchmarks (same contract as real targets)."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

_calls = itertools.count()


def _last_user(messages: list[dict[str, str]]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def echo(messages):
    return _last_user(messages)


def deterministic(messages):
    """A tiny shop assistant; `deterministic_v2` differs on prices and refunds."""
    return _shop(messages, version=1)


def deterministic_v2(messages):
    return _shop(messages, version=2)


def _shop(messages: list[dict[str, str]], version: int) -> dict[str, Any]:
    text = _last_user(messages).lower()
    if "price" in text:
        price = 49 if version == 1 else 59
        return {"reply": f"The Pro plan costs {price} USD per month.", "intent": "pricing",
                "slots": {"plan": "pro", "price": price}}
    if "order" in text:
        return {"reply": "Your order number is A-1234. Anything else?", "intent": "order",
                "slots": {"order_id": "A-1234"}}
    if "status of" in text:
        order = text.rsplit(" ", 1)[-1].upper()
        return {"reply": f"Order {order} has shipped.", "intent": "order_status", "slots": {"order_id": order}}
    if "refund" in text:
        if version == 1:
            return {"reply": "Refunds are not possible.", "intent": "refund", "slots": {}}
        return {"reply": "You can get a refund within 30 days.", "intent": "refund", "slots": {}}
    turns = sum(m["role"] == "user" for m in messages)
    return {"reply": f"Hello! How can I help? (turn {turns})", "intent": "greeting", "slots": {}}


def flaky(messages):
    """Answers correctly on every other call: non-deterministic from the suite's point of view."""
    return "ok" if next(_calls) % 2 == 0 else "sorry, no idea"


def raising(messages):
    raise RuntimeError("agent exploded")


def hanging(messages):
    threading.Event().wait(3600)
    return "too late"


def slow(messages):
    time.sleep(0.05)
    return _last_user(messages)


def cpu_bound(messages):
    """Burns CPU for a few milliseconds, holding the GIL, like a small local model would."""
    total = 0
    for i in range(60_000):
        total += i * i % 7
    return f"{_last_user(messages)} [{total}]"


def list_output(messages):
    return [{"reply": _last_user(messages), "intent": "listed"}]


def bad_output(messages):
    return 42


def slow_on_second_turn(messages):
    if sum(m["role"] == "user" for m in messages) >= 2:
        threading.Event().wait(3600)
    return _last_user(messages)


def pid(messages):
    """The process that answered (the pool tests tell the parent from its workers)."""
    import os

    return str(os.getpid())


def pid_slow(messages):
    """The process that answered, after 20 ms of work."""
    import os

    time.sleep(0.02)
    return str(os.getpid())
