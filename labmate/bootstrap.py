"""What every labmate process does first: make the home, migrate the knowledge base."""

from __future__ import annotations

import logging
import os

from labmate.settings import get_settings


def prepare(*, migrate: bool = True) -> None:
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    if migrate:
        from models.db import upgrade

        upgrade(settings.database_url)


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
    for noisy in ("alembic", "celery", "kombu", "urllib3", "slack_bolt", "slack_sdk", "mlflow"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
