"""PostgreSQL goes away behind a proxy the test controls: connections refused (the proxy stopped) or
packets dropped (an iptables DROP on the proxy's port). Commands say the truth at once, jobs retry
and answer when the database is back, and nothing waits past Slack's three seconds."""

from __future__ import annotations

import http.client
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import answer_text, slack_for, wait_until
from slackreq import Slack, unique

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def _slack(setup) -> Slack:
    return slack_for(setup.lab, setup.db_url)



def test_refused_connections_say_nothing_was_saved_and_nothing_is(make_lab) -> None:
    setup = make_lab(postgres=True, proxy_db=True)
    setup.lab.serve()
    setup.db_proxy.stop()
    answer = _slack(setup).command("decide ship the candidate #release", user="U0ALICE", channel=unique("C"))
    text = answer_text(answer)
    assert answer.status == 200
    assert "couldn't reach the knowledge base, so nothing was saved" in text
    assert "Error id" in text
    assert "nothing you typed was lost" not in text
    setup.db_proxy.start()
    assert setup.decisions() == []


def test_a_button_pressed_while_the_database_is_down_is_told_so_at_once(make_lab) -> None:
    """A button's answer goes through a worker, whose delivery ledger is in the knowledge base: the
    "couldn't reach the knowledge base" answer waited out the outage and came once it was over, no
    longer true. It is posted by the served process at once."""
    setup = make_lab(postgres=True, proxy_db=True)
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker()
    setup.db_proxy.stop()
    channel = unique("C")
    answer = _slack(setup).block_action(action_id="lab:cancel:0", value="L1", user="U0ALICE", channel=channel)
    assert answer.status == 200
    [said] = wait_until(lambda: setup.lab.fake.calls("response_url"), timeout=10, what="the answer, during the outage")
    assert "couldn't reach the knowledge base, so nothing was saved" in said.params["text"]
    setup.db_proxy.start()
    time.sleep(3)  # a worker's copy would come now
    assert len(setup.lab.fake.calls("response_url")) == 1


def test_the_first_command_after_a_database_restart_is_saved(make_lab) -> None:
    """The Slack process doesn't ping pooled connections (Slack's three seconds): after a restart its first
    command met a dead connection and was told "couldn't reach the knowledge base" with the database up."""
    setup = make_lab(postgres=True, proxy_db=True)
    setup.lab.serve()
    slack = _slack(setup)
    assert "logged: warm the pool" in answer_text(slack.command("decide warm the pool", user="U0ALICE", channel=unique("C")))
    setup.db_proxy.stop()  # the restart: every open connection is cut
    setup.db_proxy.start()
    answer = slack.command("decide ship the candidate", user="U0ALICE", channel=unique("C"))
    assert answer.status == 200 and "logged: ship the candidate" in answer_text(answer), answer_text(answer)
    assert sorted(d.text for d in setup.decisions()) == ["ship the candidate", "warm the pool"]


def test_a_job_whose_database_is_down_retries_and_answers_when_it_is_back(make_lab) -> None:
    setup = make_lab(postgres=True, proxy_db=True)
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker()
    channel = unique("C")
    setup.db_proxy.stop()
    answer = _slack(setup).command("summary no-such-experiment", user="U0ALICE", channel=channel)
    assert "Working on it" in answer_text(answer)  # a job-only command: the bot needed no database
    time.sleep(2)  # the job meets the outage and retries with backoff
    assert not setup.lab.fake.posted(channel)
    setup.db_proxy.start()
    [reply] = wait_until(lambda: setup.lab.fake.posted(channel), timeout=60, what="the job's answer")
    assert "no-such-experiment" in reply.params["text"]
    (row,) = wait_until(
        lambda: [r for r in setup.audit(verb="summary") if r.outcome != "running"], timeout=10, what="the audit row"
    )
    assert row.outcome == "user_error"


