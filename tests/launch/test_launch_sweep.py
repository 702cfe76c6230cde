"""A real sweep: a grid of quick runs, `parallel` at a time on the embedded worker, one summary at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.messages.render import render
from bot.terminal import run_one
from labmate.launch_text import aware
from models import launches
from models.db import session_scope
from tasks.launches import sweeps

pytestmark = [pytest.mark.slow]


def test_a_sweep_runs_its_grid_two_at_a_time_and_posts_one_summary(configured, mlflow_uri) -> None:
    outcome = run_one("sweep quick lr=0.05,0.2 fail=0,2 epochs=2 parallel:2", user="U0ALICE", channel="C1")
    assert outcome.messages[0].template == "sweep_queued"
    summaries = [m for m in outcome.messages if m.template == "sweep_summary"]
    assert len(summaries) == 1, [m.template for m in outcome.messages]
    summary = summaries[0].text + json.dumps(summaries[0].blocks, ensure_ascii=False)
    assert "Sweep S1 ended: best L3 (score 0.8)" in summary  # lr=0.2, fail=0
    assert "Best configuration: *L3* with score *0.8*" in summary
    assert "2 finished · 2 failed of 4 runs" in summary
    for label, params in (("L1", "lr=0.05, fail=0"), ("L2", "lr=0.05, fail=2"), ("L3", "lr=0.2, fail=0"), ("L4", "lr=0.2, fail=2")):
        assert f"`{label}` {params}" in summary
    assert "*Did not finish*" in summary and "It failed: the training process exited with code 1." in summary
    assert "Last output: `RuntimeError: injected failure at epoch 2`" in summary
    [chart] = summaries[0].files
    assert Path(chart["path"]).is_file()
    assert [m.template for m in outcome.messages].count("sweep_card") >= 2  # posted, then final

    with session_scope() as session:
        sweep = launches.get_sweep(session, sweep_id=1)
        members = launches.members(session, sweep_id=1)
        session.expunge_all()
    assert sweep.summary == "due" and [m.status for m in members] == ["finished", "failed", "finished", "failed"]
    with session_scope() as session:  # had L4 been stopped: who stopped it, not its last line of output
        session.execute(update(launches.Launch).where(launches.Launch.id == members[3].id)
                        .values(status=launches.KILLED, reason="", stopped_by="U0BOB"))
    [context] = [c for t, c in sweeps.summary(1) if t == "sweep_summary"]
    stopped = next(r for r in context["failures"] if r["label"] == "L4")
    text = json.dumps(render("sweep_summary", context).blocks, ensure_ascii=False)
    assert stopped["stopped_by"] == "U0BOB" and "`L4` lr=0.2, fail=2: stopped by <@U0BOB>" in text
    assert all(not m.holds_slot for m in members)
    spans = [(aware(m.started_at), aware(m.ended_at)) for m in members]
    for moment, _ in spans:
        running = sum(1 for start, end in spans if start <= moment < end)
        assert running <= 2, "never more than `parallel` runs at once"
    assert max(sum(1 for s, e in spans if s <= moment < e) for moment, _ in spans) == 2


def test_a_run_cancelled_from_another_terminal_while_it_waits_for_its_slot_ends_the_sweeps_wait(
    configured, mlflow_uri, monkeypatch
) -> None:
    """Each terminal has its own in-process broker: the cancelled run's job is never sent here, so the
    sweep's `say` waited out LABMATE_JOB_TIMEOUT after the sweep had ended and then said "The run didn't
    end within 120 s … Asking again starts a new run" (exit 2)."""
    import getpass
    import os
    import subprocess
    import sys
    import threading
    import time

    from labmate.settings import reset_settings
    from tests.launch.conftest import ADMIN

    monkeypatch.setenv("LABMATE_JOB_TIMEOUT", "45")
    configured.write_text(configured.read_text() + f'[terminal]\nusers = {{ "{getpass.getuser()}" = "{ADMIN}" }}\n')
    reset_settings()
    said: dict[str, object] = {}
    sweep = threading.Thread(target=lambda: said.setdefault(
        "outcome", run_one("sweep quick epochs=20,21,22 sleep=0.1 parallel:1", user="U0ALICE", channel="C1")))
    started = time.monotonic()
    sweep.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with session_scope() as session:
            third = launches.get(session, launch_id=3)
            if third is not None and third.status == launches.QUEUED:
                break
        time.sleep(0.1)
    labmate = Path(sys.executable).with_name("labmate")
    cancel = subprocess.run([str(labmate), "say", "cancel L3"], env=dict(os.environ), capture_output=True, text=True,
                            timeout=60)
    assert cancel.returncode == 0 and "it was still queued" in cancel.stdout, cancel.stdout + cancel.stderr
    sweep.join(timeout=90)
    outcome = said["outcome"]
    assert (outcome.exit_code, outcome.unfinished) == (0, 0), [m.text for m in outcome.messages]  # type: ignore[attr-defined]
    assert time.monotonic() - started < 40, "it waited for the cancelled run's job"
    with session_scope() as session:
        assert [m.status for m in launches.members(session, sweep_id=1)] == ["finished", "finished", "killed"]
