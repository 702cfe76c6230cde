"""`labmate db upgrade` from several processes at once on a fresh database, as compose starts
bot, worker and beat together: every process succeeds and the schema is migrated once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from models.db import current_revision, engine_for, script_heads
from tests.conftest import POSTGRES_URL, service_or_skip

PROCESSES = 3
LABMATE = [sys.executable, "-m", "labmate.cli"]


def _upgrade_at_once(url: str, home: Path) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "LABMATE_DATABASE_URL": url, "LABMATE_HOME": str(home)}
    procs = [
        subprocess.Popen([*LABMATE, "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _check(results: list[subprocess.CompletedProcess[str]], url: str) -> None:
    (head,) = script_heads()
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert f"knowledge base at revision {head}" in result.stdout
    assert current_revision(url) == head
    with engine_for(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert {"decisions", "audit_events", "idempotency_keys"} <= set(inspect(conn).get_table_names())
    engine_for(url).dispose()


@pytest.fixture
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database (not just a schema): compose's knowledge base starts like this."""
    base = service_or_skip("PostgreSQL", POSTGRES_URL)
    name = "labmate_migrate_" + uuid.uuid4().hex[:10]
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = base.rsplit("/", 1)[0] + "/" + name
    yield url
    engine_for(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_parallel_upgrades_on_a_fresh_postgres_database(fresh_postgres_database, tmp_path):
    _check(_upgrade_at_once(fresh_postgres_database, tmp_path / "home"), fresh_postgres_database)


@pytest.mark.slow
def test_parallel_upgrades_on_a_fresh_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'kb' / 'labmate.db'}"
    _check(_upgrade_at_once(url, tmp_path / "home"), url)


def test_script_heads_agree_with_alembic():
    from alembic.script import ScriptDirectory

    from models.db import alembic_config

    assert script_heads() == set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def test_an_up_to_date_database_is_not_migrated_again(migrated, monkeypatch):
    """The fast path: a database at head never reaches Alembic's upgrade command."""
    import alembic.command

    from models.db import upgrade

    def refuse(*_args, **_kwargs):
        raise AssertionError("upgrade ran on a database already at head")

    monkeypatch.setattr(alembic.command, "upgrade", refuse)
    upgrade(migrated)


@pytest.mark.postgres
@pytest.mark.slow
def test_an_upgrade_waits_out_a_migration_longer_than_the_statement_timeout(fresh_postgres_database, tmp_path):
    """A process that starts while another migrates waits for it, however long the migration takes:
    the statement timeout bounds a command's queries, not the wait for the migration lock."""
    from models.db import MIGRATION_LOCK_ID

    holder = create_engine(fresh_postgres_database.replace("postgresql://", "postgresql+psycopg://"))
    env = {**os.environ, "LABMATE_DATABASE_URL": fresh_postgres_database, "LABMATE_HOME": str(tmp_path / "home"),
           "LABMATE_DATABASE_STATEMENT_TIMEOUT": "1"}
    with holder.connect() as conn, conn.begin():
        conn.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        waiting = subprocess.Popen([*LABMATE, "db", "upgrade"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        with holder.connect() as probe:  # until the upgrade really waits on the lock (its start varies)
            deadline = time.monotonic() + 60
            waits = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
                         "(SELECT oid FROM pg_database WHERE datname = current_database())")  # this test's database only
            while not probe.execute(waits).scalar():
                assert waiting.poll() is None and time.monotonic() < deadline, waiting.communicate()
                time.sleep(0.1)
        try:
            waiting.wait(timeout=3)  # three statement timeouts of waiting
        except subprocess.TimeoutExpired:
            pass
        assert waiting.returncode is None, f"gave up while the lock was held: {waiting.stderr.read() if waiting.stderr else ''}"
    out, err = waiting.communicate(timeout=60)
    holder.dispose()
    _check([subprocess.CompletedProcess(waiting.args, waiting.returncode, out, err)], fresh_postgres_database)
