"""Launches under faults, with real processes: `labmate serve`, a `launch` worker and a `default` worker,
beat, Redis (behind a proxy the test can stop), the fake Slack, and a real training process.

- A launch worker SIGKILLed mid-run: the training process dies with it, and the reaper marks the launch
  and its MLflow run failed and edits the card; the launch never stays `running`.
- Slack answering 429 to card edits: the run goes on unaffected and the final card arrives, once.
- Slack refusing card edits for longer than the delivery retries: the final card lands once it answers.
- A launch while the broker is down: the user is told it is stored and starts when the queue is back;
  it then runs once.
- Racing cancels (and a cancel racing the end of the run): the launch, its MLflow run and its card agree.
- PostgreSQL away for longer than a heartbeat may be stale: the run goes on and finishes, once.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fakeslack import iter_texts
from harness import wait_until
from slackreq import OverHTTP, Slack, unique

from tests.experiments.conftest import empty_mlflow_db  # noqa: F401
from tests.launch.conftest import toml

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def deploy(make_lab: Any, tmp_path: Path, empty_db: Path, *, postgres: bool = False, proxy_redis: bool = False,
           proxy_db: bool = False, **limits: Any):
    mlflow_db = tmp_path / f"mlflow-{unique('m')}.db"
    shutil.copy(empty_db, mlflow_db)
    setup = make_lab(postgres=postgres, proxy_redis=proxy_redis, proxy_db=proxy_db,
                     MLFLOW_TRACKING_URI=f"sqlite:///{mlflow_db}", LABMATE_LAUNCH_PROGRESS_EVERY="0.5")
    (setup.lab.home / "labmate.toml").write_text(toml(**limits))
    setup.extra["mlflow"] = f"sqlite:///{mlflow_db}"
    return setup


def start(setup: Any, *, beat: bool = True) -> Any:
    """The served app, a `launch` and a `default` worker (and beat), started together; the launch worker."""
    with setup.lab.starting():
        setup.lab.serve()
        launcher = setup.lab.worker(queues="launch")
        setup.lab.worker(queues="default")
        if beat:
            setup.lab.beat()
    return launcher


def slack(setup: Any) -> Slack:
    return Slack(OverHTTP(setup.lab.port), setup.db_url, response_base=setup.lab.fake.base_url + "response/")


def launch_row(setup: Any, launch_id: int = 1) -> Any:
    from models import launches
    from models.db import session_scope

    with session_scope(setup.db_url) as session:
        row = launches.get(session, launch_id=launch_id)
        if row is not None:
            session.expunge(row)
        return row


def mlflow_status(setup: Any, run_id: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient(tracking_uri=setup.extra["mlflow"]).get_run(run_id).info.status)


def card_texts(setup: Any, channel: str, key: str = "launch:1") -> list[str]:
    calls = [
        c for c in setup.lab.fake.calls() if c.method in ("chat.postMessage", "chat.update") and c.ok
        and c.params.get("channel") == channel and (c.params.get("metadata") or {}).get("event_payload", {}).get("key") == key
    ]
    return ["\n".join([c.params.get("text", ""), *iter_texts(c.params.get("blocks", []))]) for c in calls]


def training_pid(setup: Any, launch: Any) -> int:
    log = setup.lab.home / "launches" / f"{launch.label}-attempt1.log"
    return int(json.loads(log.read_text().splitlines()[0])["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_launch_worker_killed_mid_run_ends_the_launch_failed(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup = deploy(make_lab, tmp_path, empty_mlflow_db)
    launcher = start(setup)
    channel = unique("C")
    answer = slack(setup).command("run quick epochs=500 sleep=0.2", user="U0ALICE", channel=channel)
    assert "*L1* queued" in answer.body
    wait_until(lambda: any("▰" in t for t in card_texts(setup, channel)), timeout=120, what="the card's progress")
    launch = launch_row(setup)
    pid = training_pid(setup, launch)
    assert alive(pid)

    launcher.kill()  # SIGKILL: no clean-up runs in the worker
    killed = time.monotonic()
    wait_until(lambda: not alive(pid), timeout=10, what="the training process to die with its worker")
    ended = wait_until(lambda: (row := launch_row(setup)).status != "running" and row, timeout=60, what="the reaper")
    assert (ended.status, ended.reason) == ("failed", "It failed: its worker stopped while running it.")
    assert time.monotonic() - killed < 60
    wait_until(lambda: mlflow_status(setup, ended.mlflow_run_id) == "FAILED", timeout=60, what="the MLflow run to fail")
    final = wait_until(
        lambda: [t for t in card_texts(setup, channel) if ": *failed*" in t], timeout=60, what="the card to say failed"
    )
    assert "It failed: its worker stopped while running it." in final[-1] and "Stop" not in final[-1]
    jobs = {j.task: j.state for j in setup.jobs()}
    assert jobs["labmate.launch.run"] == "failed"
    time.sleep(3)  # the reaper keeps running: nothing starts the launch again
    assert launch_row(setup).status == "failed" and launch_row(setup).attempts == 1


def test_slack_429s_on_card_edits_delay_the_card_not_the_run(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup = deploy(make_lab, tmp_path, empty_mlflow_db)
    start(setup, beat=False)
    channel = unique("C")
    setup.lab.fake.rate_limit("chat.update", 12)
    answer = slack(setup).command("run quick epochs=8 sleep=0.5", user="U0ALICE", channel=channel)
    assert "*L1* queued" in answer.body
    ended = wait_until(lambda: (row := launch_row(setup)) and row.status != "queued" and row.status != "running" and row,
                       timeout=120, what="the run to end")
    assert ended.status == "finished" and ended.step == 8
    assert mlflow_status(setup, ended.mlflow_run_id) == "FINISHED"
    took = (ended.ended_at - ended.started_at).total_seconds()
    assert took < 60
    wait_until(lambda: any(": *finished*" in t for t in card_texts(setup, channel)), timeout=90, what="the final card")
    statuses = [c.status for c in setup.lab.fake.calls("chat.update") if c.params.get("channel") == channel]
    assert statuses.count(429) == 12, statuses
    posts = [c for c in setup.lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel and c.ok]
    assert len(posts) == 1
    texts = card_texts(setup, channel)
    assert ": *finished*" in texts[-1] and not any(": *running*" in t for t in texts[texts.index(next(t for t in texts if ": *finished*" in t)):])


def test_a_run_on_the_served_apps_embedded_worker_trains_with_labmates_own_python(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    """`labmate serve` on the embedded broker, without the virtualenv on PATH, as a user runs it: inside uWSGI
    `sys.executable` is the base interpreter, and the MLproject's `python` was that one (no mlflow: the run
    failed at once)."""
    setup = deploy(make_lab, tmp_path, empty_mlflow_db)
    venv_bin = str(Path(sys.executable).parent)
    setup.lab.env["PATH"] = os.pathsep.join(p for p in setup.lab.env["PATH"].split(os.pathsep) if p != venv_bin)
    setup.lab.env["LABMATE_BROKER_URL"] = "memory://"
    setup.lab.serve()
    channel = unique("C")
    answer = slack(setup).command("run quick epochs=2 sleep=0.1", user="U0ALICE", channel=channel)
    assert "*L1* queued" in answer.body
    ended = wait_until(lambda: (row := launch_row(setup)) and row.status not in ("queued", "running") and row,
                       timeout=120, what="the run to end")
    assert (ended.status, ended.step) == ("finished", 2), ended.output_tail
    assert mlflow_status(setup, ended.mlflow_run_id) == "FINISHED"


def test_a_final_card_slack_would_not_edit_says_how_the_run_ended_once_slack_answers(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    """Slack refuses every card edit for longer than the delivery retries: the launch job ends undelivered,
    and the reaper sends it again until Slack takes the final card (it stayed `running` for good)."""
    setup = deploy(make_lab, tmp_path, empty_mlflow_db)
    setup.lab.env["LABMATE_DELIVERY_RETRIES"] = "1"
    start(setup)
    channel = unique("C")
    setup.lab.fake.fail("chat.update", 10_000, status=500)
    answer = slack(setup).command("run quick epochs=4 sleep=0.2", user="U0ALICE", channel=channel)
    assert "*L1* queued" in answer.body
    ended = wait_until(lambda: (row := launch_row(setup)) and row.status not in ("queued", "running") and row,
                       timeout=120, what="the run to end")
    assert ended.status == "finished"
    wait_until(lambda: {j.task: j.state for j in setup.jobs()}.get("labmate.launch.run") == "undelivered",
               timeout=60, what="the launch job to end undelivered")
    assert not any(": *finished*" in t for t in card_texts(setup, channel))
    setup.lab.fake.heal("chat.update")
    wait_until(lambda: any(": *finished*" in t for t in card_texts(setup, channel)), timeout=60,
               what="the final card once Slack answers again")
    wait_until(lambda: {j.task: j.state for j in setup.jobs()}.get("labmate.launch.run") == "done", timeout=30,
               what="the launch job to end done")
    time.sleep(2)
    posts = [c for c in setup.lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel and c.ok]
    assert len(posts) == 1  # edited in place, not posted again
    assert launch_row(setup).attempts == 1  # the late delivery didn't run the training again


def test_a_launch_while_the_broker_is_down_is_stored_whole_and_runs_when_it_is_back(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup = deploy(make_lab, tmp_path, empty_mlflow_db, proxy_redis=True)
    setup.lab.serve()
    channel = unique("C")
    setup.redis_proxy.stop()
    answer = slack(setup).command("run quick epochs=2", user="U0ALICE", channel=channel)
    body = json.loads(answer.body)
    shown = body["text"] + json.dumps(body["blocks"])
    assert answer.status == 200
    assert "*L1* queued" in shown
    assert "The job queue is unreachable, so launch L1 and its card will start when it is back." in shown
    launch = launch_row(setup)
    assert launch.status == "queued" and launch.mlflow_run_id is None
    assert sorted((j.task, j.state, j.enqueued_at) for j in setup.jobs()) == [
        ("labmate.launch.run", "queued", None), ("labmate.launches.card", "queued", None),
    ]
    assert setup.lab.fake.posted(channel) == []

    setup.redis_proxy.start()
    with setup.lab.starting():
        setup.lab.worker(queues="launch")
        setup.lab.worker(queues="default")
        setup.lab.beat()
    wait_until(lambda: any(": *finished*" in t for t in card_texts(setup, channel)), timeout=120, what="the run after the outage")
    assert launch_row(setup).attempts == 1
    assert [c for c in setup.lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel and c.ok].__len__() == 1


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_racing_cancels_end_the_launch_once_and_everything_agrees(make_lab, tmp_path, empty_mlflow_db, database) -> None:  # noqa: F811
    setup = deploy(make_lab, tmp_path, empty_mlflow_db, postgres=database == "postgres")
    with setup.lab.starting():
        setup.lab.serve(threads=8)
        setup.lab.worker(queues="launch", concurrency=2)
        setup.lab.worker(queues="default", concurrency=2)
    channel = unique("C")
    client = slack(setup)
    client.command("run quick epochs=500 sleep=0.2", user="U0ALICE", channel=channel)
    wait_until(lambda: (row := launch_row(setup)) and row.step, timeout=120, what="the run's first step")

    def cancel(_: int) -> str:
        return client.command("cancel L1", user="U0ALICE", channel=channel).body

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(cancel, range(8)))
    assert sum("Stopping *L1*" in a for a in answers) == 1, answers
    assert sum("L1 was already stopped by &lt;@U0ALICE&gt;" in a or "L1 was already stopped by <@U0ALICE>" in a
               for a in answers) == 7, answers
    ended = wait_until(lambda: (row := launch_row(setup)).status != "running" and row, timeout=30, what="the end")
    assert (ended.status, ended.stopped_by) == ("killed", "U0ALICE")
    wait_until(lambda: mlflow_status(setup, ended.mlflow_run_id) == "KILLED", timeout=60, what="the MLflow run KILLED")
    wait_until(lambda: any(": *killed*" in t for t in card_texts(setup, channel)), timeout=60, what="the card")

    # A cancel racing the end of short runs: whichever wins, the launch, MLflow and the card agree.
    for n in range(2, 5):
        client.command("run quick epochs=1", user="U0ALICE", channel=channel)
        wait_until(lambda n=n: (row := launch_row(setup, n)) and row.status == "running" and row.mlflow_run_id,
                   timeout=120, what=f"L{n} to start")
        client.command(f"cancel L{n}", user="U0ALICE", channel=channel)
        row = wait_until(lambda n=n: (r := launch_row(setup, n)).status not in ("queued", "running") and r,
                         timeout=60, what=f"L{n} to end")
        assert row.status in ("finished", "killed")
        expected = {"finished": "FINISHED", "killed": "KILLED"}[row.status]
        wait_until(lambda row=row, expected=expected: mlflow_status(setup, row.mlflow_run_id) == expected,
                   timeout=60, what=f"MLflow to agree with L{n}")
        wait_until(lambda n=n, row=row: any(f": *{row.status}*" in t for t in card_texts(setup, channel, f"launch:{n}")),
                   timeout=60, what=f"the card of L{n} to agree")
        time.sleep(1)
        assert launch_row(setup, n).status == row.status
        assert mlflow_status(setup, row.mlflow_run_id) == expected


def test_a_frozen_launch_worker_is_given_up_and_stops_its_run_when_it_wakes(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    """SIGSTOP, not SIGKILL: the heartbeat stops, the reaper fails the launch; when the worker wakes up, its
    supervisor finds the launch ended and stops the training process instead of finishing it."""
    setup = deploy(make_lab, tmp_path, empty_mlflow_db)
    launcher = start(setup)
    channel = unique("C")
    slack(setup).command("run quick epochs=500 sleep=0.2", user="U0ALICE", channel=channel)
    wait_until(lambda: (row := launch_row(setup)) and row.step, timeout=120, what="the run's first step")
    pid = training_pid(setup, launch_row(setup))
    launcher.pause()
    try:
        ended = wait_until(lambda: (row := launch_row(setup)).status != "running" and row, timeout=60, what="the reaper")
        assert (ended.status, ended.reason) == ("failed", "It failed: its worker stopped while running it.")
        assert alive(pid), "frozen with its worker's supervisor, the training process itself still runs"
    finally:
        launcher.resume()
    wait_until(lambda: not alive(pid), timeout=30, what="the woken supervisor to stop the training process")
    time.sleep(2)
    final = launch_row(setup)
    assert (final.status, final.attempts) == ("failed", 1)
    wait_until(lambda: mlflow_status(setup, final.mlflow_run_id) == "FAILED", timeout=30, what="MLflow to agree")
    wait_until(lambda: ": *failed*" in card_texts(setup, channel)[-1], timeout=30, what="the card to end failed")
    assert not any(": *finished*" in t for t in card_texts(setup, channel))  # the woken run never claimed it


@pytest.mark.postgres
def test_a_database_outage_longer_than_the_heartbeats_staleness_leaves_a_healthy_launch_running(
    make_lab, tmp_path, empty_mlflow_db  # noqa: F811
) -> None:
    """The worker can't stamp the heartbeat while PostgreSQL is away, and the reaper often runs before its
    first stamp once the database is back. The worker, asked over the broker, still runs the job: the
    launch is left to it (it was failed, and its training process stopped, in most tries before)."""
    setup = deploy(make_lab, tmp_path, empty_mlflow_db, postgres=True, proxy_db=True)
    start(setup)
    channel = unique("C")
    slack(setup).command("run quick epochs=100 sleep=0.2", user="U0ALICE", channel=channel)
    wait_until(lambda: (row := launch_row(setup)) and row.step, timeout=120, what="the run's first step")
    pid = training_pid(setup, launch_row(setup))
    assert setup.db_proxy is not None
    setup.db_proxy.stop()
    time.sleep(8)  # the lab's heartbeat is stale after 3 s; the reaper looks every second
    setup.db_proxy.start()
    ended = wait_until(lambda: (row := launch_row(setup)).status != "running" and row, timeout=120,
                       what="the launch to end")  # fmt: skip
    assert (ended.status, ended.reason, ended.attempts) == ("finished", "", 1), setup.lab.logs()
    assert not alive(pid)
    assert mlflow_status(setup, ended.mlflow_run_id) == "FINISHED"
    wait_until(lambda: ": *finished*" in card_texts(setup, channel)[-1], timeout=30, what="the card to end finished")
