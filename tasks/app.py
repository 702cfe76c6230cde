"""The Celery app: broker, queues, routes and reliability settings, built from Settings.

Task modules are listed in `include` and imported only by workers: the Slack-facing process
enqueues by name (`send_task`) and never imports mlflow.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from labmate.settings import Settings, get_settings

TASK_MODULES = ["tasks.decision_links", "tasks.maintenance", "tasks.experiments.jobs"]
QUEUES = ("default", "launch", "regress")
BEAT_SCHEDULE = {
    "prune-idempotency-keys": {
        "task": "labmate.maintenance.prune_idempotency_keys",
        "schedule": crontab(minute=17, hour=3),
    },
    "prune-charts": {
        "task": "labmate.maintenance.prune_charts",
        "schedule": crontab(minute=47),
    },
    "sync-run-index": {
        "task": "labmate.experiments.sync_index",
        "schedule": 60.0,
        "options": {"expires": 120},
    },
}
ROUTES = {
    "labmate.launch.*": {"queue": "launch"},
    "labmate.regress.*": {"queue": "regress"},
}


def make_app(settings: Settings) -> Celery:
    app = Celery("labmate", set_as_current=True)
    backend = settings.result_backend or ("cache+memory://" if settings.embedded_broker else settings.broker_url)
    app.conf.update(
        broker_url="memory://localhost/" if settings.embedded_broker else settings.broker_url,
        result_backend=backend,
        result_expires=3600,
        include=TASK_MODULES,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="default",
        task_routes=ROUTES,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_track_started=True,
        task_acks_late=False,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=300,
        task_time_limit=330,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
        beat_schedule=BEAT_SCHEDULE,
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport = "tasks.broker:Transport"
    return app


@lru_cache(maxsize=1)
def celery_app() -> Celery:
    app = make_app(get_settings())
    app.set_default()
    return app


def reset() -> None:
    celery_app.cache_clear()
