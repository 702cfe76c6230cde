"""A job enqueued straight from the ack path claims its command's key when it starts: a repeat of
an answered command stays silent, a redelivery after a dead worker answers."""

from __future__ import annotations

from typing import Any

import pytest

from labmate import outbox
from models import audit, idempotency
from models.db import session_scope
from tasks.jobs import DUPLICATE, run_job

KEY = "cmd:1234.abcd"


class Recorder:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, dict[str, Any]]] = []

    def deliver(self, reply_to: dict[str, Any], template: str, context: dict[str, Any]) -> None:
        self.delivered.append((template, context))


@pytest.fixture
def recorder(migrated: str):
    previous = outbox.installed()
    recording = Recorder()
    outbox.install(recording)
    yield recording
    if previous is not None:
        outbox.install(previous)


def _reply_to() -> dict[str, Any]:
    command = {"user": "U1", "channel": "C1", "source": "slack", "verb": "summary", "text": "summary x",
               "ack_ms": 0.4, "idempotency_key": KEY}
    return {"user": "U1", "channel": "C1", "source": "slack", "thread_ts": None, "response_url": None,
            "session": "", "audit": command}


def _work() -> list[tuple[str, dict[str, Any]]]:
    return [("working", {"what": "the answer"})]


def _rows() -> list[tuple[str, str | None]]:
    with session_scope() as session:
        return [(e.outcome, e.idempotency_key) for e in session.query(audit.AuditEvent).order_by(audit.AuditEvent.id)]


def test_first_delivery_answers_and_audits(recorder: Recorder) -> None:
    assert run_job("summary", _work, _reply_to(), None) == "ok"
    assert recorder.delivered == [("working", {"what": "the answer"})]
    assert _rows() == [("ok", KEY)]


def test_a_repeat_of_an_answered_command_is_silent(recorder: Recorder) -> None:
    run_job("summary", _work, _reply_to(), None)
    assert run_job("summary", _work, _reply_to(), None) == DUPLICATE
    assert len(recorder.delivered) == 1
    assert _rows() == [("ok", KEY)]


def test_a_redelivery_after_a_dead_worker_answers_on_the_same_row(recorder: Recorder) -> None:
    with session_scope() as session:  # what the first worker wrote before it died
        idempotency.claim(session, key=KEY)
        audit.record(session, user="U1", channel="C1", source="slack", verb="summary", text="summary x",
                     outcome="running", duration_ms=0.4, idempotency_key=KEY)
    assert run_job("summary", _work, _reply_to(), None) == "ok"
    assert recorder.delivered == [("working", {"what": "the answer"})]
    assert _rows() == [("ok", KEY)]