def test_a_job_whose_database_stays_down_says_it_waits_and_answers_when_it_is_back(make_lab) -> None:
    """Past its usual retries the job tells the user, once, that it waits, and keeps retrying: it used to
    give up saying "not done", and its ledger row was run again by the reaper anyway."""
    setup = make_lab(postgres=True, proxy_db=True, LABMATE_DELIVERY_RETRIES="2")
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker()
    channel = unique("C")
    setup.db_proxy.stop()
    _slack(setup).command("summary no-such-experiment", user="U0ALICE", channel=channel)
    [waiting] = wait_until(lambda: setup.lab.fake.posted(channel), timeout=60, what="the message that it waits")
    assert "so this is waiting: it runs by itself once the knowledge base is back" in waiting.params["text"]
    time.sleep(3)  # more retries, none of them tells the user again
    assert len(setup.lab.fake.posted(channel)) == 1
    setup.db_proxy.start()
    wait_until(lambda: len(setup.lab.fake.posted(channel)) == 2, timeout=60, what="the job's answer")
    assert "no-such-experiment" in setup.lab.fake.posted(channel)[1].params["text"]


def test_a_stored_job_waiting_out_the_database_runs_once_when_it_is_back(make_lab) -> None:
    """A decision's link check (stored with the decision) meets the outage: the user is told it runs once
    the database is back, not "not done, try again" (trying again duplicated the decision, and the check
    ran anyway when the reaper found its row). Its own retry and the reaper's re-send run it once."""
    setup = make_lab(postgres=True, proxy_db=True, LABMATE_DELIVERY_RETRIES="1")
    setup.lab.serve()
    worker = setup.lab.worker()
    worker.pause()  # the check waits in the queue while the database goes
    channel = unique("C")
    answer = _slack(setup).command("decide ship it run:0a1b2c3d4e5f60718293a4b5c6d7e8f9", user="U0ALICE", channel=channel)
    assert "Decision #1" in answer_text(answer)
    setup.db_proxy.stop()
    worker.resume()
    [waiting] = wait_until(lambda: setup.lab.fake.posted(channel), timeout=60, what="the message that it waits")
    assert "it runs by itself once the knowledge base is back" in waiting.params["text"], waiting.params["text"]
    setup.db_proxy.start()
    from sqlalchemy import text

    from models.db import session_scope

    with session_scope(setup.db_url) as session:  # as if the reaper's 15 minutes for a lost queued job had passed
        session.execute(text("UPDATE jobs SET enqueued_at = enqueued_at - interval '16 minutes'"))
    setup.lab.beat()
    wait_until(lambda: len(setup.lab.fake.posted(channel)) >= 2, timeout=60, what="the check's answer")
    time.sleep(2)
    texts = [p.params["text"] for p in setup.lab.fake.posted(channel)]
    assert len(texts) == 2 and "Decision #1" in texts[1], texts
    assert [d.text for d in setup.decisions()] == ["ship it"]


def test_a_black_holed_database_fails_commands_within_slacks_three_seconds(make_lab, blackholes) -> None:
    setup = make_lab(postgres=True, proxy_db=True)
    setup.lab.serve()
    slack = _slack(setup)
    assert slack.command("decide warm the pool", user="U0ALICE", channel=unique("C")).status == 200
    setup.db_proxy.blackhole()
    try:
        def decide(i: int) -> tuple[float, str]:
            started = time.perf_counter()
            answer = slack.command(f"decide ship it {i}", user="U0ALICE", channel=unique("C"))
            return time.perf_counter() - started, answer_text(answer)

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(decide, range(4)))
            started = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", setup.lab.port, timeout=5)
            connection.request("GET", "/healthz")
            assert connection.getresponse().status == 200
            health = time.perf_counter() - started
        for took, text in results:
            assert took < 3.0, (took, text)
            assert "couldn't reach the knowledge base, so nothing was saved" in text
        assert health < 3.0
    finally:
        setup.db_proxy.restore()
    assert [d.text for d in setup.decisions()] == ["warm the pool"]
