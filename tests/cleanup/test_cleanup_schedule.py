"""The beat schedule names the clean-up's two jobs, and workers know them by those names."""

from __future__ import annotations

from celery.schedules import crontab


def test_beat_runs_the_daily_proposals_and_the_purge(lab_home) -> None:
    from tasks.app import TASK_MODULES, celery_app

    assert "tasks.cleanup.jobs" in TASK_MODULES
    app = celery_app()
    entries = {v["task"]: v["schedule"] for v in app.conf.beat_schedule.values()}
    assert entries["labmate.cleanup.daily"] == crontab(hour=7, minute=5)
    assert isinstance(entries["labmate.cleanup.purge"], crontab)
    app.loader.import_default_modules()
    import tasks.cleanup.jobs  # noqa: F401  (what a worker imports through `include`)

    for name in ("labmate.cleanup.daily", "labmate.cleanup.purge", "labmate.cleanup.scan", "labmate.cleanup.answer",
                 "labmate.cleanup.card"):
        assert name in app.tasks, name


def test_the_daily_proposals_go_out_when_labmate_toml_says(lab_home, tmp_path, monkeypatch) -> None:
    from labmate.settings import get_settings
    from tasks.app import make_app

    config = tmp_path / "labmate.toml"
    config.write_text('[cleanup]\ndaily_at = "18:30"\n')
    monkeypatch.setenv("LABMATE_CONFIG", str(config))
    get_settings.cache_clear()
    try:
        entries = {v["task"]: v["schedule"] for v in make_app(get_settings()).conf.beat_schedule.values()}
        assert entries["labmate.cleanup.daily"] == crontab(hour=18, minute=30)
    finally:
        get_settings.cache_clear()
