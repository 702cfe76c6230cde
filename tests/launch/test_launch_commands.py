"""run, sweep, status and cancel through dispatch (the path every front takes): what is refused is refused
before anything is stored, with a message that says what was wrong and what would work."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from bot import dispatch
from bot.origin import Origin, Reply
from labmate.settings import reset_settings
from models import audit, jobs, launches
from models.base import utcnow
from models.db import session_scope
from tests.launch.conftest import ADMIN, toml


@pytest.fixture(autouse=True)
def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """No job leaves these tests (the broker refuses it): what dispatch stored stays in the outbox."""

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("the broker is down (test)")

    monkeypatch.setattr("tasks.client.enqueue", refuse)


def ask(text: str, user: str = "U0ALICE", channel: str = "C0LAB", **kw: Any) -> Reply:
    return dispatch.handle(text, Origin(user=user, channel=channel, source="slack", **kw))


def message(reply: Reply) -> str:
    return str(reply.context.get("message", ""))


def stored() -> tuple[int, int]:
    with session_scope() as session:
        return session.query(launches.Launch).count(), session.query(jobs.JobRecord).count()


def outcomes() -> list[str]:
    with session_scope() as session:
        return [e.outcome for e in reversed(audit.latest(session, limit=100))]


LISTING = "Parameters of `quick:train`: epochs (int, default 3)"


@pytest.mark.parametrize(
    ("text", "expected", "hint"),
    [
        ("run nope", "There is no project `nope` that I may launch. Launchable projects: `closed`, `quick`.", ""),
        ("run quick:eval", "`quick` has no launchable entry point `eval`. Try `quick:train`, `quick:needs_shell`, "
         "`quick:needs_value`.", ""),
        ('run quick lr="1; id"', "`1; id` is not a valid float for `lr`: write a plain number, e.g. `lr=0.001`.", LISTING),
        ("run quick lr=$(id)", "`$(id)` is not a valid float for `lr`: write a plain number, e.g. `lr=0.001`.", LISTING),
        ("run quick lr=1; id", "`1;` is not a valid float for `lr`: write a plain number, e.g. `lr=0.001`.", LISTING),
        ("run quick lr=0.1\nid", "`run` takes one line: I found a line break after `lr=0.1`. Parameter values can't "
         "contain line breaks.", ""),
        ("run quick x;id=3", "`x;id` is not a parameter of `quick:train`.", LISTING),
        ("run quick:needs_value", "`quick:needs_value` needs a value for `rows` (path).", ""),
        ("sweep quick lr=0.1,0.2,0.3 epochs=1,2", "That sweep is 6 runs (3 lr × 2 epochs); `quick` allows at most 4 "
         "in one sweep.", ""),
        ("sweep quick lr=0.1,0.2 parallel:3", "`parallel:3` is more than `quick` allows: at most 2 of its runs at once.", ""),
        ("sweep quick lr=0.1,0.2 parallel:999", "`parallel:999` is more than `quick` allows: at most 2 of its runs at "
         "once.", ""),
        ("run quick epochs=٣", "`٣` is not a valid int for `epochs`: `٣` (U+0663 ARABIC-INDIC DIGIT THREE) is not one "
         "of the digits 0-9; e.g. `epochs=5`.", LISTING),
        ("run quick lr=1e999", "`1e999` is not a valid float for `lr`: it is beyond what a float can hold (about "
         "±1.8e308); write a finite number, e.g. `lr=0.001`.", LISTING),
        ("run quick epochs=99999999999999999999999", "`99999999999999999999999` is too large for `epochs`: an int must "
         "fit in 64 bits, so it is at most 9223372036854775807; e.g. `epochs=5`.", LISTING),
        ("run quick note=a\u2028b", "`a\\u2028b` is not a valid string for `note`: it contains a line break (U+2028 "
         "LINE SEPARATOR).", LISTING),
        ("run quick note=x\u202ey", "`x\\u202ey` is not a valid string for `note`: it contains an invisible formatting "
         "character (U+202E RIGHT-TO-LEFT OVERRIDE).", LISTING),
        ("sweep quick lr=0.1,abc", "`abc` is not a valid float for `lr`", LISTING),
        ("sweep quick x;id=1,2", "`x;id` is not a parameter of `quick:train`.", LISTING),
    ],
)
def test_bad_launches_are_refused_before_anything_is_stored(configured, text: str, expected: str, hint: str) -> None:
    reply = ask(text)
    assert reply.outcome == "user_error"
    assert message(reply).startswith(expected), message(reply)
    assert reply.context["hint"].startswith(hint)
    assert stored() == (0, 0)
    assert outcomes() == ["user_error"]


def test_a_project_limited_to_others_is_refused_and_its_group_may(configured) -> None:
    reply = ask("run closed")
    assert reply.outcome == "refused"
    assert message(reply).startswith("You can't launch `closed`. It is limited to <@U0OWNER>, <!subteam^S0TEAM> and the admins")
    assert stored() == (0, 0)
    dry = ask("run closed --dry-run", user="U0BOB", user_groups=("S0TEAM",))
    assert dry.outcome == "ok" and dry.template == "launch_dry_run"


def test_a_dry_run_shows_the_parameters_and_the_command_and_stores_nothing(configured) -> None:
    reply = ask("run quick epochs=5 note='two words' --dry-run")
    assert reply.template == "launch_dry_run"
    params = {p["key"]: (p["value"], p["given"]) for p in reply.context["params"]}
    assert params["epochs"] == ("5", True) and params["lr"] == ("0.1", False)
    assert reply.context["command"].startswith("python quick.py --epochs 5 --lr 0.1 --sleep 0.0 --spin 0.0 --note 'two words'")
    assert stored() == (0, 0)
    sweep = ask("sweep quick lr=0.1,0.2 epochs=1,2 --dry-run")
    assert (sweep.template, sweep.context["size"], sweep.context["parallel"]) == ("sweep_dry_run", 4, 2)
    assert [r["params"] for r in sweep.context["runs"]] == [
        "lr=0.1, epochs=1", "lr=0.1, epochs=2", "lr=0.2, epochs=1", "lr=0.2, epochs=2",
    ]
    assert stored() == (0, 0)


def make(user: str = "U0ALICE", channel: str = "C0LAB", status: str = launches.QUEUED, **kw: Any) -> int:
    with session_scope() as session:
        launch = launches.create(
            session, user=user, channel=channel, project="quick", entry_point="train", params={"lr": "0.1"},
            experiment="quick", reply_to={"channel": channel, "source": "slack"}, task_id=f"t-{utcnow().timestamp()}",
            total_steps=3,
        )
        if status != launches.QUEUED:
            launches.start(session, launch_id=launch.id, worker="w:1")
        if status in launches.ENDED:
            launches.end(session, launch_id=launch.id, status=status, **kw)
        return launch.id


def test_a_cancel_listing_narrows_who_may_cancel_and_grants_nothing_on_others_launches(configured, tmp_path) -> None:
    """README: a verb listed under [access.verbs] is open only to those entries and the admins;
    `cancel` stays for whoever launched the run (only `supersede`'s listing reaches anyone's)."""
    (tmp_path / "labmate.toml").write_text(toml().replace("[primary_metrics]", '[access.verbs]\ncancel = ["U0ALICE", "U0BOB", "C0OPS"]\n[primary_metrics]'))
    reset_settings()
    alices = make(user="U0ALICE")
    for user, channel in (("U0BOB", "C0LAB"), ("U0MALLORY", "C0OPS")):
        refused = ask(f"cancel L{alices}", user=user, channel=channel)
        assert refused.outcome == "refused", (user, message(refused))
        assert message(refused).startswith(f"Only whoever launched L{alices} (<@U0ALICE>) or an admin")
    with session_scope() as session:
        assert launches.get(session, launch_id=alices).status == launches.QUEUED
    bobs = make(user="U0BOB")
    assert ask(f"cancel L{bobs}", user="U0BOB").template == "launch_cancelled"
    carols = make(user="U0CAROL")
    unlisted = ask(f"cancel L{carols}", user="U0CAROL")
    assert unlisted.outcome == "refused" and message(unlisted).startswith("You can't use `cancel` here.")
    assert ask(f"cancel L{alices}", user="U0ALICE").template == "launch_cancelled"


def test_a_launchers_name_in_the_refusal_is_text_not_a_link(configured) -> None:
    launch_id = make(user="a> <https://evil.example/|click here")
    refused = ask(f"cancel L{launch_id}", user="U0MALLORY")
    assert message(refused).startswith(
        f"Only whoever launched L{launch_id} (a&gt; &lt;https://evil.example/|click here) or an admin (<@{ADMIN}>)")


def test_cancel_of_someone_elses_launch_is_for_admins(configured) -> None:
    launch_id = make(user="U0ALICE")
    reply = ask(f"cancel L{launch_id}", user="U0MALLORY")
    assert reply.outcome == "refused"
    assert message(reply).startswith(f"Only whoever launched L{launch_id} (<@U0ALICE>) or an admin (<@{ADMIN}>) can `cancel` it.")
    with session_scope() as session:
        assert launches.get(session, launch_id=launch_id).status == launches.QUEUED
    admin = ask(f"cancel L{launch_id}", user=ADMIN)
    assert admin.template == "launch_cancelled" and admin.context["was"] == "queued"
    assert [j.name for j in admin.jobs] == ["labmate.launches.card"]
    with session_scope() as session:
        launch = launches.get(session, launch_id=launch_id)
        assert (launch.status, launch.stopped_by) == (launches.KILLED, ADMIN)


def test_cancel_twice_and_cancel_of_an_ended_run_say_so(configured) -> None:
    launch_id = make(status=launches.RUNNING)
    first = ask(f"cancel L{launch_id}")
    assert first.template == "launch_cancelled" and first.context["was"] == "running"
    again = ask(f"cancel L{launch_id}")
    assert again.outcome == "user_error"
    assert message(again) == f"L{launch_id} was already stopped by <@U0ALICE> a few seconds ago."
    finished = make(status=launches.FINISHED)
    with session_scope() as session:
        session.execute(
            launches.Launch.__table__.update().where(launches.Launch.id == finished).values(ended_at=utcnow() - timedelta(minutes=3))
        )
    late = ask(f"cancel L{finished}")
    assert (late.outcome, message(late), late.context["hint"]) == ("user_error", f"L{finished} already finished 3 min ago.", "Nothing to stop.")
    missing = ask("cancel L999")
    assert message(missing) == "There is no launch L999."


def test_cancelling_a_launch_that_made_no_mlflow_run_yet_says_no_run_is_killed(configured) -> None:
    """It said "its MLflow run marked KILLED" of a launch that had started but made no run yet."""
    from bot.messages.render import render

    launch_id = make(status=launches.RUNNING)
    reply = ask(f"cancel L{launch_id}")
    assert (reply.context["was"], reply.context["has_run"]) == ("running", False)
    shown = json.dumps(render(reply.template, reply.context).blocks)
    assert "hadn't started training yet, so it won't" in shown and "MLflow" not in shown, shown


def test_cancel_by_run_id_and_by_an_owner_no_longer_allowed(configured, tmp_path) -> None:
    launch_id = make(status=launches.RUNNING)
    with session_scope() as session:
        launches.set_run(session, launch_id=launch_id, run_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9", experiment_id="1")
    nothing = ask("cancel 0a1b2c3e")
    assert message(nothing).startswith("No launch has an MLflow run `0a1b2c3e`")
    (tmp_path / "labmate.toml").write_text(toml().replace('experiment = "quick"', 'experiment = "quick"\nlaunchers = ["U0BOB"]'))
    reset_settings()
    refused = ask("cancel 0a1b2c3d")
    assert refused.outcome == "refused"
    assert message(refused).startswith(f"You launched L{launch_id}, but you may no longer launch `quick`")
    assert ask("cancel 0a1b2c3d", user=ADMIN).template == "launch_cancelled"


def test_status_lists_this_channel_and_all_is_for_admins(configured) -> None:
    here = make(channel="C0LAB")
    there = make(channel="C0ELSEWHERE", status=launches.RUNNING)
    make(channel="C0LAB", status=launches.FINISHED)
    reply = ask("status")
    assert [(row["label"], row["where"]) for row in reply.context["launches"]] == [(f"L{here}", "#1 in the queue")]
    refused = ask("status all")
    assert (refused.outcome, message(refused)) == ("refused", "`status all` is for admins; `status` shows the launches of this channel.")
    everything = ask("status all", user=ADMIN)
    assert [row["label"] for row in everything.context["launches"]] == [f"L{here}", f"L{there}"]


def test_a_launch_while_the_broker_is_down_is_stored_whole_and_the_user_told(configured) -> None:
    reply = ask("run quick epochs=2")
    assert reply.template == "launch_queued" and reply.outcome == "ok"
    assert reply.notes == [
        f"The job queue is unreachable, so launch {reply.context['label']} and its card will start when it is back."
    ]
    with session_scope() as session:
        (launch,) = session.query(launches.Launch).all()
        rows = {j.task: j for j in session.query(jobs.JobRecord).all()}
    assert launch.status == launches.QUEUED and launch.params["epochs"] == "2"
    run = rows["labmate.launch.run"]
    assert (run.key, run.state, run.enqueued_at, run.kwargs["launch_id"]) == (launch.task_id, "queued", None, launch.id)
    assert rows["labmate.launches.card"].enqueued_at is None
    assert outcomes() == ["queued"]


def test_a_slack_retry_of_the_same_command_launches_once(configured) -> None:
    first = ask("run quick", idempotency_key="cmd:trigger-1")
    again = ask("run quick", idempotency_key="cmd:trigger-1")
    assert first.template == "launch_queued" and again.outcome == "duplicate"
    assert stored() == (1, 2)


def test_a_local_projects_command_is_checked_before_anything_is_stored(configured) -> None:
    missing = ask("run quick data=data/nope.txt")
    assert message(missing) == "`data=data/nope.txt`: there is no such file in the project."
    shell = ask("run quick:needs_shell")
    assert message(shell).startswith("Entry point `needs_shell` needs a shell (its command uses `&`)")
    assert stored() == (0, 0)


def test_a_bare_number_finds_the_launch_by_its_run_id_when_no_launch_has_that_id(configured) -> None:
    launch_id = make(status=launches.RUNNING)
    with session_scope() as session:
        launches.set_run(session, launch_id=launch_id, run_id="12345678e5f60718293a4b5c6d7e8f90", experiment_id="1")
    none = ask("cancel 87654321")
    assert (none.outcome, message(none)) == (
        "user_error", "There is no launch L87654321, and no launch has an MLflow run id starting `87654321`.")
    assert message(ask("cancel L12345678")) == "There is no launch L12345678."
    reply = ask("cancel 12345678")
    assert reply.template == "launch_cancelled" and reply.context["label"] == f"L{launch_id}"
    with session_scope() as session:
        assert launches.get(session, launch_id=launch_id).status == launches.KILLED


def _renumber(launch_id: int, new_id: int, run_id: str) -> None:
    with session_scope() as session:
        launches.set_run(session, launch_id=launch_id, run_id=run_id, experiment_id="1")
        session.execute(launches.Launch.__table__.update().where(launches.Launch.id == launch_id).values(id=new_id))


def test_a_bare_number_that_is_both_a_launch_id_and_a_run_id_prefix_asks_which(configured) -> None:
    _renumber(make(status=launches.RUNNING), 654321, "0b1c2d3e4f60718293a4b5c6d7e8f90a")
    other = make(status=launches.RUNNING)
    with session_scope() as session:
        launches.set_run(session, launch_id=other, run_id="654321e5f60718293a4b5c6d7e8f90ab", experiment_id="1")
    both = ask("cancel 654321")
    assert (both.outcome, message(both)) == (
        "user_error", f"`654321` is both launch L654321 and the start of the MLflow run id of L{other} "
        "(654321e5f607…). Say `cancel L654321` or `cancel run:654321`.")
    with session_scope() as session:
        assert {launches.get(session, launch_id=i).status for i in (654321, other)} == {launches.RUNNING}
    assert ask("cancel run:654321").context["label"] == f"L{other}"
    assert ask("cancel L654321").context["label"] == "L654321"
    # a launch whose own run id starts with its id is no ambiguity
    _renumber(make(status=launches.RUNNING), 777777, "777777aa5f60718293a4b5c6d7e8f90a")
    assert ask("cancel 777777").context["label"] == "L777777"


@pytest.mark.parametrize(("status", "step", "shown"), [("finished", 3, "4/4 (100%)"), ("running", 3, "3/4 (75%)"),
                                                       ("finished", 4, "4/4 (100%)"), ("failed", 3, "3/4 (75%)")])  # fmt: skip
def test_a_run_that_counted_its_steps_from_zero_ends_with_a_full_bar(status: str, step: int, shown: str) -> None:
    """`for step in range(4)` logs steps 0-3: its finished card read 3/4 (75%)."""
    from tasks.launches import cards

    launch = launches.Launch(id=3, user="U1", channel="C1", project="tiny", entry_point="main", params={}, metrics={},
                             experiment="tiny", status=status, step=step, total_steps=4)  # fmt: skip
    assert cards.view(launch)["progress"].endswith(shown)


def test_an_ended_runs_card_says_how_long_it_took_to_the_second() -> None:
    """The live clock is coarse on purpose (a card is edited only when it changes); an 18 s run 'ran for 10 s'."""
    from tasks.launches import cards

    ended = utcnow()
    launch = launches.Launch(id=3, user="U1", channel="C1", project="tiny", entry_point="main", params={}, metrics={},
                             experiment="tiny", status="finished", created_at=ended - timedelta(seconds=30),
                             started_at=ended - timedelta(seconds=18), ended_at=ended)  # fmt: skip
    assert cards.view(launch)["when"] == "ran for 18 s"
