"""Proposal cards that a beat job changes (Bolt in process, the fake Slack, the embedded worker, a real MLflow
store): the purge and the daily scan change runs of proposals nobody is answering, and their messages say so."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slack"))

from slackreq import poll

from models import cleanup as proposals
from models.base import utcnow
from models.db import session_scope
from tasks.cleanup import work
from tests.cleanup.helpers import proposal_for, states, texts
from tests.slack.conftest import bolt_app, fake_slack, inprocess, slack_env  # noqa: F401

pytestmark = [pytest.mark.slow]


def test_the_purge_edits_the_cards_and_audits_a_run_restored_in_mlflow(lab, inprocess) -> None:  # noqa: F811
    """A run restored in MLflow during the grace period was marked restored with no audit row, and the card
    still showed it, and the run removed for good, as deleted and restorable."""
    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0ALICE", channel="C0LAB")
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0ALICE", timeout=30)
    alice = proposal_for("alice")
    slack.block_action(action_id="lab:delete:0", value=alice.label, user="U0ALICE", channel="U0ALICE")
    poll(lambda: set(states(alice.id).values()) == {"deleted"}, timeout=30, what="alice's runs deleted")
    fake.wait_for("chat.update", where=lambda c: c.params["channel"] == "U0ALICE" and "All answered" in texts(c),
                  timeout=30)
    lab.client.restore_run(lab.runs["died-early"])
    with session_scope() as session:
        session.execute(update(proposals.Candidate).where(proposals.Candidate.proposal_id == alice.id)
                        .values(deleted_at=utcnow() - timedelta(days=8)))  # fmt: skip
    fake.rate_limit("chat.update", 1)  # the edit is a job's delivery: Slack's 429 is waited out

    assert work.purge() == 1
    assert states(alice.id) == {"died-early": "restored", "died-early-2": "purged"}
    [restored] = inprocess.audit(verb="cleanup.restore")
    assert restored.user == "beat" and lab.runs["died-early"] in restored.text and "restored in MLflow" in restored.text
    assert len(inprocess.audit(verb="cleanup.purge")) == 1
    [edited] = fake.wait_for("chat.update", where=lambda c: c.ok and c.params["channel"] == "U0ALICE"
                             and "restored in MLflow" in texts(c), timeout=60)
    shown = texts(edited)
    assert "*restored*" in shown and "*removed for good*" in shown and "*deleted*" not in shown, shown
    assert any(c.status == 429 for c in fake.calls("chat.update"))


def test_the_older_card_says_its_snoozed_runs_were_proposed_again(lab, inprocess) -> None:  # noqa: F811
    """docs/cleanup.md: once the snooze ends, the older proposal's card says so. Its row became `reproposed`,
    and its message still said snoozed."""
    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0ALICE", channel="C0LAB")
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0ALICE", timeout=30)
    old = proposal_for("alice")
    slack.block_action(action_id="lab:snooze:2", value=old.label, user="U0ALICE", channel="U0ALICE")
    poll(lambda: set(states(old.id).values()) == {"snoozed"}, timeout=30, what="alice's runs snoozed")
    fake.wait_for("chat.update", where=lambda c: c.params["channel"] == "U0ALICE" and "*snoozed*" in texts(c), timeout=30)
    with session_scope() as session:
        session.execute(update(proposals.Candidate).where(proposals.Candidate.proposal_id == old.id)
                        .values(snoozed_until=utcnow() - timedelta(minutes=1)))  # fmt: skip

    made = work.daily()
    with session_scope() as session:
        [newer] = [pid for pid in made if proposals.get(session, proposal_id=pid).owner == "alice"]  # type: ignore[union-attr]
    assert set(states(old.id).values()) == {"reproposed"}
    [edited] = fake.wait_for("chat.update", where=lambda c: c.params["channel"] == "U0ALICE"
                             and f"proposed again in P{newer}" in texts(c), timeout=60)
    assert "*snoozed*" not in texts(edited) and "*proposed again*" in texts(edited)
    fake.wait_for("chat.postMessage", 2, where=lambda c: c.params["channel"] == "U0ALICE", timeout=30)  # the newer card
