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


def configure_logging(level: str = "INFO") -> None:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "celery", "kombu", "urllib3", "slack_bolt", "slack_sdk", "mlflow"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
