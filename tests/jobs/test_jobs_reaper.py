"""The reaper on a real knowledge base: what it sends, re-sends and gives up, and the claim rules it
relies on. (The reaper against killed worker processes is in tests/faults/.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from models import audit, jobs
from models.base import utcnow
from models.db import session_scope
from tasks.maintenance import reap

REPLY_TO = {"user": "U1", "channel": "C1", "source": "slack", "thread_ts": None, "response_url": None, "session": ""}


@pytest.fixture
def told(recorder):
    return recorder


def _job(key: str, *, state: str, heartbeat_age_s: float | None = None, rescues: int = 0, audit_id: int | None = None,
         sent: bool = True, age_s: float = 60.0, source: str = "slack") -> None:
    now = utcnow()
    with session_scope() as session:
        jobs.add_queued(session, key=key, task="labmate.decisions.check_links",
                        kwargs={"decision_id": 1, "reply_to": {**REPLY_TO, "source": source}, "audit_id": audit_id},
                        audit_id=audit_id)
        values: dict[str, Any] = {"state": state, "rescues": rescues, "created_at": now - timedelta(seconds=age_s),
                                  "enqueued_at": now - timedelta(seconds=age_s) if sent else None}
        if heartbeat_age_s is not None:
            values["heartbeat_at"] = now - timedelta(seconds=heartbeat_age_s)
        session.execute(jobs.JobRecord.__table__.update().where(jobs.JobRecord.key == key).values(**values))


def _state(key: str) -> tuple[str, int, bool]:
    with session_scope() as session:
        record = jobs.get(session, key=key)
        assert record is not None
        return record.state, record.rescues, record.enqueued_at is not None


def test_a_stored_job_that_was_never_sent_is_sent(told) -> None:
    _job("unsent", state="queued", sent=False, age_s=30)
    _job("fresh", state="queued", sent=False, age_s=1)  # its command may still be sending it
    done = reap()
    assert done.sent == ["unsent"]
    assert _state("unsent") == ("queued", 0, True)
    assert _state("fresh") == ("queued", 0, False)


def test_a_job_whose_heartbeat_stopped_is_handed_on(told) -> None:
    _job("dead", state="running", heartbeat_age_s=60)
    _job("alive", state="running", heartbeat_age_s=1)
    done = reap()
    assert done.resent == ["dead"]
    assert _state("dead") == ("queued", 1, True)
    assert _state("alive")[:2] == ("running", 0)


def test_a_job_that_keeps_dying_is_given_up_and_the_user_told(told) -> None:
    with session_scope() as session:
        audit_id = audit.record(session, user="U1", channel="C1", source="slack", verb="decide", text="decide x",
                                outcome="queued", duration_ms=1.0)
    _job("doomed", state="running", heartbeat_age_s=60, rescues=jobs.MAX_RESCUES, audit_id=audit_id)
    done = reap()
    assert done.given_up == ["doomed"]
    assert _state("doomed")[0] == "failed"
    ((template, context, key),) = told.delivered
    assert key == "doomed/given-up"
    assert template == "error" and "its worker stopped 4 times" in context["message"]
    with session_scope() as session:
        row = audit.get(session, event_id=audit_id)
        assert (row.outcome, row.error_id) == ("error", context["error_id"])


def test_an_undelivered_job_is_sent_again_at_its_retry_time_for_a_day(told) -> None:
    """Slack refused its reply for a while (retry_at set): sent again, not as a rescue. Refused for good
    (no retry_at), not yet due, or from a command more than a day old: left alone."""
    now = utcnow()
    for key, retry_in_s, age_s in (("due", -1, 600), ("not-yet", 60, 600), ("for-good", None, 600),
                                   ("too-old", -1, 2 * 86400)):
        _job(key, state="undelivered", age_s=age_s)
        with session_scope() as session:
            retry_at = None if retry_in_s is None else now + timedelta(seconds=retry_in_s)
            session.execute(jobs.JobRecord.__table__.update().where(jobs.JobRecord.key == key).values(retry_at=retry_at))
    done = reap()
    assert (done.late, done.resent, done.given_up) == (["due"], [], [])
    assert _state("due") == ("queued", 0, True)
    assert [_state(k)[0] for k in ("not-yet", "for-good", "too-old")] == ["undelivered"] * 3
    assert told.delivered == []


def test_a_terminal_job_from_a_process_that_is_gone_is_closed_not_rerun(told) -> None:
    _job("orphan", state="running", heartbeat_age_s=60, source="shell")
    assert reap().given_up == ["orphan"]
    assert told.delivered == []  # nobody to tell: the terminal went with its process


def test_claim_rules(migrated: str) -> None:
    with session_scope() as session:
        assert jobs.claim(session, key="k", task="t", kwargs={}, worker="a").status == "owned"
        assert jobs.claim(session, key="k", task="t", kwargs={}, worker="b").status == "busy"
        # the job's own Celery retry takes over a row its last execution left running
        assert jobs.claim(session, key="k", task="t", kwargs={}, worker="c", retry=True).status == "owned"
        jobs.finish(session, key="k", state="done")
        assert jobs.claim(session, key="k", task="t", kwargs={}, worker="d", retry=True).status == "ended"


def test_only_the_jobs_a_worker_says_it_is_executing_count_as_still_run() -> None:
    from tasks.maintenance import active_keys

    replies = [
        {"celery@a": {"j1": ["active", {"id": "j1"}], "j2": ["reserved", {"id": "j2"}]}},
        {"celery@a": {"j3": ("active", {})}},  # a second worker with the same node name
        {"celerybeat@a": {"error": "KeyError('query_task')"}},
        {"celery@b": {}},
    ]
    assert active_keys(replies) == {"j1", "j3"}


@pytest.mark.parametrize("task", ["tasks.maintenance:reap_task", "tasks.watch.jobs:digest_due_task",
                                  "tasks.experiments.jobs:sync_index_task", "tasks.maintenance:prune_idempotency_keys_task"])
def test_a_beat_task_with_the_knowledge_base_down_logs_one_line_and_waits_for_its_next_tick(
    lab_home, monkeypatch, caplog, tmp_path, task: str
) -> None:
    """Celery logged a traceback for each of them at every tick of a PostgreSQL outage (the reaper every few
    seconds); the outage is expected and documented, and the next tick does the work."""
    import importlib
    import logging

    from labmate.settings import reset_settings

    monkeypatch.setenv("LABMATE_DATABASE_URL", "postgresql://labmate:pw@127.0.0.1:1/labmate")
    (tmp_path / "labmate.toml").write_text('[[digest.channels]]\nchannel = "CDIGEST"\nat = "00:00"\n')  # one is due
    reset_settings()
    module, name = task.split(":")
    with caplog.at_level(logging.WARNING):
        assert getattr(importlib.import_module(module), name)() is None
    [line] = [r for r in caplog.records if "skipped until its next tick" in r.getMessage()]
    assert "the knowledge base is unavailable" in line.getMessage() and "pw" not in line.getMessage()
    assert line.exc_info is None
