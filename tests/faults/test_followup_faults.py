"""The follow-up jobs a command stores with its own commit (the outbox), against a Slack that fails, with
real processes: `labmate serve`, workers (and beat) on Redis, the fake Slack, a real MLflow store.

- A decision's link check, its worker SIGKILLed while Slack holds its answer (the post was carried out,
  Slack never answered): the reaper re-sends the job, the replacement finds the answer by its key and
  posts nothing twice; the channel holds one answer and the job ends `done`.
- The same link check while Slack answers 429 to its post: waited out, the answer posted once.
- A launch whose card Slack refuses every time (500 to every post and edit, or to every edit only, for
  longer than the delivery retries last): the run still finishes (its row `finished`, its MLflow run
  FINISHED), no job is left `running` or `queued`, and the launch job, which delivers the final card, ends
  `undelivered`, as does the command's audit row, with Slack's answer as the reason. With posts refused the
  card job (the queued card) ends `undelivered` too; with edits refused the card stays one message.
- A launch in a channel the bot is not in: the queued card and the launch's end both reach the person
  through the command's response_url.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from harness import answer_text, slack_for, wait_until
from slackreq import unique

from tests.experiments.conftest import empty_mlflow_db  # noqa: F401
from tests.faults.test_launch_faults import launch_row, mlflow_status
from tests.launch.conftest import toml

pytestmark = [pytest.mark.slow, pytest.mark.redis]

CHECK_LINKS = "labmate.decisions.check_links"
LAUNCH_RUN = "labmate.launch.run"
LAUNCH_CARD = "labmate.launches.card"
ENDED = ("done", "failed", "undelivered")


def _mlflow(tmp_path: Path, empty_db: Path) -> str:
    mlflow_db = tmp_path / f"mlflow-{unique('m')}.db"
    shutil.copy(empty_db, mlflow_db)
    return f"sqlite:///{mlflow_db}"


# -- a decision's link check -------------------------------------------------------------------


def decision_lab(make_lab: Any, tmp_path: Path, empty_db: Path) -> tuple[Any, str]:
    """A lab with an MLflow store holding one finished run of sales-agent (the run a decision links)."""
    from mlflow import MlflowClient

    uri = _mlflow(tmp_path, empty_db)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("sales-agent", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment_id, run_name="candidate", tags={"mlflow.user": "dana"})
    client.set_terminated(run.info.run_id, status="FINISHED")
    setup = make_lab(MLFLOW_TRACKING_URI=uri)
    return setup, str(run.info.run_id)


def decide(setup: Any, channel: str, run_id: str) -> int:
    answer = slack_for(setup.lab, setup.db_url).command(f"decide ship it run:{run_id}", user="U0ALICE", channel=channel)
    assert answer.status == 200 and "logged" in answer_text(answer), answer.body
    (decision,) = setup.decisions()
    return int(decision.id)


def link_answers(setup: Any, channel: str, decision_id: int) -> list[dict[str, Any]]:
    """The link check's answers the channel holds (a post Slack carried out counts, answered or not)."""
    return [m for m in setup.lab.fake.messages(channel) if m.get("text", "").startswith(f"Decision #{decision_id}: ")]


def ended_job(setup: Any, task: str, *, timeout: float = 90) -> Any:
    def ended() -> Any:
        found = [j for j in setup.jobs() if j.task == task]
        return found[0] if len(found) == 1 and found[0].state in ENDED else None

    try:
        return wait_until(ended, timeout=timeout, what=f"the {task} job to end")
    except AssertionError:
        raise AssertionError(f"{[(j.task, j.state) for j in setup.jobs()]}\n{setup.lab.logs()}") from None


