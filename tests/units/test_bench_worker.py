"""The benchmarks' worker delivers through the same interface as the bot's workers: when the outbox
gained `key` and `final`, its delivery kept the old signature and every benchmark job failed to answer."""

from __future__ import annotations

import inspect

from bench.bench_worker import RedisDelivery
from labmate.outbox import Delivery


def test_the_bench_delivery_takes_what_the_outbox_passes() -> None:
    ours = inspect.signature(RedisDelivery.deliver)
    expected = inspect.signature(Delivery.deliver)
    assert list(ours.parameters) == list(expected.parameters)
    assert all(ours.parameters[name].kind == p.kind for name, p in expected.parameters.items())
