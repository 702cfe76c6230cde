"""End to end: the terminal front, dispatch, the real embedded Celery worker, the job, the renderer."""

from __future__ import annotations

import json
from pathlib import Path

from bot.terminal import run_one
from tests.experiments.conftest import Store


def _all_text(outcome) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(m.text + json.dumps(m.blocks) for m in outcome.messages)


def test_summary_end_to_end_with_chart(sales: Store) -> None:
    outcome = run_one("summary sales-agent", user="U1", channel="C1")
    assert outcome.exit_code == 0, _all_text(outcome)
    working, answer = outcome.messages
    assert "Working on it: summarizing sales-agent" in working.text
    assert answer.template == "exp_summary"
    assert answer.text.startswith("sales-agent: 5 runs, best unigram-v2")
    [chart] = answer.files
    assert Path(chart["path"]).exists()


def test_ask_a_question_about_runs_says_how_it_was_read(sales: Store) -> None:
    outcome = run_one("ask which run had the best val_f1 in sales-agent?", user="U1", channel="C1")
    assert outcome.exit_code == 0, _all_text(outcome)
    working, answer = outcome.messages
    assert "I read this as: *best sales-agent by val_f1*" in json.dumps(working.blocks)
    assert answer.template == "exp_best" and "unigram-v2" in answer.text


def test_ask_anything_else_searches_decisions(sales: Store) -> None:
    run_one("decide drop the bigram features, they overfit #features", user="U1", channel="C1")
    outcome = run_one("ask why did we drop bigram features?", user="U1", channel="C1")
    assert [m.template for m in outcome.messages] == ["decisions"]
    assert "drop the bigram features" in json.dumps(outcome.messages[0].blocks)


def test_bad_input_reaches_the_user_as_a_specific_message(sales: Store) -> None:
    outcome = run_one("summary sales-agnt", user="U1", channel="C1")
    assert outcome.exit_code == 1
    assert "MLflow has no experiment `sales-agnt`. Did you mean `sales-agent`" in _all_text(outcome)
    outcome = run_one("find sales-agent where val_f1 >> 0.8", user="U1", channel="C1")
    assert outcome.exit_code == 1 and "`&gt;&gt;` is not a comparison" in _all_text(outcome)


def test_the_chat_process_never_imports_mlflow_or_matplotlib() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bot.dispatch, bot.handlers.experiments, bot.grammar.questions;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'matplotlib', 'pandas')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
