"""Engines, the managed session, and migrations.

Services take a Session; callers own the transaction through `session_scope()`, which
commits or rolls back and turns driver errors into the knowledge base's own exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.errors import Conflict, KnowledgeBaseError, Unavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


@lru_cache(maxsize=8)
def _sessions(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def default_url() -> str:
    from labmate.settings import get_settings

    return get_settings().database_url


_reading: ContextVar[Session | None] = ContextVar("labmate_reading_session", default=None)


@contextmanager
def reading() -> Iterator[Session]:
    """One session for a run of reads: every `session_scope()` inside it (default database) reuses
    it, so an answer made of ten small queries pays for one transaction, not ten (on PostgreSQL each
    BEGIN/COMMIT is a round trip). For reads only: writes keep their own `session_scope`."""
    with session_scope() as session:
        token = _reading.set(session)
        try:
            yield session
        finally:
            _reading.reset(token)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    shared = _reading.get()
    if shared is not None and url is None:
        yield shared
        return
    session = _sessions(url or default_url())()
    with _translated(session):
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()


class LazySession:
    """A Session made on first use: commands answered by a job alone never open one."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.session: Session | None = None

    def __getattr__(self, name: str) -> Any:
        if self.session is None:
            self.session = _sessions(self._url)()
        return getattr(self.session, name)


@contextmanager
def lazy_session_scope(url: str | None = None) -> Iterator[LazySession]:
    """`session_scope` for a session that may never be used; commits only what was opened."""
    lazy = LazySession(url or default_url())
    try:
        yield lazy
    except BaseException:
        if lazy.session is None:
            raise
        with _translated(lazy.session):
            lazy.session.rollback()
            raise
    if lazy.session is None:
        return
    with _translated(lazy.session):
        lazy.session.commit()


@contextmanager
def _translated(session: Session) -> Iterator[None]:
    try:
        yield
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(str(exc.orig)) from exc
    except OperationalError as exc:
        session.rollback()
        raise Unavailable(str(exc.orig)) from exc
    except SQLAlchemyError as exc:
        session.rollback()
        raise KnowledgeBaseError(str(exc)) from exc
    finally:
        session.close()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply migrations; run on start by every labmate process and by `labmate db upgrade`."""
    from alembic import command

    url = url or default_url()
    engine = engine_for(url)
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    # No pooled connection outlives the migration: a server forks its workers after this.
    engine.dispose()


def current_revision(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url or default_url()).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
