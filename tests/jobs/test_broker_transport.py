"""The Redis transport labmate selects: one redis-py client per channel, messages still delivered."""

from __future__ import annotations

import pytest

from labmate.settings import reset_settings


@pytest.fixture
def redis_app(redis_url: str, monkeypatch: pytest.MonkeyPatch):
    import redis

    from tasks.app import celery_app, reset

    redis.Redis.from_url(redis_url).flushdb()
    monkeypatch.setenv("LABMATE_BROKER_URL", redis_url)
    reset_settings()
    reset()
    yield celery_app()
    reset()
    redis.Redis.from_url(redis_url).flushdb()


def test_redis_brokers_use_the_shared_client_transport(redis_app) -> None:
    from tasks.broker import Transport

    with redis_app.connection_for_write() as connection:
        assert connection.transport_cls == "tasks.broker:Transport"
        assert isinstance(connection.transport, Transport)


def test_publishes_share_one_client_and_all_arrive(redis_app, redis_url: str) -> None:
    import redis

    with redis_app.connection_for_write() as connection, redis_app.producer_or_acquire() as producer:
        channel = connection.default_channel
        clients = set()
        for i in range(5):
            redis_app.send_task("labmate.test.noop", kwargs={"i": i}, producer=producer)
            with producer.channel.conn_or_acquire() as client:
                clients.add(id(client))
        assert len(clients) == 1
        assert channel is not None
    assert redis.Redis.from_url(redis_url).llen("default") == 5
