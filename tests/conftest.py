"""Shared fixtures: an isolated LABMATE_HOME per test, and real PostgreSQL / Redis when reachable.

Tests that need PostgreSQL or Redis skip with a reason when the service is absent, except
under LABMATE_REQUIRE_SERVICES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from labmate.settings import reset_settings

POSTGRES_URL = os.environ.get("LABMATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LABMATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CLEARED = (
    "LABMATE_HOME",
    "LABMATE_DATABASE_URL",
    "LABMATE_BROKER_URL",
    "LABMATE_RESULT_BACKEND",
    "MLFLOW_TRACKING_URI",
    "LABMATE_MLFLOW_UI_URL",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "LABMATE_SLACK_API_URL",
    "LABMATE_COMMAND",
    "LABMATE_CONFIG",
)


SERVICE_FIXTURES = {"redis_url": "redis", "make_lab": "redis", "postgres_url": "postgres"}


def pytest_configure(config: pytest.Config) -> None:
    """Compile the project's modules once, before any test starts a process. The suite starts a few
    hundred `labmate` processes (CLIs, workers, served apps); where PYTHONDONTWRITEBYTECODE is set,
    as on our CI machine, each of them would otherwise compile the same ~160 modules from source,
    0.3-0.6 s of CPU apiece. Only the xdist controller (or a plain run) does it."""
    if hasattr(config, "workerinput"):
        return
    import compileall

    root = Path(__file__).resolve().parent.parent
    for package in ("bot", "labmate", "models", "tasks"):
        compileall.compile_dir(root / package, quiet=2)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` starts two pytest processes per core: the sum of the tests' own times is about three
    times their CPU time, because most of it is spent waiting on the real processes they start
    (workers, served apps, Slack stalls, reapers). With three per two cores the CPUs were busy 74% of
    the run; with four, 82% and the run a minute shorter (docs/performance.md)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    return max(2, len(os.sched_getaffinity(0)) * 2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses a service's fixture carries its marker, so `-m "not redis"` and
    `-m "not postgres"` select what a machine without them can run."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in SERVICE_FIXTURES.items():
            if fixture in names:
                item.add_marker(getattr(pytest.mark, marker))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgres" in callspec.params.values():
            item.add_marker(pytest.mark.postgres)
    workers = getattr(config, "workerinput", {}).get("workercount", 0)
    if workers > 1:
        items[:] = slow_first(items, workers)


def slow_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The order `--dist worksteal` hands out: each pytest process first gets one contiguous share of
    the list, and an idle one later takes the back half of the longest queue left. Tests marked slow
    (a minute of real processes, some of them) go to the front of the shares, spread over all of
    them, so they start early everywhere and the run ends on short tests that spread evenly; in
    collection order two docs tests of over a minute each started last and ran a minute past the
    others. Tests sharing a module-scoped fixture (a served stack, the demo) stay together, or each
    process would build it. The same order in every process, as xdist requires."""
    groups: dict[str, list[pytest.Item]] = {}
    rest: list[pytest.Item] = []
    for item in items:
        if not item.get_closest_marker("slow"):
            rest.append(item)
            continue
        shared = any(d.scope in ("module", "class", "package")
                     for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs)
        groups.setdefault(item.nodeid.split("::")[0] if shared else item.nodeid, []).append(item)
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for group in groups.values():
        min(shares, key=len).extend(group)
    left = len(items)
    ordered: list[pytest.Item] = []
    for k, share in enumerate(shares):
        size = left // (workers - k)  # what xdist's first distribution sends this process
        take = max(0, size - len(share))
        ordered += share + rest[:take]
        rest = rest[take:]
        left -= len(share) + take
    return ordered + rest


def require_services() -> bool:
    return os.environ.get("LABMATE_REQUIRE_SERVICES") == "1"


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


