"""A job's reply against a Slack that fails: a real `labmate serve`, a real worker (and beat) on Redis,
the fake Slack answering 500, 429, stalling past the client's timeout, or never answering while the
worker is killed. The reply arrives exactly once, or the command's audit row says `undelivered` until Slack
takes it."""

from __future__ import annotations

import time

import pytest
from harness import slack_for, wait_until
from slackreq import Slack, unique

pytestmark = [pytest.mark.slow, pytest.mark.redis]

COMMAND = "summary no-such-experiment"  # a job-only command: the worker audits it and answers


def _slack(setup) -> Slack:
    return slack_for(setup.lab, setup.db_url)


def _ask(setup, channel: str, text: str = COMMAND) -> None:
    answer = _slack(setup).command(text, user="U0ALICE", channel=channel)
    assert answer.status == 200 and "Working on it" in answer.body, answer.body


def _replies(setup, channel: str) -> list[dict]:
    return [m for m in setup.lab.fake.messages(channel) if "no-such-experiment" in m.get("text", "")]


def _settled(setup, channel: str, *, wait: float = 60.0) -> list:
    """Once the command's audit row is closed (not running), the replies Slack holds."""
    def closed():
        rows = setup.audit(verb="summary", channel=channel)
        return rows if rows and rows[0].outcome not in ("running", "queued") else None

    rows = wait_until(closed, timeout=wait, what="the command's audit row to close")
    return rows


@pytest.fixture
def deployment(make_lab):
    setup = make_lab()
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker()
    return setup


def test_one_500_is_retried_and_the_reply_posted_once(deployment) -> None:
    channel = unique("C")
    deployment.lab.fake.fail("chat.postMessage", 1, status=500)
    _ask(deployment, channel)
    (row,) = _settled(deployment, channel)
    assert row.outcome == "user_error", deployment.lab.logs()  # the job's answer: no such experiment
    assert len(_replies(deployment, channel)) == 1
    statuses = [c.status for c in deployment.lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel]
    assert statuses == [500, 200]


def test_ten_429s_are_waited_out_and_the_reply_posted_once(deployment) -> None:
    channel = unique("C")
    deployment.lab.fake.rate_limit("chat.postMessage", 10)
    _ask(deployment, channel)
    (row,) = _settled(deployment, channel, wait=90)
    assert row.outcome == "user_error", deployment.lab.logs()
    assert len(_replies(deployment, channel)) == 1
    calls = [c for c in deployment.lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel]
    assert [c.status for c in calls] == [429] * 10 + [200]


def test_a_slack_slower_than_the_client_timeout_gets_the_reply_once(deployment) -> None:
    """Slack took the post but answered after the client gave up: the retry finds the message by its
    metadata instead of posting it again."""
    channel = unique("C")
    deployment.lab.fake.stall("chat.postMessage", 3)  # the client waits 1 s (LABMATE_SLACK_TIMEOUT)
    _ask(deployment, channel)
    (row,) = _settled(deployment, channel)
    assert row.outcome == "user_error", deployment.lab.logs()
    time.sleep(1)
    assert len(_replies(deployment, channel)) == 1
    assert deployment.lab.fake.calls("conversations.history"), "the retry should have looked before posting"


def test_a_reply_slack_refused_past_its_retries_is_delivered_once_slack_answers_again(make_lab) -> None:
    """An outage longer than the retries: the command is marked undelivered, then the reaper sends the
    job again at its retry time, and the stored answer is posted once Slack answers; the audit row ends
    with the answer's outcome and says it was late, and why."""
    setup = make_lab(LABMATE_DELIVERY_RETRIES="1")
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker()
        setup.lab.beat()
    channel = unique("C")
    setup.lab.fake.fail("chat.postMessage", 10_000, status=500)
    _ask(setup, channel)
    (row,) = _settled(setup, channel)
    assert row.outcome == "undelivered", setup.lab.logs()
    assert "Slack answered 500" in row.detail["reason"]
    (job,) = [j for j in setup.jobs() if j.task == "labmate.experiments.summary"]
    assert (job.state, job.attempts) == ("undelivered", 2)  # the first try and LABMATE_DELIVERY_RETRIES
    assert job.retry_at is not None  # tried again later, not given up
    wait_until(lambda: len(setup.lab.fake.calls("chat.postMessage")) >= 4, timeout=30,
               what="the reaper to send the job again while Slack still refuses")
    assert not _replies(setup, channel)
    setup.lab.fake.heal("chat.postMessage")
    wait_until(lambda: _replies(setup, channel), timeout=30, what="the reply once Slack answers again")
    (row,) = wait_until(lambda: [r for r in setup.audit(verb="summary", channel=channel) if r.outcome != "undelivered"],
                        timeout=30, what="the audit row's real outcome")
    assert row.outcome == "user_error", setup.lab.logs()
    assert row.detail["delivered_late"] is True and "Slack answered 500" in row.detail["reason"]
    time.sleep(2)  # the reaper keeps running: nothing posts it again
    assert len(_replies(setup, channel)) == 1
    (job,) = [j for j in setup.jobs() if j.task == "labmate.experiments.summary"]
    assert (job.state, job.retry_at) == ("done", None)


