"""The beat schedule names the clean-up's two jobs, and workers know them by those names."""

from __future__ import annotations

from celery.schedules import crontab


def test_beat_runs_the_daily_proposals_and_the_purge(lab_home) -> None:
    from tasks.app import BEAT_SCHEDULE, TASK_MODULES, celery_app

    assert "tasks.cleanup.jobs" in TASK_MODULES
    entries = {v["task"]: v["schedule"] for v in BEAT_SCHEDULE.values()}
    assert isinstance(entries["labmate.cleanup.daily"], crontab)
    assert isinstance(entries["labmate.cleanup.purge"], crontab)
    app = celery_app()
    app.loader.import_default_modules()
    import tasks.cleanup.jobs  # noqa: F401  (what a worker imports through `include`)

    for name in ("labmate.cleanup.daily", "labmate.cleanup.purge", "labmate.cleanup.scan", "labmate.cleanup.answer",
                 "labmate.cleanup.card"):
        assert name in app.tasks, name
