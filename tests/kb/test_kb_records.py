"""The audit trail and idempotency keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from models import audit, idempotency
from models.db import session_scope
from models.errors import Conflict


def _record(session, **overrides) -> int:
    """audit.record returns the new row's id."""
    values = {
        "user": "U1",
        "channel": "C1",
        "source": "slack",
        "verb": "decide",
        "text": "decide ship it",
        "outcome": "queued",
        "duration_ms": 12.5,
    }
    values.update(overrides)
    return audit.record(session, **values)


def test_audit_record_then_set_outcome(kb_url):
    with session_scope(kb_url) as s:
        event_id = _record(s, detail={"task": "check_links"})
    with session_scope(kb_url) as s:
        audit.set_outcome(s, event_id=event_id, outcome="error", error_id="E-0badcafe")
    with session_scope(kb_url) as s:
        (event,) = audit.latest(s)
        assert event.id == event_id
        assert (event.user, event.channel, event.source, event.verb) == ("U1", "C1", "slack", "decide")
        assert (event.outcome, event.error_id) == ("error", "E-0badcafe")
        assert event.duration_ms == pytest.approx(12.5)
        assert event.detail == {"task": "check_links"}
        assert event.at is not None


def test_set_outcome_keeps_an_earlier_error_id_and_ignores_unknown_rows(kb_url):
    with session_scope(kb_url) as s:
        event_id = _record(s, outcome="error", error_id="E-11111111")
        audit.set_outcome(s, event_id=event_id, outcome="error")
        audit.set_outcome(s, event_id=event_id + 100, outcome="ok")
    with session_scope(kb_url) as s:
        (event,) = audit.latest(s)
        assert event.error_id == "E-11111111"


def test_audit_text_is_capped_and_latest_is_newest_first(kb_url):
    with session_scope(kb_url) as s:
        first = _record(s, text="x" * (audit.TEXT_CAP + 500))
        second = _record(s, verb="decisions", outcome="ok")
    with session_scope(kb_url) as s:
        rows = audit.latest(s, limit=5)
        assert [r.id for r in rows] == [second, first]
        assert len(rows[1].text) == audit.TEXT_CAP
        assert [r.id for r in audit.latest(s, limit=1)] == [second]


def test_idempotency_claim_once_then_seen(kb_url):
    with session_scope(kb_url) as s:
        assert not seen(s, "slack:T1:abc")
        idempotency.claim(s, key="slack:T1:abc")
    with session_scope(kb_url) as s:
        assert seen(s, "slack:T1:abc")
        assert not seen(s, "slack:T1:abd")


def seen(session, key: str) -> bool:
    from sqlalchemy import select

    from models.idempotency import IdempotencyKey

    return session.scalar(select(IdempotencyKey.key).where(IdempotencyKey.key == key)) is not None


def test_idempotency_claim_twice_is_a_conflict_at_commit(kb_url):
    with session_scope(kb_url) as s:
        idempotency.claim(s, key="retry-1")
    with pytest.raises(Conflict), session_scope(kb_url) as s:
        idempotency.claim(s, key="retry-1")


def test_concurrent_claims_one_wins(kb_url):
    """Two requests claim one key; the second gets Conflict, not a second claim (the key's uniqueness
    decides, not a read before the write)."""
    first, second = session_scope(kb_url), session_scope(kb_url)
    s1, s2 = first.__enter__(), second.__enter__()
    idempotency.claim(s1, key="race")
    first.__exit__(None, None, None)
    with pytest.raises(Conflict):
        try:
            idempotency.claim(s2, key="race")
        except BaseException as exc:
            if not second.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            second.__exit__(None, None, None)
    with session_scope(kb_url) as s:
        assert seen(s, "race")


def test_prune_removes_only_old_keys(kb_url):
    from models.idempotency import IdempotencyKey

    with session_scope(kb_url) as s:
        idempotency.claim(s, key="old")
        idempotency.claim(s, key="new")
        s.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old")
            .values(created_at=datetime.now(UTC) - timedelta(days=3))
        )
    with session_scope(kb_url) as s:
        assert idempotency.prune(s) == 1
    with session_scope(kb_url) as s:
        assert not seen(s, "old")
        assert seen(s, "new")