def test_an_answer_for_a_channel_the_bot_is_not_in_comes_as_a_direct_message_once_the_response_url_expired(
    deployment,
) -> None:
    """The bot can't post in the channel, so the answer goes back through the command's response_url;
    when it comes after Slack stopped taking that (30 minutes, or five messages), it reaches the person
    as one direct message that names the channel, and the command's audit row has its real outcome."""
    fake = deployment.lab.fake
    channel = unique("C")
    fake.refuse_posts(channel)
    fake.expire_response_urls()
    _ask(deployment, channel)
    (row,) = _settled(deployment, channel)
    assert row.outcome == "user_error", deployment.lab.logs()
    assert [c.status for c in fake.calls("response_url")] == [404]
    direct = [m for m in fake.messages("U0ALICE") if "no-such-experiment" in m.get("text", "")]
    assert len(direct) == 1 and direct[0]["text"].startswith(f"Your answer from <#{channel}>:"), direct


def test_a_worker_killed_while_slack_holds_its_post_posts_once_after_redelivery(make_lab) -> None:
    """The post reached Slack, the worker died before hearing back: the replacement worker (the
    reaper re-sends the job when its heartbeat stops) finds the message and doesn't post again."""
    setup = make_lab()
    with setup.lab.starting():
        setup.lab.serve()
        worker = setup.lab.worker()
        setup.lab.beat()
    channel = unique("C")
    setup.lab.fake.stall("chat.postMessage", 30)
    _ask(setup, channel)
    setup.lab.fake.wait_in_flight("chat.postMessage")
    worker.kill()
    setup.lab.worker()
    (row,) = _settled(setup, channel)
    assert row.outcome == "user_error", setup.lab.logs()
    assert len(_replies(setup, channel)) == 1
    (job,) = [j for j in setup.jobs() if j.task == "labmate.experiments.summary"]
    assert (job.state, job.attempts) == ("done", 2)


def test_the_readmes_minute_holds_at_the_default_intervals() -> None:
    """The fault labs run the reaper every second with a 3 s staleness (harness.py), so the test below
    proves the mechanism, not the README's minute at the defaults. The reaper takes a job over once its
    heartbeat is job_stale_after old (and no worker says it still runs it: a question of ASK_WORKERS_S) and
    runs every reap_every, so at the defaults a dead worker's job is taken over at most 36 s after the
    worker died, which leaves time to send and run it in the minute."""
    from labmate.settings import Settings
    from tasks.maintenance import ASK_WORKERS_S

    defaults = Settings()
    assert defaults.job_stale_after + defaults.reap_every + ASK_WORKERS_S <= 45


def test_a_whole_worker_killed_mid_job_is_picked_up_within_a_minute(make_lab) -> None:
    """The job's message would wait in Redis for the visibility timeout (an hour); the reaper notices
    the stopped heartbeat and a restarted worker answers."""
    setup = make_lab()
    with setup.lab.starting():
        setup.lab.serve()
        worker = setup.lab.worker()
        setup.lab.beat()
    channel = unique("C")
    setup.lab.fake.stall("chat.postMessage", 30, carried_out=False)  # Slack never got it
    _ask(setup, channel)
    setup.lab.fake.wait_in_flight("chat.postMessage")
    worker.kill()
    killed = time.monotonic()
    setup.lab.worker()
    wait_until(lambda: _replies(setup, channel), timeout=60, what="the reply after the worker was replaced")
    assert time.monotonic() - killed < 60
    (row,) = _settled(setup, channel)
    assert row.outcome == "user_error"
    time.sleep(1)
    assert len(_replies(setup, channel)) == 1