def test_a_link_check_worker_killed_while_slack_holds_its_answer_posts_it_once(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup, run_id = decision_lab(make_lab, tmp_path, empty_mlflow_db)
    with setup.lab.starting():
        setup.lab.serve()
        worker = setup.lab.worker()
        setup.lab.beat()
    channel = unique("C")
    # Carried out at once, answered only after 20 s: the worker (its client gives up after 1 s) is killed
    # while Slack holds the post, so nothing it recorded says the answer was posted.
    setup.lab.fake.stall("chat.postMessage", 20)
    decision_id = decide(setup, channel, run_id)
    setup.lab.fake.wait_in_flight("chat.postMessage", timeout=90)
    worker.kill()
    assert len(link_answers(setup, channel, decision_id)) == 1  # Slack has it: the replacement must not post it again
    setup.lab.worker()
    job = ended_job(setup, CHECK_LINKS)
    assert job.state == "done", (job.state, job.error, setup.lab.logs()[-3000:])
    assert job.attempts >= 2  # the replacement ran it again: the killed execution never ended it
    answers = link_answers(setup, channel, decision_id)
    assert len(answers) == 1, (answers, setup.lab.logs())
    assert answers[0]["text"] == f"Decision #{decision_id}: links checked"
    (decision,) = setup.decisions()
    assert [(link.kind, link.ref, link.status) for link in decision.links] == [("run", run_id, "ok")]
    (row,) = setup.audit(verb="decide")
    assert row.outcome == "ok"


def test_slack_429s_to_the_link_checks_answer_are_waited_out_and_it_is_posted_once(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup, run_id = decision_lab(make_lab, tmp_path, empty_mlflow_db)
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker()
    channel = unique("C")
    # More than the Slack client's own two retries of a 429: the job's Celery retry has to wait them out too.
    setup.lab.fake.rate_limit("chat.postMessage", 6, where=lambda params: params.get("channel") == channel)
    decision_id = decide(setup, channel, run_id)
    job = ended_job(setup, CHECK_LINKS)
    assert job.state == "done", (job.state, job.error, setup.lab.logs()[-3000:])
    answers = link_answers(setup, channel, decision_id)
    assert [a["text"] for a in answers] == [f"Decision #{decision_id}: links checked"], setup.lab.logs()
    statuses = [c.status for c in setup.lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel]
    assert statuses == [429] * 6 + [200]
    (row,) = setup.audit(verb="decide")
    assert row.outcome == "ok"


# -- a launch whose card never gets through --------------------------------------------------------


def launch_lab(make_lab: Any, tmp_path: Path, empty_db: Path) -> Any:
    """serve, a `launch` worker and a `default` worker; two delivery retries, so a refused card ends fast."""
    uri = _mlflow(tmp_path, empty_db)
    setup = make_lab(MLFLOW_TRACKING_URI=uri, LABMATE_LAUNCH_PROGRESS_EVERY="0.5", LABMATE_DELIVERY_RETRIES="2")
    setup.extra["mlflow"] = uri
    (setup.lab.home / "labmate.toml").write_text(toml())
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker(queues="launch")
        setup.lab.worker(queues="default")
    return setup


def run_to_the_end(setup: Any, channel: str) -> Any:
    """`run quick`, waited for until the launch ends: it must end finished, and MLflow agree."""
    answer = slack_for(setup.lab, setup.db_url).command("run quick epochs=3 sleep=0.1", user="U0ALICE", channel=channel)
    assert answer.status == 200 and "*L1* queued" in answer.body, answer.body
    ended = wait_until(lambda: (row := launch_row(setup)) and row.status not in ("queued", "running") and row,
                       timeout=120, what="the launch to end")  # fmt: skip
    assert (ended.status, ended.step) == ("finished", 3), (ended.status, ended.reason, setup.lab.logs())
    wait_until(lambda: mlflow_status(setup, ended.mlflow_run_id) == "FINISHED", timeout=30, what="the MLflow run FINISHED")
    return ended


@pytest.mark.parametrize("refused", ["posts-and-edits", "edits"])
def test_a_launch_whose_card_slack_always_refuses_finishes_and_the_card_ends_undelivered(
    make_lab, tmp_path, empty_mlflow_db, refused  # noqa: F811
) -> None:
    """Slack answers 500 to every post and edit of the card (or to every edit only), far more often than
    the delivery retries: the run doesn't wait for Slack, and nothing is left pretending to go on."""
    setup = launch_lab(make_lab, tmp_path, empty_mlflow_db)
    fake = setup.lab.fake
    if refused == "posts-and-edits":
        fake.fail("chat.postMessage", 1000, status=500)
    fake.fail("chat.update", 1000, status=500)
    channel = unique("C")
    run_to_the_end(setup, channel)

    run_job, card_job = ended_job(setup, LAUNCH_RUN), ended_job(setup, LAUNCH_CARD)
    assert not [(j.task, j.state) for j in setup.jobs() if j.state not in ENDED]
    # The launch job delivers the final card: Slack never took it, and the ledger and the command's audit
    # row say so, with Slack's answer.
    assert run_job.state == "undelivered", ([(j.task, j.state, j.error) for j in setup.jobs()], setup.lab.logs())
    (row,) = setup.audit(verb="run")
    assert row.outcome == "undelivered" and "Slack answered 500" in row.detail["reason"], (row.outcome, row.detail)
    if refused == "posts-and-edits":
        # The card job (the queued card) never got its post through either.
        assert card_job.state == "undelivered", ([(j.task, j.state, j.error) for j in setup.jobs()], setup.lab.logs())
        assert "Slack answered 500" in card_job.error and "to chat.postMessage" in run_job.error
        assert fake.posted(channel) == [] and fake.messages(channel) == []
    else:
        # The card was posted (by the card job, or the launch's first progress update), once: a refused
        # edit is retried as an edit, never turned into a second card.
        assert "to chat.update" in run_job.error
        assert len(fake.posted(channel)) == 1 and len(fake.messages(channel)) == 1
    assert launch_row(setup).status == "finished"  # what Slack refused changed nothing about the run


def test_a_launch_in_a_channel_the_bot_is_not_in_tells_its_end_privately_too(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    """The queued card went to the person through the command's response_url (Slack: not_in_channel); the
    finished card went nowhere while the ledger and the audit row said delivered."""
    setup = launch_lab(make_lab, tmp_path, empty_mlflow_db)
    channel = unique("C")
    setup.lab.fake.refuse_posts(channel)
    run_to_the_end(setup, channel)
    told = wait_until(lambda: [c for c in setup.lab.fake.calls("response_url") if "finished" in str(c.params)],
                      timeout=60, what="the finished card through the response_url")  # fmt: skip
    assert len(told) == 1
    assert len(setup.lab.fake.calls("response_url")) == 2  # the queued card, then its end: no step between
    assert setup.lab.fake.messages(channel) == []
