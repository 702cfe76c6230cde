"""A reply the bot process owes someone (a mention, a logged reaction), delivered by a worker so it
gets the jobs' retries, once-only delivery and audit, like every other reply."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks.jobs import JobTask, run_job

REPLY_TASK = "labmate.reply"


@shared_task(name=REPLY_TASK, base=JobTask, bind=True)
def reply_task(self: Task, template: str, context: dict[str, Any], reply_to: dict[str, Any], audit_id: int | None = None) -> str:
    return run_job(self, "reply", lambda: [(template, context)], reply_to, audit_id)
