"""A launch that labmate saw finish is in the run index when its card goes out: the next answer, inside the
index's freshness window (where answers read only the index), agrees with the card."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.terminal import Outcome, run_one

pytestmark = [pytest.mark.slow]


def text(outcome: Outcome) -> str:
    return "\n".join(m.text + "\n" + json.dumps(m.blocks, ensure_ascii=False) for m in outcome.messages)


def final_card(outcome: Outcome) -> str:
    [*_, card] = [m for m in outcome.messages if m.template == "launch_card"]
    return card.text + "\n" + json.dumps(card.blocks, ensure_ascii=False)


def test_the_answer_right_after_a_launch_ends_agrees_with_its_card(
    configured: Any, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.experiments import sync

    assert run_one("run quick epochs=2 lr=0.1", user="U1", channel="C1").exit_code == 0
    before = text(run_one("best quick score", user="U1", channel="C1"))  # builds the index: fresh for MAX_AGE
    assert "Best in quick by score: quick-L1 (0.6667)" in before, before
    card = final_card(run_one("run quick epochs=2 lr=0.2", user="U1", channel="C1"))
    assert "Better than the experiment's previous best, *quick-L1* (score 0.6667): +0.1333." in card

    synced: list[str] = []
    monkeypatch.setattr(sync, "refresh", lambda experiment, **_kw: synced.append(experiment.name))
    best = text(run_one("best quick score", user="U1", channel="C1"))
    assert "Best in quick by score: quick-L2 (0.8)" in best, best
    runs = text(run_one("runs quick", user="U1", channel="C1"))
    assert "2 runs match" in runs, runs
    assert synced == []  # the warm answers read only the index: the launch's end was written to it
