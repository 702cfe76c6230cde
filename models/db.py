"""Engines, the managed session, and migrations.

Services take a Session; callers own the transaction through `session_scope()`, which
commits or rolls back and turns driver errors into the knowledge base's own exceptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.errors import Conflict, KnowledgeBaseError, Unavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling would BEGIN lazily and break SAVEPOINTs; SQLAlchemy
    # emits BEGIN itself (_sqlite_begin), as its SQLite documentation recommends.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    """A transaction that reads and then writes takes the write lock at BEGIN (`write=True`): in WAL
    mode a reader that later writes after another writer committed fails at once with "database is
    locked", while BEGIN IMMEDIATE waits its turn (busy_timeout)."""
    immediate = connection.get_execution_options().get("labmate_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def postgres_connect_args(settings: Any) -> dict[str, Any]:
    """Bounded waits: a refused, black-holed or hung database fails a command in seconds, never hangs it."""
    return {
        "connect_timeout": max(2, round(settings.database_connect_timeout)),
        "tcp_user_timeout": int(settings.database_io_timeout * 1000),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 2,
        "keepalives_count": 3,
    }


def _postgres_session_settings(statement_timeout_ms: int) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        # Not in connect_args["options"]: that would replace the URL's own `options` (a search_path).
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {statement_timeout_ms}")
            # timestamptz values come back in the session's zone: UTC, whatever the server or PGTZ says
            cursor.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()

    return apply


_pre_ping = True


def fail_fast() -> None:
    """For a process that must answer within a deadline (the Slack-facing one): no ping before each
    checkout. A ping on a connection whose network went dark waits out the I/O timeout before the
    reconnect waits out the connect timeout, which together overrun Slack's three seconds. Without
    it, the first command after a database restart meets a dead connection, which invalidates the
    pool; dispatch runs it once more on a fresh one (`stale_connection`). Call before the first
    engine is made."""
    global _pre_ping
    _pre_ping = False


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    from labmate.settings import get_settings

    settings = get_settings()
    engine = create_engine(
        url,
        pool_pre_ping=_pre_ping,
        pool_recycle=600,
        pool_size=10,
        max_overflow=20,
        pool_timeout=settings.database_connect_timeout,
        connect_args=postgres_connect_args(settings),
    )
    event.listen(engine, "connect", _postgres_session_settings(int(settings.database_statement_timeout * 1000)))
    return engine


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


@lru_cache(maxsize=16)
def _sessions(url: str, write: bool = False) -> sessionmaker[Session]:
    engine = engine_for(url)
    return sessionmaker(engine.execution_options(labmate_write=True) if write else engine, expire_on_commit=False)


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
def session_scope(url: str | None = None, *, write: bool = False) -> Iterator[Session]:
    """`write=True` for a transaction that reads and then writes rows others may write too (never
    the shared session of `reading()`)."""
    shared = _reading.get()
    if shared is not None and url is None and not write:
        yield shared
        return
    session = _sessions(url or default_url(), write)()
    with _translated(session):
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()


class LazySession:
    """A Session made on first use: commands answered by a job alone never open one."""

    def __init__(self, url: str, write: bool = False) -> None:
        self._url = url
        self._write = write
        self.session: Session | None = None

    def __getattr__(self, name: str) -> Any:
        if self.session is None:
            self.session = _sessions(self._url, self._write)()
        return getattr(self.session, name)


@contextmanager
def lazy_session_scope(url: str | None = None, *, write: bool = False) -> Iterator[LazySession]:
    """`session_scope` for a session that may never be used; commits only what was opened."""
    lazy = LazySession(url or default_url(), write)
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
        if _unreachable(exc):
            raise Unavailable(str(exc.orig)) from exc
        raise KnowledgeBaseError(str(exc.orig)) from exc
    except SQLAlchemyError as exc:
        session.rollback()
        raise KnowledgeBaseError(str(exc)) from exc
    finally:
        session.close()


SQLITE_UNAVAILABLE = ("database is locked", "database table is locked", "unable to open database", "disk i/o error")


def stale_connection(exc: BaseException) -> bool:
    """The pooled connection was dead when used (the database restarted since, or its network cut it):
    SQLAlchemy has invalidated the pool, so the same work on a fresh connection may well succeed."""
    cause = exc.__cause__
    return isinstance(cause, DBAPIError) and bool(cause.connection_invalidated)


def _unreachable(exc: OperationalError) -> bool:
    """Could not reach (or wait for) the database, as opposed to a broken schema or query."""
    if exc.connection_invalidated:
        return True
    module = type(exc.orig).__module__
    if module.startswith("sqlite3"):
        return str(exc.orig).lower().startswith(SQLITE_UNAVAILABLE)
    return True  # psycopg's OperationalError: connection refused, lost, timed out, or a statement timeout


def alembic_config(url: str) -> Any:
    import sys

    from alembic.config import Config

    # Config's default stdout is whatever sys.stdout was when alembic was first imported: a capture
    # a test (or a CLI runner) had open then, and closed since.
    config = Config(stdout=sys.stdout)
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


MIGRATION_LOCK_ID = 0x6C61626D  # "labm": the PostgreSQL advisory lock that serialises migrations


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply migrations; run on start by every labmate process and by `labmate db upgrade`.

    Safe to run from many processes at once (compose starts bot, worker and beat together):
    on PostgreSQL the migration holds a transaction-level advisory lock, on SQLite an exclusive
    lock on a file beside the database, so the others wait and then find the schema at head.
    A database already at head is recognised without importing Alembic (every CLI start pays it).
    """
    url = url or default_url()
    if revision == "head" and _at_head(url):
        return
    from alembic import command

    engine = engine_for(url)
    # SQLite has no advisory locks, and its own write lock doesn't cover Alembic's read-then-write of
    # the version table: a file lock beside the database serialises migrations there.
    with sqlite_file_lock(url, ".migrate-lock"), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # A migration and the wait for another one run as long as they need: the statement
            # timeout bounds a command's queries, and would stop a long index build half-way.
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    # No pooled connection outlives the migration: a server forks its workers after this.
    engine.dispose()


def script_heads() -> set[str]:
    """The head revisions of the migration scripts, read from their `revision`/`down_revision`
    lines (Alembic's ScriptDirectory costs a third of a second to import; a test checks both agree)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = re.search(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = re.search(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", text, re.M)
        if down:
            parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    return revisions - parents


def _at_head(url: str) -> bool:
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except SQLAlchemyError:
        return False  # no version table yet: a fresh database
    finally:
        engine.dispose()  # as after a migration: no pooled connection crosses a fork
    heads = script_heads()
    return bool(heads) and {row[0] for row in rows} == heads


@contextmanager
def sqlite_file_lock(url: str, suffix: str) -> Iterator[None]:
    """An exclusive lock on the file `<database><suffix>` beside an SQLite database, held across
    processes; nothing for another kind of database."""
    path = url.split("///", 1)[-1].split("?", 1)[0] if url.startswith("sqlite") else ""
    if not path or path == ":memory:":
        yield
        return
    import fcntl

    lock_path = Path(path).with_name(Path(path).name + suffix)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_revision(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url or default_url()).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
