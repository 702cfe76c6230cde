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
