"""Redis goes away (a proxy in front of it, stopped by the test) while `labmate serve` takes commands.

A decision is a fact once stored: the reply says so and that its follow-up job is delayed; the job
is sent when Redis is back. A job-only command that could not be queued says it was not started,
and the same command after the outage is answered normally (no reply is cached from the outage)."""

from __future__ import annotations

import time

import pytest
from harness import answer_text, slack_for, wait_until
from slackreq import Slack, unique

pytestmark = [pytest.mark.slow, pytest.mark.redis]

RUN = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@pytest.fixture
def deployment(make_lab):
    setup = make_lab(proxy_redis=True)
    setup.lab.serve()
    return setup


def _slack(setup) -> Slack:
    return slack_for(setup.lab, setup.db_url)



def test_a_decision_during_an_outage_is_stored_and_its_link_check_runs_after(deployment) -> None:
    channel = unique("C")
    deployment.redis_proxy.stop()
    started = time.perf_counter()
    answer = _slack(deployment).command(f"decide ship it run:{RUN} #release", user="U0ALICE", channel=channel)
    took = time.perf_counter() - started
    text = answer_text(answer)
    assert answer.status == 200
    assert "Decision #1" in text and "logged" in text
    assert "job queue is unreachable" in text and "will start when it is back" in text
    assert "went wrong" not in text
    assert took < 3.0
    (decision,) = deployment.decisions()
    assert decision.text == "ship it"
    (job,) = deployment.jobs()
    assert (job.task, job.state, job.enqueued_at) == ("labmate.decisions.check_links", "queued", None)

    deployment.redis_proxy.start()
    with deployment.lab.starting():
        deployment.lab.worker()
        deployment.lab.beat()
    wait_until(
        lambda: deployment.lab.fake.posted(channel), timeout=60, what="the link check's reply after the outage"
    )
    (decision,) = deployment.decisions()
    assert [link.status for link in decision.links] == ["missing"]
    (row,) = deployment.audit(verb="decide")
    wait_until(lambda: deployment.audit(verb="decide")[0].outcome == "ok", timeout=30, what="the audit row to close")
    assert row.user == "U0ALICE"


def test_a_retried_decide_after_the_outage_creates_no_duplicate(deployment) -> None:
    """The user saw "saved" during the outage, so there is nothing to retry; the same text sent again
    is a second decision only if they send it again on purpose (a new trigger id)."""
    channel = unique("C")
    deployment.redis_proxy.stop()
    slack = _slack(deployment)
    body = slack.command_body(f"decide keep the tokenizer run:{RUN}", user="U0BOB", channel=channel)
    from slackreq import FORM

    first = slack.send(body, FORM)
    assert "Decision #" in answer_text(first)
    deployment.redis_proxy.start()
    again = slack.send(body, FORM)  # the same request once the queue is back (same trigger id)
    assert first.status == again.status == 200
    assert len(deployment.decisions()) == 1
    assert len(deployment.jobs()) == 1


def test_a_job_command_during_an_outage_says_not_started_and_nothing_is_cached(deployment) -> None:
    channel = unique("C")
    slack = _slack(deployment)
    before = answer_text(slack.command("summary sales-agent", user="U0CAROL", channel=channel))
    assert "Working on it" in before

    deployment.redis_proxy.stop()
    during = answer_text(slack.command("summary sales-agent", user="U0CAROL", channel=channel))
    assert "couldn't reach the job queue" in during and "not started" in during
    assert "Working on it" not in during
    (row,) = [r for r in deployment.audit(verb="summary") if r.outcome == "error"]
    assert row.error_id

    deployment.redis_proxy.start()
    after = answer_text(slack.command("summary sales-agent", user="U0CAROL", channel=channel))
    assert "Working on it" in after, after
    assert row.error_id not in after
