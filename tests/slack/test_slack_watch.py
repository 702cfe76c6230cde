"""Run watch and the App Home from Slack, in process against the fake Slack with the real embedded worker:
`/lab watch` answered in the channel, a run's end posted there once, the Home tab published when opened."""

from __future__ import annotations

from typing import Any

import pytest
from fakeslack import iter_texts
from slackreq import Lab, poll, unique

from tests.experiments.conftest import empty_mlflow_db, mlflow_store, sales  # noqa: F401
from tests.watch.conftest import end_run, watched  # noqa: F401

pytestmark = [pytest.mark.slow]


def shown(params: dict[str, Any]) -> str:
    return "\n".join([params.get("text", ""), *iter_texts(params.get("blocks", []))])


def _poll_once() -> None:
    from tasks.client import enqueue, wait

    assert wait([enqueue("labmate.watch.poll", {}, track=True)], timeout=60) == ["ok"]


def test_watch_from_slack_then_a_run_ends_and_is_posted_once(watched, inprocess: Lab) -> None:  # noqa: F811
    user, channel = unique("U"), unique("C")
    answer = inprocess.slack.command("watch sales-agent", user=user, channel=channel)
    assert answer.status == 200 and "Working on it" in answer.body
    [added] = inprocess.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == channel)
    assert "Watching" in shown(added.params) and "unigram-v2" in shown(added.params)
    run_id = end_run(watched, "fresh", f1=0.97)
    _poll_once()
    _poll_once()
    posts = [c for c in inprocess.fake.posted(channel) if "fresh" in shown(c.params)]
    assert len(posts) == 2  # the run's notice and its new best, each once
    assert any(run_id[:8] in shown(p.params) for p in posts)
    assert any("New best in sales-agent" in shown(p.params) for p in posts)


def test_the_home_tab_is_published_when_opened(watched, inprocess: Lab) -> None:  # noqa: F811
    from models import decision, launches
    from models import watch as watches
    from models.db import session_scope
    from tasks.experiments import resolve, sync

    user = unique("U")
    experiment = resolve.experiment("sales-agent")
    sync.wait_until_ready(experiment, budget_s=30)
    with session_scope() as session:
        watches.add(session, store=experiment.store, experiment_id=experiment.experiment_id, experiment="sales-agent",
                    channel="CWATCH", reply_to={"channel": "CWATCH"}, user=user, since_ms=0)  # fmt: skip
        decision.create(session, new=decision.NewDecision(text="ship unigram-v2", author=user, channel="C1"))
        launches.create(session, user=user, channel="C1", project="quick", entry_point="main", params={},
                        experiment="quick", reply_to={}, task_id="t-home")  # fmt: skip
        launches.create(session, user="USOMEONEELSE", channel="C1", project="other", entry_point="main", params={},
                        experiment="quick", reply_to={}, task_id="t-other")  # fmt: skip
    inprocess.slack.event({"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home"})
    view = poll(lambda: inprocess.fake.home(user), timeout=30, what="the home tab")
    text = "\n".join(iter_texts(view["blocks"]))
    assert view["type"] == "home"
    assert "`quick:main`: queued" in text and "other:main" not in text
    assert "*sales-agent*: unigram-v2, val_f1 *0.86* (higher is better)" in text
    assert "ship unigram-v2" in text
    inprocess.slack.event({"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "messages"})
    inprocess.drain()
    assert len(inprocess.fake.calls("views.publish")) == 1


def test_a_channel_the_bot_cant_post_in_doesnt_hold_back_the_others(watched, inprocess: Lab) -> None:  # noqa: F811
    from tasks.watch import add

    closed, open_ = unique("C"), unique("C")
    inprocess.fake.refuse_posts(closed)
    for channel in (closed, open_):
        add.add("sales-agent", channel, {"user": "U1", "channel": channel, "source": "slack"})
    end_run(watched, "late", status="FAILED")
    for _ in range(3):
        _poll_once_any()
    assert [c for c in inprocess.fake.posted(open_) if "late" in shown(c.params)]
    assert inprocess.fake.posted(closed) == []
    from models import watch as watches
    from models.db import session_scope

    with session_scope() as session:
        assert watches.pending(session) == []


def _poll_once_any() -> str:
    from tasks.client import enqueue, wait

    [outcome] = wait([enqueue("labmate.watch.poll", {}, track=True)], timeout=60)
    assert outcome in ("ok", "undelivered")
    return outcome


def test_a_watch_set_up_by_a_channels_name_is_listed_and_stopped_from_that_channel(watched, inprocess: Lab) -> None:  # noqa: F811
    """Slack sends a channel typed in a command by its name (`#ml-runs`); inside #ml-runs, `watch` and
    `unwatch` said it watched nothing, so nobody there could stop the notices."""
    starter, member = unique("U"), unique("U")
    general, runs = unique("C"), unique("C")
    inprocess.slack.command("watch sales-agent #ml-runs", user=starter, channel=general)
    [added] = inprocess.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == general)
    assert "Watching *sales-agent* in #ml-runs" in shown(added.params), shown(added.params)
    listed = inprocess.slack.command("watch", user=member, channel=runs, channel_name="ml-runs")
    assert "`sales-agent`" in listed.body and "watches no experiment" not in listed.body, listed.body
    stopped = inprocess.slack.command("unwatch sales-agent", user=member, channel=runs, channel_name="ml-runs")
    assert "No more notices about *sales-agent* here." in stopped.body, stopped.body
    again = inprocess.slack.command("watch", user=member, channel=runs, channel_name="ml-runs")
    assert "watches no experiment" in again.body, again.body
    elsewhere = inprocess.slack.command("watch", user=member, channel=unique("C"), channel_name="random")
    assert "watches no experiment" in elsewhere.body
