"""Answers racing on one proposal, on SQLite and PostgreSQL: many people (or one impatient one) clicking
Delete at once move each run once, and the delete job run again (its worker died, its message came twice)
deletes each run once, writes one audit row per run and logs one decision."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from bot import dispatch
from bot.origin import Origin
from labmate.settings import reset_settings
from models import audit, decision
from models import cleanup as proposals
from models.db import session_scope
from tasks.cleanup import work


@pytest.fixture(params=["sqlite", "postgres"])
def kb(request: pytest.FixtureRequest, lab, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("LABMATE_DATABASE_URL", url)
        reset_settings()
        with session_scope() as session:  # the decision that protects `decided`, in this knowledge base too
            decision.create(session, new=decision.NewDecision(
                text="keep the decided run", author="UADMIN", links=(decision.LinkRef("run", lab.runs["decided"]),)))
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr("tasks.client.enqueue", lambda name, kwargs, **kw: sent.append((name, kwargs)) or "job")
    return request.param


def test_clicks_at_once_delete_once(lab, kb: str) -> None:
    work.scan_job("sales-agent", False, {"user": "alice", "source": "shell", "session": "s"}, "scan-1")
    with session_scope() as session:
        [alice] = [p for p in session.query(proposals.Proposal).all() if p.owner == "alice"]
        label, pid = alice.label, alice.id

    def click(n: int) -> Any:
        who = "alice" if n % 2 else "UADMIN"
        return dispatch.handle(f"delete {label}", Origin(user=who, channel="C0LAB", source="slack",
                                                         idempotency_key=f"act:{n}"))

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(click, range(8)))
    winners = [r for r in replies if r.template == "cleanup_answering"]
    assert len(winners) == 1, [r.context for r in replies]
    losers = [str(r.context.get("message", "")) for r in replies if r is not winners[0]]
    assert all(m.startswith("Nothing to delete: those runs were already being deleted by ") for m in losers), losers

    for _ in range(2):  # the job, and its redelivery
        work.answer_job([pid], "delete", "alice", {"user": "alice", "source": "slack", "channel": "C0LAB"})
    with session_scope() as session:
        assert {c.state for c in proposals.candidates(session, proposal_id=pid)} == {proposals.DELETED}
        rows = session.execute(select(audit.AUDIT_EVENTS).where(audit.AUDIT_EVENTS.c.verb == "cleanup.delete")).all()
        assert len(rows) == 2, [(r.text, r.at) for r in rows]
        assert session.query(decision.Decision).filter(decision.Decision.text.like("cleaned %")).count() == 1
    assert lab.client.get_run(lab.runs["died-early"]).info.lifecycle_stage == "deleted"


def test_two_scans_at_once_propose_each_run_once(lab, kb: str) -> None:
    reply_to = {"user": "alice", "source": "shell", "session": "s"}
    work.scan_job("sales-agent", True, reply_to, "dry")  # the index is built once; the race is the proposals'
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda n: _scan(reply_to, n), range(2)))
    assert outcomes == ["ok", "ok"], outcomes
    with session_scope() as session:
        runs = [c.run_id for c in session.query(proposals.Candidate).all()]
    assert len(runs) == len(set(runs)) == 5


def _scan(reply_to: dict[str, Any], n: int) -> str:
    from models.errors import Conflict

    try:
        work.scan_job("sales-agent", False, reply_to, f"scan-{n}")
    except Conflict:
        return "conflict"
    return "ok"


def test_two_answers_on_one_proposal_each_carry_out_their_own_runs(lab, kb: str, monkeypatch) -> None:
    """Alice deletes one run and an admin another of her proposal before either job ran: each job deletes,
    counts and audits its own command's run (the first did both, said "2", logged a bulk decision in
    Alice's name, and the admin's said "0")."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr("tasks.client.enqueue", lambda name, kwargs, **kw: sent.append(kwargs) or "job")
    work.scan_job("sales-agent", False, {"user": "alice", "source": "shell", "session": "s"}, "scan-1")
    with session_scope() as session:
        [alice] = [p for p in session.query(proposals.Proposal).all() if p.owner == "alice"]
        proposed = {c.run_id for c in proposals.candidates(session, proposal_id=alice.id)}
    assert {lab.runs["died-early"], lab.runs["died-early-2"]} <= proposed  # one proposal, both runs
    for n, (who, run) in enumerate((("alice", "died-early"), ("UADMIN", "died-early-2"))):
        reply = dispatch.handle(f"delete {lab.runs[run]}", Origin(user=who, channel="C0LAB", source="slack",
                                                                idempotency_key=f"act:{n}"))
        assert reply.template == "cleanup_answering" and reply.context["count"] == 1, reply.context
    assert len(sent) == 2
    answers = [work.answer_job(kw["proposal_ids"], kw["verb"], kw["by"], kw["reply_to"], kw["candidate_ids"])[0][1]
               for kw in sent]
    assert [a["done"] for a in answers] == [1, 1] and [a["decision"] for a in answers] == [None, None]
    with session_scope() as session:
        rows = session.execute(select(audit.AUDIT_EVENTS).where(audit.AUDIT_EVENTS.c.verb == "cleanup.delete")).all()
        assert sorted((r.user, r.detail["run"]) for r in rows) == sorted(
            [("alice", lab.runs["died-early"]), ("UADMIN", lab.runs["died-early-2"])])
        assert session.query(decision.Decision).filter(decision.Decision.text.like("cleaned %")).count() == 0


def test_restore_says_where_the_run_is_when_it_is_not_deleted(lab, kb: str) -> None:
    """`restore` of a run still being deleted, already being restored, or restored: said so, not "no run the
    clean-up deleted has the id"."""
    work.scan_job("sales-agent", False, {"user": "alice", "source": "shell", "session": "s"}, "scan-1")
    with session_scope() as session:
        [alice] = [p for p in session.query(proposals.Proposal).all() if p.owner == "alice"]
        pid = alice.id
    run = lab.runs["died-early"]
    keys = iter(range(100))

    def say(text: str) -> Any:
        return dispatch.handle(text, Origin(user="alice", channel="C0LAB", source="slack", idempotency_key=f"act:{next(keys)}"))

    assert say(f"delete {run}").template == "cleanup_answering"
    early = say(f"restore {run}")
    assert early.context["message"] == "Nothing to restore yet: that run is still being deleted by alice."
    work.answer_job([pid], "delete", "alice", {"source": "slack", "channel": "C0LAB"})
    assert say(f"restore {run}").template == "cleanup_answering"
    twice = say(f"restore {run}")
    assert twice.context["message"] == "Nothing to restore: that run was already being restored by alice."
    work.answer_job([pid], "restore", "alice", {"source": "slack", "channel": "C0LAB"})
    after = say(f"restore {run}")
    assert after.context["message"] == "Nothing to restore: that run was already restored by alice."
    assert lab.client.get_run(run).info.lifecycle_stage == "active"

