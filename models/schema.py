"""The schema as the models declare it, for Alembic's autogenerate and the schema test: every
module's tables, and what only the migrations build, which no model declares (autogenerate would
otherwise propose dropping it): the full-text search (FTS5 tables on SQLite, a generated tsvector
column and its index on PostgreSQL) and the partial unique index on open clean-up candidates
(declaring it needs `postgresql_where`, which loads SQLAlchemy's PostgreSQL dialect everywhere)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

FTS_TABLES = "decisions_fts"
MIGRATION_ONLY_INDEXES = frozenset({"ix_decisions_search", "uq_cleanup_candidates_busy_run"})
MIGRATION_ONLY_COLUMNS = frozenset({("decisions", "search")})


def declared_metadata() -> MetaData:
    """Base.metadata with every model module imported (a table registers when its module loads)."""
    import importlib
    import pkgutil

    import models
    from models.base import Base

    for module in pkgutil.iter_modules(models.__path__):
        if module.name not in ("migrations", "schema"):
            importlib.import_module(f"models.{module.name}")
    return Base.metadata


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's `include_object` hook: leave out what only the migrations build."""
    if type_ == "table":
        return not (name or "").startswith(FTS_TABLES)
    if type_ == "index":
        return name not in MIGRATION_ONLY_INDEXES
    if type_ == "column":
        return (obj.table.name, name) not in MIGRATION_ONLY_COLUMNS
    return True
