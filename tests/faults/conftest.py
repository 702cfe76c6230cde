"""Fixtures for the fault tests: a deployment per test (its own home, Redis key prefix and, when
asked, PostgreSQL schema), proxies in front of the services it should lose, and clean-up of
exactly what it created."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import FakeSlack, Lab, TcpProxy, iptables_available, lab_env, unique_prefix

from tests.conftest import fresh_postgres_schema

pytestmark = [pytest.mark.slow]


@dataclass
class Setup:
    lab: Lab
    db_url: str
    """The knowledge base as the test reads it (never through a proxy)."""
    redis_url: str
    prefix: str
    redis_proxy: TcpProxy | None = None
    db_proxy: TcpProxy | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def audit(self, **where: Any) -> list[Any]:
        from sqlalchemy import select

        from models.audit import AUDIT_EVENTS
        from models.db import session_scope

        with session_scope(self.db_url) as session:
            query = select(AUDIT_EVENTS).order_by(AUDIT_EVENTS.c.id)
            for key, value in where.items():
                query = query.where(AUDIT_EVENTS.c[key] == value)
            return list(session.execute(query))

    def decisions(self) -> list[Any]:
        from sqlalchemy import select

        from models.db import session_scope
        from models.decision import Decision

        with session_scope(self.db_url) as session:
            rows = list(session.scalars(select(Decision).order_by(Decision.id)))
            for row in rows:
                _ = (row.tags, row.links)
            session.expunge_all()
            return rows

    def jobs(self) -> list[Any]:
        from sqlalchemy import select

        from models.db import session_scope
        from models.jobs import JobRecord

        with session_scope(self.db_url) as session:
            rows = list(session.scalars(select(JobRecord).order_by(JobRecord.created_at)))
            session.expunge_all()
            return rows


@pytest.fixture
def make_lab(tmp_path: Path, redis_url: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Setup]]:
    made: list[Setup] = []
    fakes: list[FakeSlack] = []
    schemas = ExitStack()

    def make(*, postgres: bool = False, proxy_redis: bool = False, proxy_db: bool = False, **extra_env: str) -> Setup:
        fake = FakeSlack(token="xoxb-test", retry_after=0).start()
        fakes.append(fake)
        home = tmp_path / f"lab{len(made)}"
        home.mkdir()
        if postgres:  # not the postgres_url fixture: pytest would drop its schema before the lab stops
            db_url = schemas.enter_context(fresh_postgres_schema())
        else:  # at head already, like postgres_url's schema: its processes start without Alembic
            shutil.copyfile(request.getfixturevalue("migrated_template"), home / "labmate.db")
            db_url = f"sqlite:///{home / 'labmate.db'}"
        redis_proxy = db_proxy = None
        broker = redis_url
        if proxy_redis:
            redis_proxy = TcpProxy.to(redis_url, 6379).start()
            broker = redis_proxy.url(redis_url)
        served_db = db_url
        if proxy_db:
            assert postgres, "the database proxy is for PostgreSQL"
            db_proxy = TcpProxy.to(db_url, 5432).start()
            served_db = db_proxy.url(db_url)
        prefix = unique_prefix()
        env = lab_env(home, fake, broker_url=broker, database_url=served_db, prefix=prefix, **extra_env)
        setup = Setup(Lab(home, fake, env), db_url, redis_url, prefix, redis_proxy, db_proxy)
        made.append(setup)
        return setup

    yield make
    import redis

    with schemas:  # dropped last, once nothing of the lab can still write to them
        client = redis.Redis.from_url(redis_url)
        for setup in made:
            setup.lab.stop()
            for proxy in (setup.redis_proxy, setup.db_proxy):
                if proxy is not None:
                    proxy.close()
            for key in client.scan_iter(f"{setup.prefix}*", count=1000):
                client.delete(key)
        client.close()
        for fake in fakes:
            fake.stop()


@pytest.fixture
def blackholes() -> None:
    if not iptables_available():
        import os

        reason = "dropping packets needs root and iptables (apt-get install iptables)"
        if os.environ.get("LABMATE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
