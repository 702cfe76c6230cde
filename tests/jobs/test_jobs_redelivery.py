"""The job ledger around every job, run through a real Celery task (eagerly, in this process): a
repeat of an answered job stays silent, a redelivery after a dead worker answers on the same
audit row, and each reply is delivered once even when the job runs again."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from labmate import outbox
from models import audit, jobs
from models.base import utcnow
from models.db import session_scope
from tasks.jobs import DUPLICATE, JobTask, run_job

KEY = "cmd:1234.abcd"
CALLS: list[str] = []


@pytest.fixture(autouse=True)
def _no_calls_yet() -> None:
    CALLS.clear()


@pytest.fixture(scope="module")
def summary_job():
    from tasks.app import celery_app

    @celery_app().task(name="labmate.test.summary", base=JobTask, bind=True, shared=False)
    def job(self, reply_to: dict[str, Any], audit_id: int | None = None) -> str:
        def work() -> list[tuple[str, dict[str, Any]]]:
            CALLS.append(self.request.id)
            return [("working", {"what": "the answer"})]

        return run_job(self, "summary", work, reply_to, audit_id)

    return job


def _reply_to() -> dict[str, Any]:
    command = {"user": "U1", "channel": "C1", "source": "slack", "verb": "summary", "text": "summary x",
               "ack_ms": 0.4, "idempotency_key": KEY}
    return {"user": "U1", "channel": "C1", "source": "slack", "thread_ts": None, "response_url": None,
            "session": "", "audit": command}


def _rows() -> list[tuple[str, str | None]]:
    with session_scope() as session:
        return [(e.outcome, e.idempotency_key) for e in reversed(audit.latest(session, limit=100))]


def test_first_run_answers_audits_and_ends_the_job(recorder, summary_job) -> None:
    job_id = str(uuid.uuid4())
    assert summary_job.apply(kwargs={"reply_to": _reply_to()}, task_id=job_id).get(disable_sync_subtasks=False) == "ok"
    assert recorder.delivered == [("working", {"what": "the answer"}, f"{job_id}/0")]
    assert _rows() == [("ok", KEY)]
    with session_scope() as session:
        record = jobs.get(session, key=job_id)
        assert record is not None and (record.state, record.attempts) == ("done", 1)


def test_a_repeat_of_an_answered_job_is_silent(recorder, summary_job) -> None:
    job_id = str(uuid.uuid4())
    summary_job.apply(kwargs={"reply_to": _reply_to()}, task_id=job_id)
    assert summary_job.apply(kwargs={"reply_to": _reply_to()}, task_id=job_id).get(disable_sync_subtasks=False) == DUPLICATE
    assert len(recorder.delivered) == 1 and CALLS == [job_id]
    assert _rows() == [("ok", KEY)]


def test_a_redelivery_after_a_dead_worker_answers_on_the_same_row(recorder, summary_job) -> None:
    job_id = str(uuid.uuid4())
    with session_scope() as session:  # what the first worker wrote before it died: claimed, audited, silent since
        claim = jobs.claim(session, key=job_id, task="labmate.test.summary", kwargs={}, worker="dead:1")
        assert claim.status == "owned"
        audit_id = audit.record(session, user="U1", channel="C1", source="slack", verb="summary", text="summary x",
                                outcome="running", duration_ms=0.4, idempotency_key=KEY)
        jobs.set_audit(session, key=job_id, audit_id=audit_id)
        session.execute(jobs.JobRecord.__table__.update().values(heartbeat_at=utcnow() - timedelta(minutes=1)))
    assert summary_job.apply(kwargs={"reply_to": _reply_to()}, task_id=job_id).get(disable_sync_subtasks=False) == "ok"
    assert recorder.delivered == [("working", {"what": "the answer"}, f"{job_id}/0")]
    assert _rows() == [("ok", KEY)]
    with session_scope() as session:
        assert jobs.get(session, key=job_id).attempts == 2


def test_a_job_another_live_worker_runs_is_left_to_it(recorder, summary_job) -> None:
    job_id = str(uuid.uuid4())
    with session_scope() as session:
        jobs.claim(session, key=job_id, task="labmate.test.summary", kwargs={}, worker="alive:1")
    with session_scope() as session:
        again = jobs.claim(session, key=job_id, task="labmate.test.summary", kwargs={}, worker="other:2")
    assert again.status == "busy"
    assert CALLS == [] and recorder.delivered == []


def test_replies_computed_once_are_reused_after_a_failed_delivery(recorder, summary_job) -> None:
    """A retry after Slack refused the reply delivers the stored answer: the work isn't done twice."""
    job_id = str(uuid.uuid4())

    class Flaky(type(recorder)):  # the conftest's Recorder, refusing its first delivery
        def __init__(self) -> None:
            super().__init__()
            self.refusals = 1

        def deliver(self, reply_to, template, context, *, key=None, final=True):
            if self.refusals:
                self.refusals -= 1
                raise outbox.TransientDeliveryError("Slack answered 500")
            return super().deliver(reply_to, template, context, key=key, final=final)

    flaky = Flaky()
    outbox.install(flaky)
    result = summary_job.apply(kwargs={"reply_to": _reply_to()}, task_id=job_id)  # eager: retried at once
    assert result.get(disable_sync_subtasks=False) == "ok"
    assert CALLS == [job_id]
    assert [t for t, _, _ in flaky.delivered] == ["working"]
