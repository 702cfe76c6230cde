"""Housekeeping the beat schedules: forget idempotency keys older than Slack's retry window, prune old charts."""

from __future__ import annotations

from celery import shared_task

from models import idempotency
from models.db import session_scope


def prune_idempotency_keys() -> int:
    with session_scope() as session:
        return idempotency.prune(session)


@shared_task(name="labmate.maintenance.prune_idempotency_keys", acks_late=True, reject_on_worker_lost=True)
def prune_idempotency_keys_task() -> int:
    return prune_idempotency_keys()


@shared_task(name="labmate.maintenance.prune_charts", acks_late=True, reject_on_worker_lost=True)
def prune_charts_task() -> int:
    """Charts older than a day go (answers reuse a chart while its content is the same)."""
    from tasks.experiments import charts

    return charts.prune()
