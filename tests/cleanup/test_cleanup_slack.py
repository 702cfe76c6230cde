"""Clean-up proposals in Slack (Bolt in process, the fake Slack, the embedded worker, a real MLflow store):
one DM per owner, buttons acked at once with the work in a job, a click by someone without the right
told so with nothing done, two clicks at once deleting once, and the per-run choice in a modal."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slack"))

from slackreq import APP_ID, TEAM_ID, poll

from tests.cleanup.helpers import proposal_for, states, texts
from tests.slack.conftest import bolt_app, fake_slack, inprocess, slack_env  # noqa: F401

pytestmark = [pytest.mark.slow]


def test_proposals_are_dms_and_their_buttons_act_once_for_the_owner_only(lab, inprocess) -> None:  # noqa: F811
    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0ALICE", channel="C0LAB")
    [dm] = fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0ALICE", timeout=30)
    assert "P" in texts(dm) and "died-early" in texts(dm)
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0CAROL", timeout=30)
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "UADMIN", timeout=30)  # bob: no Slack id
    alice = proposal_for("alice")
    buttons = [e for b in dm.params["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        ("lab:delete:0", alice.label), ("lab:keep:1", alice.label), ("lab:snooze:2", alice.label),
        ("lab:choose:3", alice.label)]

    response = slack.block_action(action_id="lab:delete:0", value=alice.label, user="U0MALLORY", channel="U0ALICE")
    assert response.status == 200 and response.body == ""
    [refused] = fake.wait_for("response_url", where=lambda c: "Nothing was changed" in json.dumps(c.params))
    assert f"{alice.label} is <@U0ALICE>" in refused.params["text"]
    assert set(states(alice.id).values()) == {"pending"}
    assert [e.outcome for e in inprocess.audit(user="U0MALLORY")] == ["refused"]

    for _ in range(2):  # a double click
        slack.block_action(action_id="lab:delete:0", value=alice.label, user="U0ALICE", channel="U0ALICE")
    poll(lambda: set(states(alice.id).values()) == {"deleted"}, timeout=30, what="alice's runs deleted")
    edited = fake.wait_for("chat.update", where=lambda c: "deleted" in texts(c) and "died-early-2" in texts(c), timeout=30)
    assert edited[-1].params["channel"] == "U0ALICE"
    assert lab.client.get_run(lab.runs["died-early"]).info.lifecycle_stage == "deleted"
    told = poll(lambda: [c for c in fake.calls("response_url") if "Nothing to delete" in json.dumps(c.params)], timeout=30,
                what="the second click told")
    assert "already" in told[0].params["text"]
    assert len([e for e in inprocess.audit(verb="cleanup.delete")]) == 2
    # The job closes its audit row after its last edit and reply: on a busy machine the test gets here first.
    outcomes = poll(lambda: (found := sorted(e.outcome for e in inprocess.audit(user="U0ALICE", verb="delete")))
                    and "queued" not in found and "running" not in found and found, timeout=30, what="both clicks audited")
    assert outcomes.count("ok") == 1, outcomes


def test_choose_per_run_in_a_modal(lab, inprocess) -> None:  # noqa: F811
    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0CAROL", channel="C0LAB")
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0CAROL", timeout=30)
    carol = proposal_for("U0CAROL")
    slack.block_action(action_id="lab:choose:3", value=carol.label, user="U0CAROL", channel="U0CAROL")
    [opened] = fake.wait_for("views.open", timeout=30)
    view = opened.params["view"]
    if isinstance(view, str):
        view = json.loads(view)
    assert {b["block_id"] for b in view["blocks"]} == {lab.runs["old-finished"], lab.runs["tiny-fresh"]}
    state = {
        lab.runs["old-finished"]: {"choice": {"type": "static_select", "selected_option": {"value": "keep"}}},
        lab.runs["tiny-fresh"]: {"choice": {"type": "static_select", "selected_option": {"value": "delete"}}},
    }
    response = slack.interaction({
        "type": "view_submission", "team": {"id": TEAM_ID, "domain": "labmate-test"},
        "user": {"id": "U0CAROL", "username": "u0carol", "team_id": TEAM_ID}, "api_app_id": APP_ID,
        "token": "legacy-verification-token", "trigger_id": f"1.{uuid.uuid4().hex}",
        "view": {**view, "id": "V0CHOOSE", "hash": "1.V0CHOOSE", "state": {"values": state}},
        "response_urls": [], "is_enterprise_install": False,
    })
    assert response.status == 200
    poll(lambda: states(carol.id) == {"old-finished": "kept", "tiny-fresh": "deleted"}, timeout=30, what="choices applied")
    poll(lambda: lab.client.get_run(lab.runs["old-finished"]).data.tags.get("keep") == "true", timeout=30, what="tagged")

    slack.block_action(action_id="lab:choose:3", value=carol.label, user="U0MALLORY", channel="U0CAROL")
    [refused] = fake.wait_for("response_url", where=lambda c: "Nothing was changed" in json.dumps(c.params))
    assert "can answer its runs" in refused.params["text"]  # they clicked Choose, not Delete
    assert len(fake.calls("views.open")) == 1


def test_choose_per_run_writes_one_choose_row_opened_or_refused(lab, inprocess) -> None:  # noqa: F811
    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0CAROL", channel="C0LAB")
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0CAROL", timeout=30)
    carol = proposal_for("U0CAROL")

    slack.block_action(action_id="lab:choose:3", value=carol.label, user="U0CAROL", channel="U0CAROL")
    fake.wait_for("views.open", timeout=30)
    slack.block_action(action_id="lab:choose:3", value=carol.label, user="U0MALLORY", channel="U0CAROL")
    [refused] = fake.wait_for("response_url", where=lambda c: "Nothing was changed" in json.dumps(c.params))
    inprocess.drain()

    assert refused.params["text"] == (
        f"{carol.label} is <@U0CAROL>'s: only they or an admin (<@UADMIN>) can answer its runs. Nothing was changed."
    )
    assert len(fake.calls("views.open")) == 1
    # each click is handled on its own thread: the opening's row (written once the modal is open) may come second
    assert sorted((e.user, e.verb, e.outcome, e.text) for e in inprocess.audit(verb="choose")) == [
        ("U0CAROL", "choose", "ok", f"choose {carol.label}"),
        ("U0MALLORY", "choose", "refused", f"choose {carol.label}"),
    ]
    assert [(e.verb, e.outcome) for e in inprocess.audit(user="U0MALLORY")] == [("choose", "refused")]


def test_a_click_while_the_job_queue_is_down_is_told_its_job_starts_when_it_is_back(lab, inprocess, monkeypatch) -> None:  # noqa: F811
    """The clicker heard nothing until the broker was back: a typed command said so, a button didn't."""
    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0ALICE", channel="C0LAB")
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0ALICE", timeout=30)
    alice = proposal_for("alice")

    def broker_down(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused. (test)")

    monkeypatch.setattr("tasks.client.enqueue", broker_down)
    slack.block_action(action_id="lab:delete:0", value=alice.label, user="U0ALICE", channel="U0ALICE")
    [told] = fake.wait_for("response_url", timeout=30)
    assert f"The job queue is unreachable, so delete in {alice.label} will start when it is back." in texts(told), texts(told)
    assert set(states(alice.id).values()) == {"deleting"}  # answered and stored: the reaper sends its job


def test_choose_per_run_from_the_home_tab_answers_in_a_direct_message(lab, inprocess) -> None:  # noqa: F811
    """A Home tab button has no channel and no response_url: an ephemeral message needs a conversation,
    so the modal's answer goes to the person's DM, as the Home tab's Keep and Delete buttons do."""
    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0CAROL", channel="C0LAB")
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0CAROL", timeout=30)
    carol = proposal_for("U0CAROL")
    slack.interaction({
        "type": "block_actions", "user": {"id": "U0CAROL", "username": "u0carol", "team_id": TEAM_ID},
        "api_app_id": APP_ID, "token": "legacy-verification-token", "trigger_id": f"1.{uuid.uuid4().hex}",
        "team": {"id": TEAM_ID, "domain": "labmate-test"},
        "container": {"type": "view", "view_id": "V0HOME"}, "view": {"id": "V0HOME", "type": "home"},
        "actions": [{"action_id": "lab:choose:3", "block_id": "p", "value": carol.label, "type": "button",
                     "text": {"type": "plain_text", "text": "Choose per run"}, "action_ts": "1.5"}],
    })
    [opened] = fake.wait_for("views.open", timeout=30)
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    state = {lab.runs["old-finished"]: {"choice": {"type": "static_select", "selected_option": {"value": "keep"}}}}
    slack.interaction({
        "type": "view_submission", "team": {"id": TEAM_ID, "domain": "labmate-test"},
        "user": {"id": "U0CAROL", "username": "u0carol", "team_id": TEAM_ID}, "api_app_id": APP_ID,
        "token": "legacy-verification-token", "trigger_id": f"1.{uuid.uuid4().hex}",
        "view": {**view, "id": "V0CHOOSEHOME", "hash": "1.home", "state": {"values": state}},
        "response_urls": [], "is_enterprise_install": False,
    })
    poll(lambda: states(carol.id).get("old-finished") == "kept", timeout=30, what="the choice applied")
    poll(lambda: lab.client.get_run(lab.runs["old-finished"]).data.tags.get("keep") == "true", timeout=30, what="tagged")
    [answer] = fake.wait_for("chat.postMessage", 2, where=lambda c: c.params["channel"] == "U0CAROL", timeout=30)[1:]
    assert "Kept: tagged `keep` in MLflow" in texts(answer)
    assert not [c for c in fake.calls("chat.postEphemeral") if c.params.get("user") == "U0CAROL"]


def test_a_proposal_sent_to_an_admin_for_a_run_without_an_owner_is_on_the_admins_home(lab, inprocess) -> None:  # noqa: F811
    """bob has no Slack id: his proposal went to the first admin's DM, but the admin's Home tab, which lists
    the proposals waiting for them, matched only owner and recipient and left it out."""
    from tasks.watch.home import cleanup_proposals

    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0ALICE", channel="C0LAB")
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "UADMIN", timeout=30)
    bobs = proposal_for("bob")
    assert bobs.label in [p["label"] for p in cleanup_proposals("UADMIN")]
    assert bobs.label not in [p["label"] for p in cleanup_proposals("U0CAROL")]


def test_answering_a_proposal_refreshes_the_answerers_home_tab(lab, inprocess) -> None:  # noqa: F811
    """Home was published only when opened: after a Delete (from the tab itself too) it still offered the
    answered proposal with live buttons until the tab was opened again."""
    slack, fake = inprocess.slack, inprocess.fake
    slack.command("cleanup sales-agent", user="U0ALICE", channel="C0LAB")
    fake.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U0ALICE", timeout=30)
    alice = proposal_for("alice")
    slack.block_action(action_id="lab:delete:0", value=alice.label, user="U0ALICE", channel="U0ALICE")
    [published] = fake.wait_for("views.publish", where=lambda c: c.params["user_id"] == "U0ALICE", timeout=60)
    view = published.params["view"]
    shown = view if isinstance(view, str) else json.dumps(view)
    assert "Your launches" in shown and alice.label not in shown  # no longer waiting for an answer
    assert set(states(alice.id).values()) <= {"deleted", "skipped"}
