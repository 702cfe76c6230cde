"""Run names, params, users and tags are MLflow text anyone can write: every experiment answer
must render them literally (no mention, no link) in valid Block Kit."""

from __future__ import annotations

import pytest

from bot.messages.render import render
from tests.experiments.conftest import Store, add_run
from tests.units.test_render import assert_no_injection, checked

EVIL = "<!channel> <@U123> <https://evil.example|ok> &lt; *bold*"
EXP_TEMPLATES = {"exp_summary", "exp_best", "exp_runs", "exp_compare", "exp_working"}


@pytest.fixture
def hostile(mlflow_store: Store) -> Store:
    s = mlflow_store
    s.experiment_id = s.client.create_experiment("sales-agent", artifact_location=str(s.root / "artifacts"))
    add_run(s, f"a {EVIL}", user=f"u {EVIL}", params={"alpha": EVIL, "seed": 1}, f1s=[0.5, 0.7], start_hour=0)
    add_run(s, f"b {EVIL}", user="sam", params={"alpha": "0.1", "seed": 1}, f1s=[0.6, 0.8], start_hour=2)
    s.client.set_tag(s.runs[f"a {EVIL}"], "note", EVIL)
    return s


def _rendered(replies: list[tuple[str, dict]]) -> list[tuple[str, str]]:
    return [(template, checked(render(template, context))) for template, context in replies]


def test_every_experiment_answer_escapes_mlflow_text(hostile: Store) -> None:
    from tasks.experiments.compare import compare
    from tasks.experiments.query import runs
    from tasks.experiments.summary import best, summary

    answers = [
        *_rendered(summary("sales-agent", "val_f1", 5)),
        *_rendered(best("sales-agent", "val_f1", None)),
        *_rendered(runs("sales-agent", None, None, None, [])),
        *_rendered(compare(list(hostile.runs.values()))),
        ("exp_working", checked(render("exp_working", {"what": f"summarizing {EVIL}", "understood": EVIL}))),
    ]
    assert {template for template, _ in answers} == EXP_TEMPLATES
    for template, blocks in answers:
        assert_no_injection(blocks)
        assert "&lt;!channel&gt;" in blocks, f"{template} should show the hostile text, escaped"


def test_a_param_value_with_backticks_stays_one_code_span(mlflow_store: Store) -> None:
    """`{{ value }}` between literal backticks: the value's own backticks closed the span early."""
    from bot.messages.mrkdwn import CODE_TICK
    from tasks.experiments.compare import compare
    from tasks.experiments.summary import best, summary

    s = mlflow_store
    s.experiment_id = s.client.create_experiment("ticks", artifact_location=str(s.root / "artifacts"))
    add_run(s, "a", user="sam", params={"block": "```block```"}, f1s=[0.7], start_hour=0)
    add_run(s, "b", user="sam", params={"block": "y"}, f1s=[0.6], start_hour=1)
    for template, blocks in [*_rendered(summary("ticks", "val_f1", 5)), *_rendered(best("ticks", "val_f1", None)),
                             *_rendered(compare(list(s.runs.values())))]:
        assert f"`{CODE_TICK * 3}block{CODE_TICK * 3}`" in blocks, template
        assert "``" not in blocks, template


def test_a_run_name_with_stars_or_a_line_break_keeps_the_bold_around_it(mlflow_store: Store) -> None:
    from tasks.experiments.summary import best

    s = mlflow_store
    s.experiment_id = s.client.create_experiment("stars", artifact_location=str(s.root / "artifacts"))
    add_run(s, "*star* run\nsecond line", user="sam", params={}, f1s=[0.7], start_hour=0)
    [(template, blocks)] = _rendered(best("stars", "val_f1", None))
    assert "∗star∗ run second line" in blocks, template
