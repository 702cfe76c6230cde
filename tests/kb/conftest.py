"""The knowledge-base tests run every case on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def kb_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty knowledge base: the test's SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return request.getfixturevalue("migrated")
    return request.getfixturevalue("postgres_url")
