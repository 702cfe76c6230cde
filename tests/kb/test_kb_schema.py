"""Migrations and connection settings."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from models.db import alembic_config, current_revision, engine_for, upgrade


def _head(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def test_upgrade_twice_is_a_no_op_and_reaches_head(kb_url):
    tables_before = set(inspect(engine_for(kb_url)).get_table_names())
    upgrade(kb_url)
    upgrade(kb_url)
    assert current_revision(kb_url) == _head(kb_url)
    tables = set(inspect(engine_for(kb_url)).get_table_names())
    assert tables == tables_before
    assert {"decisions", "decision_tags", "decision_links", "audit_events", "idempotency_keys"} <= tables


def test_search_structures_exist_per_dialect(kb_url):
    engine = engine_for(kb_url)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            columns = {c["name"] for c in inspect(conn).get_columns("decisions")}
            assert "search" in columns
            assert "ix_decisions_search" in {i["name"] for i in inspect(conn).get_indexes("decisions")}
        else:
            names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')"))}
            assert {"decisions_fts", "decisions_ai", "decisions_ad", "decisions_au"} <= names


def test_fresh_database_is_at_head_after_one_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == _head(url)
    engine_for(url).dispose()


def test_sqlite_pragmas_on_every_connection(migrated):
    engine = engine_for(migrated)
    for _ in range(2):  # a new pooled connection gets them too
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        engine.dispose()


def test_sqlite_foreign_keys_are_enforced(migrated):
    import pytest

    from models.db import session_scope
    from models.decision import DecisionTag
    from models.errors import Conflict

    with pytest.raises(Conflict, match="FOREIGN KEY"), session_scope(migrated) as s:
        s.add(DecisionTag(decision_id=4242, tag="orphan"))


def test_model_links_stored_as_run_ids_get_their_name_and_version_back(tmp_path):
    """Before the link check kept a model link's ref, it stored the version's run id there (0010 repairs those)."""
    import json

    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0009")
    run = "3eb379be9ccb465bbc648bcbe7bf537f"
    with engine_for(url).begin() as conn:
        conn.execute(text("INSERT INTO decisions (id, text, author, channel, created_at) VALUES (1, 'ship', 'U1', 'C1', '2026-11-29')"))
        rows = [
            (1, "model", run, json.dumps({"name": "sales-agent", "version": "2", "run_id": run})),  # the bug's result
            (2, "model", "sales-agent@production", json.dumps({"name": "sales-agent", "version": "1"})),  # checked after the fix
            (3, "run", run, json.dumps({"run_id": run})),  # a run link is meant to hold the run id
        ]
        for link_id, kind, ref, detail in rows:
            conn.execute(text("INSERT INTO decision_links (id, decision_id, kind, ref, status, detail) "
                              "VALUES (:id, 1, :kind, :ref, 'ok', :detail)"),
                         {"id": link_id, "kind": kind, "ref": ref, "detail": detail})
    upgrade(url)
    with engine_for(url).connect() as conn:
        refs = conn.execute(text("SELECT ref FROM decision_links ORDER BY id")).scalars().all()
    assert refs == ["sales-agent/2", "sales-agent@production", run]
    engine_for(url).dispose()


def test_postgres_sessions_read_times_in_utc_whatever_the_client_zone(postgres_url, monkeypatch):
    """timestamptz comes back in the session's zone; PGTZ (or a server's `timezone`) would have made the
    decision log's "08:57 UTC" a Los Angeles time."""
    from datetime import UTC, datetime

    from models import decision as decisions
    from models.db import session_scope

    monkeypatch.setenv("PGTZ", "America/Los_Angeles")
    engine_for(postgres_url).dispose()  # new connections, under PGTZ
    with engine_for(postgres_url).connect() as conn:
        assert conn.execute(text("SHOW TimeZone")).scalar() == "UTC"
    before = datetime.now(UTC)
    with session_scope(postgres_url) as session:
        decision_id = decisions.create(session, new=decisions.NewDecision(text="ship it", author="U1")).id
    with session_scope(postgres_url) as session:
        created = decisions.get(session, decision_id=decision_id).created_at
    assert created.utcoffset().total_seconds() == 0 and abs((created - before).total_seconds()) < 60


def test_the_models_declare_the_schema_the_migrations_build(kb_url):
    """Tables declared with Core (the audit trail) and ORM classes alike: a column, a type, a null rule
    or an index that differs from what the migrations made would fail only at run time. Alembic's
    autogenerate sees the same (models/migrations/env.py uses the same metadata and filter), so it
    proposes nothing for a schema at head."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from models.schema import declared_metadata, include_object

    metadata = declared_metadata()
    with engine_for(kb_url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include_object})
        diff = compare_metadata(context, metadata)
        busy = {i["name"]: i for i in inspect(conn).get_indexes("cleanup_candidates")}["uq_cleanup_candidates_busy_run"]
    assert diff == []
    assert {"audit_events", "run_index_runs"} <= set(metadata.tables)
    # what the filter leaves to the migrations is there: one open clean-up proposal per run
    assert busy["unique"] and busy["column_names"] == ["store", "run_id"], busy


def test_autogenerate_proposes_nothing_for_a_schema_at_head(kb_url):
    """`alembic check` through the real env.py: it once imported only some model modules, and
    autogenerate proposed dropping every run index table and the full-text search."""
    from alembic import command

    command.check(alembic_config(kb_url))  # raises AutogenerateDiffsDetected with what it would do


def test_alembic_writes_to_the_stdout_of_now_not_of_its_first_import(tmp_path) -> None:
    """Alembic's Config defaults to sys.stdout as it was when alembic was first imported: under a test's
    capture, closed since, `alembic check` failed with "I/O operation on closed file" (order-dependent)."""
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import contextlib, io
buffer = io.StringIO()
with contextlib.redirect_stdout(buffer):
    import alembic.config
buffer.close()
from alembic import command
from models.db import alembic_config, upgrade
url = "sqlite:///{tmp_path / 'kb.db'}"
upgrade(url)
command.check(alembic_config(url))
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "No new upgrade operations detected." in done.stdout, done.stderr[-2000:]
