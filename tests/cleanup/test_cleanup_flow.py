"""`cleanup`, `delete`, `keep`, `snooze`, `restore` as the terminal runs them (dispatch, the embedded Celery
worker, a real MLflow store): proposals per owner, answers that act once, refusals that change nothing,
a run that changed since it was proposed skipped and said, the purge after the grace period."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.terminal import Outcome, run_one
from models import audit, decision
from models import cleanup as proposals
from models.base import utcnow
from models.db import session_scope
from tasks.cleanup import work
from tests.cleanup.helpers import proposal_for, states

pytestmark = [pytest.mark.slow]


def text(outcome: Outcome) -> str:
    return "\n".join(m.text + "\n" + json.dumps(m.blocks, ensure_ascii=False) for m in outcome.messages)


def audit_verbs() -> list[str]:
    with session_scope() as session:
        return [e.verb for e in reversed(audit.latest(session, limit=100))]


def test_dry_run_lists_by_owner_and_changes_nothing(lab) -> None:
    outcome = run_one("cleanup sales-agent --dry-run", user="alice", channel="C0LAB")
    shown = text(outcome)
    assert outcome.exit_code == 0, shown
    assert "*Dry run*: nothing was marked, proposed or changed." in shown
    assert "*sales-agent*: 5 stale runs (1 orphaned RUNNING run would be marked FAILED first)" in shown
    assert ("spared: 1 linked by a decision, 2 tagged `keep`, 1 behind a model version, 1 parent of a spared run, "
            "2 among the best") in shown
    assert "`alice` (2):" in shown and "`bob` (1):" in shown and "`U0CAROL` (2):" in shown
    assert lab.client.get_run(lab.runs["zombie"]).info.status == "RUNNING"
    with session_scope() as session:
        assert session.query(proposals.Proposal).count() == 0
    assert audit_verbs() == ["cleanup"]


def test_proposals_per_owner_then_delete_restore_keep_snooze(lab) -> None:
    outcome = run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    shown = text(outcome)
    assert outcome.exit_code == 0, shown
    cards = [m for m in outcome.messages if m.template == "cleanup_proposal"]
    assert len(cards) == 3
    alice = proposal_for("alice")
    assert alice.recipient == "U0ALICE" and states(alice.id) == {"died-early": "pending", "died-early-2": "pending"}
    assert proposal_for("U0CAROL").recipient == "U0CAROL" and proposal_for("bob").recipient == ""
    card = json.dumps(cards[0].blocks)
    assert ", 2 of your runs in *sales-agent* look stale. Delete them, keep them (tagged" in text(outcome)
    assert any("1 of your runs in *sales-agent* looks stale. Delete it, keep it (tagged `keep`" in json.dumps(m.blocks)
               for m in cards)
    for verb in ("delete", "keep", "snooze"):
        assert f'"action_id": "lab:{verb}:' in card
    assert audit_verbs().count("cleanup.proposal") == 3

    refused = run_one(f"delete {alice.label}", user="mallory", channel="C0LAB")
    assert refused.exit_code != 0
    assert f"{alice.label} is <@U0ALICE>'s: only they or an admin (<@UADMIN>) can `delete` its runs. Nothing was changed." \
        in text(refused)
    assert set(states(alice.id).values()) == {"pending"}

    deleted = run_one(f"delete {alice.label}", user="alice", channel="C0LAB")
    assert deleted.exit_code == 0, text(deleted)
    assert "Deleted 2 runs (MLflow soft delete)" in text(deleted)
    assert states(alice.id) == {"died-early": "deleted", "died-early-2": "deleted"}
    assert lab.client.get_run(lab.runs["died-early"]).info.lifecycle_stage == "deleted"
    assert audit_verbs().count("cleanup.delete") == 2
    with session_scope() as session:
        [logged] = session.query(decision.Decision).filter(decision.Decision.text.like("cleaned %")).all()
        assert logged.text == "cleaned 2 stale runs from sales-agent" and logged.author == "alice"
        assert sorted(link.ref for link in logged.links) == sorted([lab.runs["died-early"], lab.runs["died-early-2"]])

    found = run_one("decisions cleaned", user="alice", channel="C0LAB")
    assert "cleaned 2 stale runs from sales-agent" in text(found)

    again = run_one(f"delete {alice.label}", user="alice", channel="C0LAB")
    assert "Nothing to delete: those runs were already deleted by alice." in text(again)
    assert audit_verbs().count("cleanup.delete") == 2

    back = run_one(f"restore {lab.runs['died-early'][:10]}", user="alice", channel="C0LAB")
    assert back.exit_code == 0, text(back)
    assert lab.client.get_run(lab.runs["died-early"]).info.lifecycle_stage == "active"
    assert states(alice.id)["died-early"] == "restored"
    with session_scope() as session:  # brought back on purpose: not proposed again at the next scan, for a snooze's length
        [store] = {c.store for c in proposals.candidates(session, proposal_id=alice.id)}
        assert lab.runs["died-early"] in proposals.excluded(session, store=store, now=utcnow() + timedelta(days=6.9))
        assert lab.runs["died-early"] not in proposals.excluded(session, store=store, now=utcnow() + timedelta(days=7.1))

    carol = proposal_for("U0CAROL")
    kept = run_one(f"keep {lab.runs['old-finished']}", user="U0CAROL", channel="C0LAB")
    assert kept.exit_code == 0, text(kept)
    assert lab.client.get_run(lab.runs["old-finished"]).data.tags["keep"] == "true"
    snoozed = run_one(f"snooze {carol.label}", user="UADMIN", channel="C0LAB")
    assert snoozed.exit_code == 0, text(snoozed)
    assert states(carol.id) == {"old-finished": "kept", "tiny-fresh": "snoozed"}

    rescan = run_one("cleanup sales-agent --dry-run", user="alice", channel="C0LAB")
    shown = text(rescan)
    # carol's snoozed run is left out, her kept run is spared (tagged `keep`), the restored run is left out for a
    # snooze's length (the clean-up's own decision that links it spared it for good); bob's zombie, now FAILED
    # with a metric, matches no rule any more
    assert "*sales-agent*: 0 stale runs · 2 already proposed or snoozed · spared: 1 linked by a decision, 3 tagged `keep`, 1 behind a model version" in shown, shown
    with session_scope() as session:
        session.execute(update(proposals.Candidate).where(proposals.Candidate.state == "restored")
                        .values(snoozed_until=utcnow() - timedelta(minutes=1)))
    later = text(run_one("cleanup sales-agent --dry-run", user="alice", channel="C0LAB"))
    assert "*sales-agent*: 1 stale run · 1 already proposed or snoozed · spared: 1 linked by a decision, 3 tagged `keep`" in later, later


def test_restoring_a_half_answered_proposal_says_what_was_not_deleted(lab) -> None:
    """It listed the waiting run as "Already answered, left as they are: … (pending)"."""
    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    carol = proposal_for("U0CAROL")
    assert run_one(f"delete {lab.runs['old-finished']}", user="U0CAROL", channel="C0LAB").exit_code == 0
    restored = text(run_one(f"restore {carol.label}", user="U0CAROL", channel="C0LAB"))
    assert "Left as they are: tiny-fresh (not deleted: still waiting for an answer)." in restored, restored
    assert states(carol.id) == {"old-finished": "restored", "tiny-fresh": "pending"}


def test_a_run_that_changed_since_it_was_proposed_is_skipped_and_said(lab) -> None:
    from mlflow.entities import Metric

    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    carol = proposal_for("U0CAROL")
    lab.client.log_batch(lab.runs["tiny-fresh"], metrics=[Metric("val_f1", 0.31, int(utcnow().timestamp() * 1000), 2)])
    outcome = run_one(f"delete {carol.label}", user="U0CAROL", channel="C0LAB")
    shown = text(outcome)
    assert "Deleted 1 run (MLflow soft delete)" in shown, shown
    assert "*tiny-fresh*: it changed since it was proposed (now FINISHED)" in shown
    assert states(carol.id) == {"old-finished": "deleted", "tiny-fresh": "skipped"}
    assert lab.client.get_run(lab.runs["tiny-fresh"]).info.lifecycle_stage == "active"
    with session_scope() as session:  # one run is not a bulk deletion: no decision
        assert session.query(decision.Decision).filter(decision.Decision.text.like("cleaned %")).count() == 0


def test_after_the_grace_period_deleted_runs_are_removed_for_good(lab) -> None:
    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    alice = proposal_for("alice")
    artifacts = Path(lab.client.get_run(lab.runs["died-early"]).info.artifact_uri)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "model.txt").write_text("weights")
    run_one(f"delete {alice.label}", user="alice", channel="C0LAB")
    assert work.purge() == 0  # still within the grace period
    with session_scope() as session:
        session.execute(update(proposals.Candidate).where(proposals.Candidate.run_name == "died-early")
                        .values(deleted_at=utcnow() - timedelta(days=8)))
    assert work.purge() == 1
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        lab.client.get_run(lab.runs["died-early"])
    assert not artifacts.exists()
    assert lab.client.get_run(lab.runs["died-early-2"]).info.lifecycle_stage == "deleted"
    assert states(alice.id) == {"died-early": "purged", "died-early-2": "deleted"}
    late = run_one(f"restore {lab.runs['died-early']}", user="alice", channel="C0LAB")
    assert "Nothing to restore: that run was removed for good 7 days after the clean-up deleted it." in text(late)
    assert audit_verbs().count("cleanup.purge") == 1


def test_a_run_restored_in_mlflow_while_the_purge_starts_gc_is_left_alone_and_the_others_purged(lab, monkeypatch) -> None:
    """`mlflow gc` refuses its whole batch for one run that is not deleted: a restore in MLflow between the
    purge's check and its gc (which takes seconds to start) left all three due runs deleted for another day."""
    from mlflow.exceptions import MlflowException

    from tasks.mlflow_io import cleanup as mlflow_cleanup

    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    alice, carol = proposal_for("alice"), proposal_for("U0CAROL")
    run_one(f"delete {alice.label}", user="alice", channel="C0LAB")
    run_one(f"delete {lab.runs['old-finished']}", user="U0CAROL", channel="C0LAB")
    with session_scope() as session:
        session.execute(update(proposals.Candidate).where(proposals.Candidate.state == "deleted")
                        .values(deleted_at=utcnow() - timedelta(days=8)))  # fmt: skip
    real, batches = mlflow_cleanup.gc, []

    def restored_meanwhile(run_ids: list[str]) -> None:
        batches.append(sorted(run_ids))
        if len(batches) == 1:
            lab.client.restore_run(lab.runs["died-early"])  # someone, in MLflow's UI, as gc starts
        real(run_ids)

    monkeypatch.setattr(mlflow_cleanup, "gc", restored_meanwhile)
    assert work.purge() == 2
    assert len(batches) == 2 and lab.runs["died-early"] not in batches[1]
    assert lab.client.get_run(lab.runs["died-early"]).info.lifecycle_stage == "active"
    for name in ("died-early-2", "old-finished"):
        with pytest.raises(MlflowException):
            lab.client.get_run(lab.runs[name])
    assert states(alice.id) == {"died-early": "restored", "died-early-2": "purged"}
    assert states(carol.id)["old-finished"] == "purged"
    assert audit_verbs().count("cleanup.purge") == 2 and audit_verbs().count("cleanup.restore") == 1


