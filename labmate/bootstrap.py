"""What every labmate process does first: make the home, migrate the knowledge base."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labmate.settings import ConfigError, get_settings, mask_url


class Unreachable(ConfigError):
    """A service labmate is configured to use can't be reached as it starts: one line, exit 1 (a
    server's supervisor restarts it; a person fixes the URL or starts the service)."""


class UnusableHome(ConfigError):
    """LABMATE_HOME is a file, or a directory labmate can't create or write to: one line, exit 1."""


PERSON_WAITING_MLFLOW_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def person_waiting() -> None:
    """A person waits on this process (the terminal, `labmate regress`, `digest --now`, the pytest plugin):
    an MLflow server that doesn't answer is said within seconds, not after the client's default seven
    retries over about four minutes. MLflow's own variables, when set, still win."""
    for name, value in PERSON_WAITING_MLFLOW_HTTP.items():
        os.environ.setdefault(name, value)


def usable_home(home: Path, *, create: bool = True) -> Path:
    """The home, made if missing; UnusableHome if it can't be. `create=False` (doctor) only checks
    that it could be made: a missing home's nearest existing parent must be a directory one can write."""
    fix = "point LABMATE_HOME at a directory you can write to, or unset it for the default"
    if home.exists() and not home.is_dir():
        raise UnusableHome(f"LABMATE_HOME {home} is a file, not a directory: {fix}")
    if not home.exists() and not create:
        parent = next(p for p in home.parents if p.exists())
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            raise UnusableHome(f"labmate can't create its home {home}: {parent} is not a directory you can write to; {fix}")
        return home
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnusableHome(f"labmate can't create its home {home} ({exc.strerror}): {fix}") from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise UnusableHome(f"labmate can't write to its home {home}: {fix}")
    return home


def prepare(*, migrate: bool = True) -> None:
    settings = get_settings()
    usable_home(settings.home)
    if migrate:
        from sqlalchemy.exc import OperationalError

        from models.db import upgrade

        try:
            upgrade(settings.database_url)
        except OperationalError as exc:
            reason = " ".join(str(exc.orig).split())
            raise Unreachable(
                f"the knowledge base at {mask_url(settings.database_url)} can't be reached ({reason}): start the "
                "database, or point LABMATE_DATABASE_URL at one that runs"
            ) from None


def configure_logging(level: str = "INFO", *, to_file: bool = False) -> None:
    """Servers log to stderr; the terminal fronts log to $LABMATE_HOME/labmate.log, so a traceback
    lands in the log under its error id instead of in the conversation."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if to_file:
        home = get_settings().home
        try:
            home.mkdir(parents=True, exist_ok=True)
            logging.basicConfig(level=level, format=fmt, filename=str(home / "labmate.log"))
        except OSError:
            logging.basicConfig(level=level, format=fmt)
    else:
        logging.basicConfig(level=level, format=fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Masked(fmt))
    for noisy in ("alembic", "celery", "kombu", "urllib3", "slack_bolt", "slack_sdk", "mlflow"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class _Masked(logging.Formatter):
    """A password in a URL is masked in every log line, tracebacks included: a git clone's error quotes
    the project URI it fetched, a driver's error the database URL."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_url(super().format(record))


@contextmanager
def long_lived() -> Iterator[None]:
    """Around a server process's start-up: no cyclic collections while it imports and builds the app
    (every pass would walk the growing heap of modules; about 50 ms of a 0.7 s start), then the
    objects it made are frozen, since they live as long as the process: later collections, during
    requests, skip them. Only for a process that serves until it is stopped (a uWSGI worker,
    Socket Mode), not for one that imports the app and goes on (tests)."""
    import gc

    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
