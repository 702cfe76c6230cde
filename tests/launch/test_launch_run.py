"""Real launches end to end, as the terminal runs them: dispatch, the embedded Celery worker, the quick
MLflow Project in a child process, MLflow's SQLite store, the card refreshed in the terminal."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bot.terminal import Outcome, run_one
from models import launches
from models.db import session_scope
from tests.launch.conftest import PROJECT

pytestmark = [pytest.mark.slow]


def cards(outcome: Outcome) -> list[Any]:
    return [m for m in outcome.messages if m.template == "launch_card"]


def text(message: Any) -> str:
    return message.text + "\n" + json.dumps(message.blocks, ensure_ascii=False)


def row(launch_id: int) -> launches.Launch:
    with session_scope() as session:
        launch = launches.get(session, launch_id=launch_id)
        session.expunge(launch)
        return launch


def first_line(launch: launches.Launch) -> dict[str, Any]:
    from labmate.settings import get_settings

    log = get_settings().home.resolve() / "launches" / f"{launch.label}-attempt1.log"
    return json.loads(log.read_text().splitlines()[0])


def mlflow_run(run_id: str) -> Any:
    from tasks import mlflow_io

    return mlflow_io.client().get_run(run_id)


def test_a_run_goes_queued_running_finished_on_one_card(configured, mlflow_uri) -> None:
    outcome = run_one("run quick epochs=3 sleep=0.6 note='$(touch pwned); rm -rf x'", user="U0ALICE", channel="C0LAB")
    assert outcome.exit_code == 0, [text(m) for m in outcome.messages]
    assert outcome.messages[0].template == "launch_queued"
    shown = cards(outcome)
    statuses = [json.loads(json.dumps(m.blocks))[0]["text"]["text"] for m in shown]
    assert any(": *running*" in s for s in statuses), statuses
    assert ": *finished*" in statuses[-1] and all(": *finished*" not in s for s in statuses[:-1])
    final = text(shown[-1])
    assert "▰▰▰▰▰▰▰▰▰▰▰▰ 3/3 (100%)" in final
    assert "score *0.75*" in final  # primary metric first: 1 - 1/(1 + 3 * 0.1 * 10)
    assert "The first finished run of *quick* with score." in final
    assert '"action_id": "lab:cancel:0"' not in final  # no Stop button once it ended
    assert '"lab:cancel:0"' in json.dumps(shown[0].blocks)
    [chart] = shown[-1].files
    assert Path(chart["path"]).is_file()

    launch = row(1)
    assert (launch.status, launch.step, launch.total_steps, launch.attempts) == ("finished", 3, 3, 1)
    assert {"queue_ms", "claim_ms", "fetch_ms", "mlflow_ms", "spawn_ms", "spawned_at"} <= set(launch.timings)
    run = mlflow_run(launch.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "quick-L1"
    assert run.data.params["epochs"] == "3" and run.data.params["note"] == "$(touch pwned); rm -rf x"
    assert run.data.tags["labmate.launch"] == "L1" and run.data.tags["mlflow.user"] == "U0ALICE"
    assert run.data.tags["mlflow.source.type"] == "PROJECT"

    started = first_line(launch)
    assert started["argv"][started["argv"].index("--note") + 1] == "$(touch pwned); rm -rf x"
    assert started["argv"][started["argv"].index("--data") + 1] == str(PROJECT / "data" / "rows.txt")
    assert started["pgid"] == started["pid"] != os.getpgid(0)  # a process group of its own
    assert started["leaked"] == []  # no Slack token or knowledge base URL in the training process
    assert started["cwd"] == str(PROJECT)
    assert not (PROJECT / "pwned").exists() and not Path("pwned").exists()


def test_a_running_card_shows_the_experiments_tagged_primary_metric_first(configured, mlflow_uri) -> None:
    """With the primary metric only in the experiment's MLflow tag, the running card listed the metrics by
    name (`loss` first) and only the final card put the primary one first."""
    from labmate.settings import reset_settings
    from tasks import mlflow_io

    configured.write_text(configured.read_text().replace('[primary_metrics]\nquick = "score"\n', ""))
    reset_settings()
    experiment_id = mlflow_io.client().create_experiment("quick")
    mlflow_io.client().set_experiment_tag(experiment_id, mlflow_io.PRIMARY_METRIC_TAG, "score")
    # long enough for a running card with metrics on a loaded host (the card is edited every 2 s at most)
    outcome = run_one("run quick epochs=5 sleep=1", user="U0ALICE", channel="C0LAB")
    assert outcome.exit_code == 0, [text(m) for m in outcome.messages]
    running = [m.text for m in cards(outcome) if " running: " in m.text]
    assert running and all(": score " in t for t in running), [m.text for m in cards(outcome)]


def test_the_final_card_compares_with_the_experiments_previous_best(configured, mlflow_uri) -> None:
    assert run_one("run quick epochs=2 lr=0.1", user="U1", channel="C1").exit_code == 0
    worse = text(cards(run_one("run quick epochs=2 lr=0.05", user="U1", channel="C1"))[-1])
    assert "Not better than the experiment's previous best, *quick-L1* (score 0.6667): -0.1667." in worse
    better = text(cards(run_one("run quick epochs=2 lr=0.2", user="U1", channel="C1"))[-1])
    assert "Better than the experiment's previous best, *quick-L1* (score 0.6667): +0.1333." in better
    # a tie is not better, and the earlier run stays the one to beat (the tied L4 was named next, while
    # `best` named L3)
    tie = text(cards(run_one("run quick epochs=2 lr=0.2", user="U1", channel="C1"))[-1])
    assert "Not better than the experiment's previous best, *quick-L3* (score 0.8)" in tie
    after = text(cards(run_one("run quick epochs=2 lr=0.05", user="U1", channel="C1"))[-1])
    assert "Not better than the experiment's previous best, *quick-L3* (score 0.8)" in after


def test_a_failed_run_shows_why_and_the_last_lines_of_its_output(configured, mlflow_uri) -> None:
    outcome = run_one("run quick epochs=3 fail=2", user="U1", channel="C1")
    final = text(cards(outcome)[-1])
    assert ": *failed*" in final
    assert "It failed: the training process exited with code 1." in final
    assert "Last lines of its output:" in final and "RuntimeError: injected failure at epoch 2" in final
    launch = row(1)
    assert launch.status == "failed" and "about to fail at epoch 2" in launch.output_tail
    assert mlflow_run(launch.mlflow_run_id).info.status == "FAILED"


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_cancel_stops_the_process_group_and_marks_the_run_killed(configured, mlflow_uri) -> None:
    results: dict[str, Outcome] = {}
    runner = threading.Thread(
        target=lambda: results.setdefault("run", run_one("run quick epochs=200 sleep=0.2", user="U0ALICE", channel="C1"))
    )
    runner.start()
    _wait(lambda: row(1).step if _exists(1) else None, 120, "the first logged step")
    pid = first_line(row(1))["pid"]
    stopped = run_one("cancel L1", user="U0ALICE", channel="C1")
    assert stopped.messages[0].template == "launch_cancelled", text(stopped.messages[0])
    runner.join(timeout=120)
    launch = row(1)
    assert (launch.status, launch.stopped_by) == ("killed", "U0ALICE")
    assert mlflow_run(launch.mlflow_run_id).info.status == "KILLED"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    final = text(cards(results["run"])[-1])
    assert ": *killed*, stopped by <@U0ALICE>" in final and "lab:cancel" not in final
    again = run_one("cancel L1", user="U0ALICE", channel="C1")
    assert "L1 was already stopped by <@U0ALICE>" in text(again.messages[0]) and again.exit_code == 1


def _exists(launch_id: int) -> bool:
    with session_scope() as session:
        return launches.get(session, launch_id=launch_id) is not None


def test_a_run_over_its_time_limit_ends_killed(configured, mlflow_uri, tmp_path) -> None:
    from labmate.settings import reset_settings
    from tests.launch.conftest import toml

    (tmp_path / "labmate.toml").write_text(toml(time_limit=3.0))
    reset_settings()
    outcome = run_one("run quick epochs=500 sleep=0.1", user="U1", channel="C1")
    final = text(cards(outcome)[-1])
    assert ": *killed*" in final and "It reached its time limit (a few seconds) and was stopped." in final
    launch = row(1)
    assert launch.status == "killed" and launch.stopped_by is None
    assert mlflow_run(launch.mlflow_run_id).info.status == "KILLED"