_RUNNING: list[pytest.Item] = []
_MARKERS = {"Redis": "redis", "PostgreSQL": "postgres"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _RUNNING[:] = [item]


def service_or_skip(name: str, url: str) -> str:
    """The service's URL, or skip (fail under LABMATE_REQUIRE_SERVICES=1) when it isn't running. A test
    that reaches a service without its marker fails, so `-m "not redis"` can trust the markers."""
    marker = _MARKERS[name]
    if _RUNNING and _RUNNING[0].get_closest_marker(marker) is None:
        pytest.fail(f"{_RUNNING[0].nodeid} uses {name} without @pytest.mark.{marker} (-m 'not {marker}' would select it)")
    if _reachable(url):
        return url
    reason = f"{name} is not reachable at {url}"
    if require_services():
        pytest.fail(f"{reason}, and LABMATE_REQUIRE_SERVICES=1 says it must be")
    pytest.skip(reason)


def stop_embedded_worker() -> None:
    """A test's in-process worker must not run its leftover jobs against the next test's home."""
    import sys

    if "tasks.embedded" in sys.modules:
        from tasks import app
        from tasks.embedded import stop_worker

        stop_worker()
        app.reset()
    if "kombu.transport.memory" in sys.modules:
        # The embedded broker's queues are a class attribute of kombu's memory channel, shared by every
        # app in the process: a job still queued when the test ended ran on the next test's worker, in
        # its home (an audit row and a reply that weren't that test's).
        from kombu.transport import memory

        memory.Channel.queues.clear()


def reset_process_state() -> None:
    from bot.post import reset_router

    reset_settings()
    reset_router()


@pytest.fixture(autouse=True)
def lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own home (SQLite knowledge base, MLflow store) and fresh settings."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "labmate-home"
    monkeypatch.setenv("LABMATE_HOME", str(home))
    monkeypatch.setenv("LABMATE_CONFIG", str(tmp_path / "labmate.toml"))
    (tmp_path / "labmate.toml").touch()  # named by LABMATE_CONFIG, so it must exist; tests write into it
    monkeypatch.chdir(tmp_path)
    reset_process_state()
    yield home
    stop_embedded_worker()
    reset_process_state()


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory built once per test run and shared by every pytest process (xdist's file-lock
    pattern): the first process to take the lock builds it, the others wait for it. For templates
    that tests copy or only read: an MLflow schema or a registered model costs seconds to make, and
    each of the three pytest processes made its own."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each process's own
    shared = root / "built-once"
    shared.mkdir(exist_ok=True)
    target, done = shared / name, shared / f"{name}.done"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            build(target)
            done.touch()
    return target


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite knowledge base at head, migrated once per run: Alembic takes about a second per fresh
    database on a 2-core machine, and hundreds of tests each want one."""

    def build(folder: Path) -> None:
        from sqlalchemy import create_engine

        from models.db import upgrade

        upgrade(f"sqlite:///{folder / 'labmate.db'}")
        engine = create_engine(f"sqlite:///{folder / 'labmate.db'}")
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()

    return built_once(tmp_path_factory, "kb-template", build) / "labmate.db"


@pytest.fixture
def migrated(lab_home: Path, migrated_template: Path) -> str:
    """The test's SQLite knowledge base, at head (a copy of the session's template); returns its URL."""
    from labmate.bootstrap import prepare
    from labmate.settings import get_settings

    url = get_settings().database_url
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_template, database)
    prepare()  # finds it at head, as any labmate process would
    return url


@contextmanager
def fresh_postgres_schema() -> Iterator[str]:
    """A fresh, migrated schema in the test PostgreSQL database, dropped on exit.

    Whoever started processes on it stops them before leaving: a worker still writing while the
    schema is dropped can deadlock the DROP (seen in CI)."""
    base = service_or_skip("PostgreSQL", POSTGRES_URL)
    from sqlalchemy import create_engine, text

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base}?options=-csearch_path%3D{schema}"
    from models.db import upgrade

    upgrade(url)
    try:
        yield url
    finally:
        from models.db import engine_for

        engine_for(url).dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_schema() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return service_or_skip("Redis", REDIS_URL)
