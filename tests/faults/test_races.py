"""Concurrent requests to a real `labmate serve` that race for one row: the database decides (a unique
constraint, a conditional update), not a read before the write. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import slack_for, wait_until
from slackreq import Slack, message_ts, unique

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployment(make_lab, request):
    setup = make_lab(postgres=request.param == "postgres")
    with setup.lab.starting():
        setup.lab.serve(threads=8)
        setup.lab.worker(concurrency=2)
    return setup


def _slack(setup) -> Slack:
    return slack_for(setup.lab, setup.db_url)


def test_ten_people_reacting_at_once_log_one_decision(deployment) -> None:
    channel, ts = unique("C"), message_ts()
    deployment.lab.fake.add_message(channel, {"ts": ts, "user": "U0AUTHOR", "text": "we ship the candidate #release"})
    slack = _slack(deployment)
    people = [unique("U") for _ in range(10)]

    def react(user: str) -> int:
        answer, _ = slack.reaction(
            "reaction_added", reaction="memo", user=user, channel=channel, ts=ts, item_user="U0AUTHOR"
        )
        return answer.status

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert list(pool.map(react, people)) == [200] * 10
    replies = wait_until(
        lambda: (found := deployment.lab.fake.posted(channel)) and len(found) >= 10 and found,
        timeout=60,
        what="ten replies",
    )
    (decision,) = deployment.decisions()
    assert (decision.text, decision.author, decision.source_ts) == ("we ship the candidate", "U0AUTHOR", ts)
    texts = [r.params["text"] for r in replies]
    assert sum(f"Decision #{decision.id} logged" in t for t in texts) == 1, texts
    assert sum(f"Decision #{decision.id} was already logged from this message" in t for t in texts) == 9, texts
    assert len(deployment.audit(verb="decide")) == 10


def test_eight_concurrent_supersedes_make_one_replacement(deployment) -> None:
    channel = unique("C")
    slack = _slack(deployment)
    first = json.loads(slack.command("decide keep bigrams #features", user="U0AUTHOR", channel=channel).body)
    old_id = int(first["text"].split("#")[1].split()[0])

    def supersede(i: int) -> str:
        answer = slack.command(f"supersede {old_id} drop bigrams, take {i}", user="U0AUTHOR", channel=channel)
        return json.loads(answer.body)["text"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = list(pool.map(supersede, range(8)))
    decisions = deployment.decisions()
    assert len(decisions) == 2, [d.text for d in decisions]
    old, new = decisions
    assert old.superseded_by == new.id
    winners = [t for t in texts if f"replaces #{old_id}" in t]
    losers = [t for t in texts if f"was just replaced by #{new.id}" in t or f"was already replaced by #{new.id}" in t]
    assert len(winners) == 1 and len(losers) == 7, texts


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
def test_a_reaction_whose_message_read_times_out_is_read_again(deployment) -> None:
    """Reading the message is harmless to repeat: a Slack slower than the client timeout (1 s here)
    is asked again, and the decision is logged."""
    channel, ts = unique("C"), message_ts()
    deployment.lab.fake.add_message(channel, {"ts": ts, "user": "U0AUTHOR", "text": "we keep the baseline"})
    deployment.lab.fake.stall("conversations.history", 3)
    answer, _ = _slack(deployment).reaction(
        "reaction_added", reaction="memo", user=unique("U"), channel=channel, ts=ts, item_user="U0AUTHOR"
    )
    assert answer.status == 200
    (reply,) = wait_until(lambda: deployment.lab.fake.posted(channel), timeout=30, what="the reply")
    (decision,) = deployment.decisions()
    assert f"Decision #{decision.id} logged" in reply.params["text"]
    wait_until(lambda: len(deployment.lab.fake.calls("conversations.history")) >= 2, timeout=10, what="the second read")


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
def test_a_reaction_slack_never_lets_us_read_is_answered_not_dropped(deployment) -> None:
    channel, ts = unique("C"), message_ts()
    deployment.lab.fake.add_message(channel, {"ts": ts, "user": "U0AUTHOR", "text": "we keep the baseline"})
    deployment.lab.fake.stall("conversations.history", 3, times=10)
    _slack(deployment).reaction(
        "reaction_added", reaction="memo", user=unique("U"), channel=channel, ts=ts, item_user="U0AUTHOR"
    )
    (reply,) = wait_until(lambda: deployment.lab.fake.posted(channel), timeout=60, what="the reply")
    assert "Slack didn't answer when I read that message, so nothing was logged" in reply.params["text"]
    assert "React again in a minute" in json.dumps(reply.params.get("blocks"))
    assert deployment.decisions() == []


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
def test_a_reaction_in_a_channel_that_refuses_posts_is_answered_by_one_direct_message(deployment) -> None:
    """An event's answer has no response_url: when its channel took no posts (archived, or posting restricted
    since), the confirmation was dropped with a log line while the audit row said ok."""
    fake, channel, ts, user = deployment.lab.fake, unique("C"), message_ts(), unique("U")
    fake.add_message(channel, {"ts": ts, "user": "U0AUTHOR", "text": "we keep the baseline"})
    fake.refuse_posts(channel)
    _slack(deployment).reaction("reaction_added", reaction="memo", user=user, channel=channel, ts=ts, item_user="U0AUTHOR")

    def answers() -> list[dict]:
        return [m for m in fake.messages(user) if "Decision #" in m.get("text", "")]

    (dm,) = wait_until(answers, timeout=60, what="the direct message")
    assert dm["text"].startswith(f"Your answer from <#{channel}>:"), dm["text"]
    assert [d.text for d in deployment.decisions()] == ["we keep the baseline"]
    time.sleep(2)  # nothing retries it into a second message
    assert len(answers()) == 1 and not fake.posted(channel)


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
def test_an_event_that_fails_before_its_ack_asks_slack_to_send_it_again(deployment) -> None:
    """A fresh serve process checks the token with auth.test on its first request; when Slack doesn't
    answer that in time, the reaction can't be handled, so it answers 500 (Slack sends an event again
    after an error) instead of 200 (the event would be gone). Slack's retry is then logged once."""
    channel, ts = unique("C"), message_ts()
    deployment.lab.fake.add_message(channel, {"ts": ts, "user": "U0AUTHOR", "text": "we keep the baseline"})
    deployment.lab.fake.stall("auth.test", 3)  # the client waits 1 s; a read timeout is not retried
    slack, user = _slack(deployment), unique("U")
    event = {"type": "reaction_added", "reaction": "memo", "user": user, "item_user": "U0AUTHOR",
             "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": message_ts()}  # fmt: skip
    first, _ = slack.event(event, event_id="Ev0RETRIED")
    assert first.status == 500
    assert deployment.decisions() == []
    wait_until(lambda: deployment.lab.fake.calls("auth.test"), timeout=20, what="the stalled check to end")
    again, _ = slack.event(event, event_id="Ev0RETRIED", retry_num=1)
    assert again.status == 200
    (reply,) = wait_until(lambda: deployment.lab.fake.posted(channel), timeout=30, what="the reply")
    (decision,) = deployment.decisions()
    assert f"Decision #{decision.id} logged" in reply.params["text"]