def test_bad_answers_say_what_would_work(lab) -> None:
    cases: list[tuple[str, str]] = [
        ("delete", "Which runs? Name a proposal (`P3`, on its message) or one or more MLflow run ids."),
        ("delete P99", "There is no clean-up proposal P99."),
        ("delete zz-top", "`zz-top` is neither a proposal (`P3`) nor an MLflow run id"),
        ("keep abcdef12", "No clean-up proposal lists the run `abcdef12`."),
        ("snooze abcdef12", "`snooze P3` answers a whole proposal."),  # the verb typed, not `delete`
        ("delete P1 P2", "`delete` answers one proposal at a time; you named 2: `delete P1`, then the next."),
        ("keep P1 abcdef12", "`keep P1` answers the whole proposal; to pick runs, name only runs."),
        ("cleanup a b", "`cleanup` takes one experiment; I read 2 words."),
        ("cleanup nope", "MLflow has no experiment `nope`."),
    ]
    for command, expected in cases:
        outcome = run_one(command, user="alice", channel="C0LAB")
        assert expected in text(outcome), (command, text(outcome))
        assert outcome.exit_code != 0 or "nope" in command


def test_mlflow_unreachable_is_one_line_that_says_so(lab, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    from labmate.settings import reset_settings

    reset_settings()
    outcome = run_one("cleanup sales-agent --dry-run", user="alice", channel="C0LAB")
    assert "MLflow at `http://127.0.0.1:9/` can't be reached right now" in text(outcome), text(outcome)
    assert "Traceback" not in text(outcome)


def test_mlflow_failing_part_way_through_a_delete_gives_the_rest_back(lab, monkeypatch) -> None:
    from mlflow.exceptions import MlflowException

    from tasks.mlflow_io import cleanup as mlflow_cleanup

    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    alice = proposal_for("alice")
    real, calls = mlflow_cleanup.delete, []

    def flaky(run_id: str) -> None:
        calls.append(run_id)
        if len(calls) > 1:
            raise MlflowException("the tracking server answered 503 (test)")
        real(run_id)

    monkeypatch.setattr(mlflow_cleanup, "delete", flaky)
    outcome = run_one(f"delete {alice.label}", user="alice", channel="C0LAB")
    shown = text(outcome)
    assert "Deleted 1 run (MLflow soft delete)" in shown, shown
    assert "MLflow failed: the tracking server answered 503 (test); 1 run left as proposed: try again later." in shown
    assert sorted(states(alice.id).values()) == ["deleted", "pending"]
    monkeypatch.setattr(mlflow_cleanup, "delete", real)
    again = run_one(f"delete {alice.label}", user="alice", channel="C0LAB")
    assert "Deleted 1 run" in text(again)
    assert sorted(states(alice.id).values()) == ["deleted", "deleted"]


def test_mlflow_failing_during_a_keep_gives_the_runs_back_so_keep_can_be_pressed_again(lab, monkeypatch) -> None:
    """The runs were marked kept before MLflow tagged them: a failed tag left them kept in the knowledge base,
    untagged in MLflow (so proposed again the next day), and a second Keep said they were already kept."""
    from mlflow.exceptions import MlflowException

    from tasks.mlflow_io import cleanup as mlflow_cleanup

    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    alice = proposal_for("alice")
    real = mlflow_cleanup.keep

    def down(run_id: str) -> None:
        raise MlflowException("the tracking server answered 503 (test)")

    monkeypatch.setattr(mlflow_cleanup, "keep", down)
    shown = text(run_one(f"keep {alice.label}", user="alice", channel="C0LAB"))
    assert "MLflow failed: the tracking server answered 503 (test); 2 runs left as proposed: try again later." in shown, shown
    assert sorted(states(alice.id).values()) == ["pending", "pending"]
    monkeypatch.setattr(mlflow_cleanup, "keep", real)
    run_one(f"keep {alice.label}", user="alice", channel="C0LAB")
    assert sorted(states(alice.id).values()) == ["kept", "kept"]
    assert lab.client.get_run(lab.runs["died-early"]).data.tags.get("keep")


def test_keep_on_a_run_deleted_in_mlflow_meanwhile_says_it_was_not_kept(lab) -> None:
    """MLflow refuses to tag a deleted run; the refusal was taken for "gone" and passed over, and the
    answer said "Kept: tagged `keep`" with nothing tagged (restored later, the run would be proposed again)."""
    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    alice = proposal_for("alice")
    lab.client.delete_run(lab.runs["died-early"])
    shown = text(run_one(f"keep {alice.label}", user="alice", channel="C0LAB"))
    assert "Kept 1 run: tagged `keep` in MLflow" in shown, shown
    assert "died-early*: it was deleted in MLflow meanwhile, so it could not be tagged" in shown, shown
    assert sorted(states(alice.id).values()) == ["kept", "skipped"]
    assert "cleanup.skip" in audit_verbs()
    lab.client.restore_run(lab.runs["died-early"])
    assert not lab.client.get_run(lab.runs["died-early"]).data.tags.get("keep")


def test_delete_on_an_older_proposal_of_a_run_proposed_again_after_its_snooze_says_where_it_is(lab) -> None:
    """A Delete on the older card moved its snoozed row into a second busy row of the run: the database
    refused, the refusal was taken for a Slack retry, and nothing was answered, done or audited."""
    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    old = proposal_for("alice")
    run_one(f"snooze {old.label}", user="alice", channel="C0LAB")
    with session_scope() as session:
        session.execute(update(proposals.Candidate).where(proposals.Candidate.proposal_id == old.id)
                        .values(snoozed_until=utcnow() - timedelta(minutes=1)))  # fmt: skip
    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    with session_scope() as session:
        newer = max(p.id for p in session.query(proposals.Proposal).all() if p.owner == "alice")
    assert newer != old.id and sorted(states(newer).values()) == ["pending", "pending"]
    assert sorted(states(old.id).values()) == ["reproposed", "reproposed"]
    shown = text(run_one(f"delete {old.label}", user="alice", channel="C0LAB"))
    assert f"proposed again after their snooze, in P{newer}: answer there." in shown, shown
    assert sorted(states(newer).values()) == ["pending", "pending"]
    assert audit_verbs()[-1] == "delete"


def test_a_restore_the_purge_overtook_says_the_run_is_gone_for_good(lab, monkeypatch) -> None:
    """Restore pressed as the grace period ended: the purge's gc took the run before the restore job ran, and
    the person was told to try again later (a restore that can never work) while the run stayed 'deleted'."""
    from tasks.mlflow_io import cleanup as mlflow_cleanup

    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    alice = proposal_for("alice")
    run_one(f"delete {alice.label}", user="alice", channel="C0LAB")
    real = mlflow_cleanup.restore

    def purged_first(run_id: str) -> None:
        if run_id == lab.runs["died-early"]:
            mlflow_cleanup.gc([run_id])  # what the purge did while this restore waited
        real(run_id)

    monkeypatch.setattr(mlflow_cleanup, "restore", purged_first)
    shown = text(run_one(f"restore {alice.label}", user="alice", channel="C0LAB"))
    assert "Restored 1 run; 1 skipped" in shown, shown
    assert "Not restored:" in shown and "removed for good as the grace period ended" in shown
    assert "try again later" not in shown
    assert states(alice.id) == {"died-early": "purged", "died-early-2": "restored"}


def test_cleanup_in_the_terminal_shows_the_proposals_waiting_for_you(lab) -> None:
    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    alice = proposal_for("alice")
    shown = run_one("cleanup", user="alice", channel="C0LAB")
    cards = [m for m in shown.messages if m.template == "cleanup_proposal"]
    assert len(cards) == 1 and f"*{alice.label}*" in text(shown) and "died-early-2" in text(shown)
    assert f"Waiting for you: {alice.label} (2 runs of sales-agent)" in text(shown)
    assert alice.label != "P1" and f"Answer with `delete {alice.label}`, `keep {alice.label}`" in text(shown)
    assert [m for m in run_one("cleanup", user="U0MALLORY", channel="C0LAB").messages if m.template == "cleanup_proposal"] == []


def test_pending_proposals_reach_the_home_tab_with_buttons_and_the_digest(lab) -> None:
    from bot.messages.render import render
    from tasks.watch import digest, home

    assert home.cleanup_proposals("U0ALICE") == [] and digest.cleanup_pending(None) == []
    assert run_one("cleanup sales-agent", user="alice", channel="C0LAB").exit_code == 0
    alice = proposal_for("alice")
    shown = home.cleanup_proposals("U0ALICE")
    assert shown == [{"experiment": "sales-agent", "runs": 2, "label": alice.label}]
    assert home.cleanup_proposals("U0CAROL")[0]["runs"] == 2 and home.cleanup_proposals("U0NOBODY") == []
    tab = json.dumps(render("home", {
        "user": "U0ALICE", "command": "/lab", "updated": utcnow(), "launches": [], "decisions": [], "bests": [],
        "cleanup": shown, "snooze_days": "7",
    }).blocks)  # fmt: skip
    for verb in ("delete", "keep", "snooze", "choose"):
        assert f'"action_id": "lab:{verb}:' in tab and f'"value": "{alice.label}"' in tab
    assert {"owner": "U0ALICE", "runs": 2, "experiment": "sales-agent"} in digest.cleanup_pending(None)

    assert run_one(f"keep {alice.label}", user="alice", channel="C0LAB").exit_code == 0
    assert home.cleanup_proposals("U0ALICE") == []
    assert all(p["owner"] != "U0ALICE" for p in digest.cleanup_pending(None))


def test_a_verbs_listing_narrows_who_answers_and_grants_nothing_on_others_runs(lab, tmp_path: Path) -> None:
    """docs/cleanup.md: only the owner and the admins may answer. Listing `delete` or `snooze` under
    [access.verbs] limits who may use them at all; it doesn't open anyone's proposal to the listed."""
    from labmate.settings import reset_settings

    config = tmp_path / "labmate.toml"
    config.write_text(config.read_text().replace(
        "[primary_metrics]", '[access.verbs]\ndelete = ["alice", "mallory"]\nsnooze = ["alice", "mallory"]\n\n[primary_metrics]'))
    reset_settings()
    assert run_one("cleanup sales-agent", user="alice", channel="C0LAB").exit_code == 0
    alice = proposal_for("alice")
    for verb in ("delete", "snooze"):
        refused = run_one(f"{verb} {alice.label}", user="mallory", channel="C0LAB")
        assert refused.exit_code != 0
        assert f"{alice.label} is <@U0ALICE>'s: only they or an admin (<@UADMIN>) can `{verb}` its runs." in text(refused)
    assert set(states(alice.id).values()) == {"pending"}
    unlisted = run_one(f"delete {proposal_for('U0CAROL').label}", user="U0CAROL", channel="C0LAB")
    assert "You can't use `delete` here." in text(unlisted)
    snoozed = run_one(f"snooze {alice.label}", user="alice", channel="C0LAB")
    assert snoozed.exit_code == 0, text(snoozed)


def test_a_snoozed_run_can_still_be_kept_or_deleted(lab) -> None:
    """Its owner changes their mind before the snooze ends: `keep` and `delete` were refused ("Nothing to keep:
    that run was already snoozed") for the snooze's length."""
    run_one("cleanup sales-agent", user="alice", channel="C0LAB")
    carol = proposal_for("U0CAROL")
    assert run_one(f"snooze {carol.label}", user="U0CAROL", channel="C0LAB").exit_code == 0
    assert states(carol.id) == {"old-finished": "snoozed", "tiny-fresh": "snoozed"}
    kept = run_one(f"keep {lab.runs['old-finished']}", user="U0CAROL", channel="C0LAB")
    assert kept.exit_code == 0, text(kept)
    assert lab.client.get_run(lab.runs["old-finished"]).data.tags["keep"] == "true"
    deleted = run_one(f"delete {lab.runs['tiny-fresh']}", user="U0CAROL", channel="C0LAB")
    assert deleted.exit_code == 0, text(deleted)
    assert states(carol.id) == {"old-finished": "kept", "tiny-fresh": "deleted"}
    assert lab.client.get_run(lab.runs["tiny-fresh"]).info.lifecycle_stage == "deleted"
    again = run_one(f"snooze {carol.label}", user="U0CAROL", channel="C0LAB")
    assert "Nothing to snooze: those runs were already deleted or kept by <@U0CAROL>." in text(again), text(again)
