"""The reaper's per-task policy for jobs whose worker died mid-work: `resend` (what every other task
gets) or `fail`, whose `settle` runs in the transaction that gives the job up."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from models import jobs
from models.base import utcnow
from models.db import session_scope
from tasks import maintenance

TASK = "labmate.test.not_twice"


@pytest.fixture
def policy() -> Any:
    calls: list[tuple[str, str]] = []
    decision: dict[str, Any] = {"value": maintenance.FAIL}

    def settle(session: Session, job: jobs.JobRecord, why: str) -> list[str]:
        calls.append((job.key, why))
        if decision.get("explode"):
            raise RuntimeError("settling failed")
        return []

    maintenance.on_worker_lost(TASK, decide=lambda job: decision["value"], settle=settle)  # type: ignore[arg-type,return-value]
    yield calls, decision
    maintenance._policies.pop(TASK, None)


def orphan(*, replies: str | None = None) -> str:
    key = str(uuid.uuid4())
    with session_scope() as session:
        jobs.claim(session, key=key, task=TASK, kwargs={"reply_to": {"source": "slack", "channel": "C1"}}, worker="dead:1")
        if replies:
            jobs.save_replies(session, key=key, replies=replies)
        session.execute(jobs.JobRecord.__table__.update().where(jobs.JobRecord.key == key)
                        .values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    return key


def state(key: str) -> str:
    with session_scope() as session:
        return jobs.get(session, key=key).state


def test_fail_gives_the_job_up_once_and_settles_it(migrated: str, policy: Any) -> None:
    calls, _ = policy
    key = orphan()
    done = maintenance.reap()
    assert done.given_up == [key] and done.resent == []
    assert state(key) == jobs.FAILED
    assert calls == [(key, "its worker stopped while running it")]
    assert maintenance.reap().given_up == [] and len(calls) == 1


def test_a_job_whose_answer_is_stored_is_resent_whatever_its_policy(migrated: str, policy: Any, monkeypatch) -> None:
    """Its work is done; only the delivery is left, and delivering again is safe."""
    calls, _ = policy
    monkeypatch.setattr(maintenance, "_send", lambda job: True)
    key = orphan(replies='[[], "ok"]')
    assert maintenance.reap().resent == [key] and calls == []


def test_resend_is_the_default_behaviour(migrated: str, policy: Any, monkeypatch) -> None:
    calls, decision = policy
    decision["value"] = maintenance.RESEND
    monkeypatch.setattr(maintenance, "_send", lambda job: True)
    key = orphan()
    assert maintenance.reap().resent == [key] and calls == []
    assert state(key) == jobs.QUEUED


def test_a_settle_that_fails_leaves_the_job_for_the_next_reap(migrated: str, policy: Any) -> None:
    calls, decision = policy
    decision["explode"] = True
    key = orphan()
    assert maintenance.reap().given_up == []
    assert state(key) == jobs.RUNNING  # rolled back with the settle: nothing half-done
    decision["explode"] = False
    assert maintenance.reap().given_up == [key] and len(calls) == 2
