"""The Celery app: broker, queues, routes, beat schedule and reliability settings, built from Settings.

Task modules are listed in `include` and imported only by workers: the Slack-facing process
enqueues by name (`send_task`) and never imports mlflow.

Reliability, in Celery's own terms:
- jobs are acknowledged after they ran (`acks_late`, tasks.jobs.JobTask), so a job whose worker
  process died is delivered again; a job whose whole worker died (its message then waits in Redis
  for the visibility timeout) is found by the reaper within `reap_every` + `job_stale_after` s through its
  stopped heartbeat and re-sent (tasks.maintenance);
- publishing gives up quickly when the broker is unreachable (the command says so at once and a
  stored job is sent by the reaper when the broker is back), instead of Celery's default retries.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from labmate.settings import Settings, get_settings

TASK_MODULES = [
    "tasks.decision_links",
    "tasks.maintenance",
    "tasks.replies",
    "tasks.experiments.jobs",
    "tasks.launches.jobs",
    "tasks.regressions.jobs",
    "tasks.cleanup.jobs",
    "tasks.watch.jobs",
]
QUEUES = ("default", "launch", "regress")
EMBEDDED_HOSTNAME = "embedded@labmate"
"""The worker a terminal process runs in itself (`tasks/embedded.py`)."""
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "prune-idempotency-keys": {
        "task": "labmate.maintenance.prune_idempotency_keys",
        "schedule": crontab(minute=17, hour=3),
    },
    "prune-charts": {
        "task": "labmate.maintenance.prune_charts",
        "schedule": crontab(minute=47),
    },
    "cleanup-purge": {
        "task": "labmate.cleanup.purge",
        "schedule": crontab(minute=35, hour=3),
        "options": {"expires": 3600},
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
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def make_app(settings: Settings) -> Celery:
    app = Celery("labmate", set_as_current=True)
    daily = settings.cleanup.daily_at.split(":")
    backend = settings.result_backend or ("cache+memory://" if settings.embedded_broker else settings.broker_url)
    transport: dict[str, Any] = {"visibility_timeout": 3600, "socket_connect_timeout": 2, "socket_timeout": 10}
    results: dict[str, Any] = {}
    if settings.broker_key_prefix:
        transport["global_keyprefix"] = settings.broker_key_prefix
        results["global_keyprefix"] = settings.broker_key_prefix
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
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=300,
        task_time_limit=330,
        task_publish_retry_policy=PUBLISH_RETRY,
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        result_backend_transport_options=results,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
        beat_schedule={
            "reap-jobs": {
                "task": "labmate.maintenance.reap",
                "schedule": settings.reap_every,
                "options": {"expires": settings.reap_every * 2},
            },
            "watch-poll": {
                "task": "labmate.watch.poll",
                "schedule": settings.watch_every,
                "options": {"expires": settings.watch_every},
            },
            "digest-due": {
                "task": "labmate.digest.due",
                "schedule": settings.watch_every,
                "options": {"expires": settings.watch_every},
            },
            "cleanup-proposals": {
                "task": "labmate.cleanup.daily",
                "schedule": crontab(hour=int(daily[0]), minute=int(daily[1])),
                "options": {"expires": 3600},
            },
            **BEAT_SCHEDULE,
        },
        # Beat answers `celery inspect ping` as celerybeat@<host> while its scheduler ticks:
        # `labmate health beat` (the compose health check) relies on it.
        beat_enable_remote_control=True,
    )
    return app


@lru_cache(maxsize=1)
def celery_app() -> Celery:
    app = make_app(get_settings())
    app.set_default()
    return app


def reset() -> None:
    celery_app.cache_clear()
