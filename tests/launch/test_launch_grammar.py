"""The shape of run, sweep, status and cancel (types and names are the handler's: they need the project)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot import grammar
from bot.grammar.launches import CancelArgs, RunArgs, StatusArgs, SweepArgs
from labmate.errors import UsageError

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def parse(text: str):
    return grammar.parse(text, now=NOW).args


def test_run_takes_a_project_an_entry_point_and_pairs() -> None:
    assert parse("run sales-agent") == RunArgs("sales-agent", None, ())
    assert parse("/lab run sales-agent:train epochs=3 note='two words' --dry-run") == RunArgs(
        "sales-agent", "train", (("epochs", "3"), ("note", "two words")), True
    )
    # words that aren't name=value are kept for the handler, which answers with the parameter list
    assert parse("run quick alpha=1; id").params == (("alpha", "1;"), (None, "id"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run", "Which project? Name it first: `run <project>[:<entry point>] …`."),
        ("run $(id)", "`$(id)` is not a project name. Write `<project>` or `<project>:<entry point>`."),
        ("run quick alpha=1\nid", "`run` takes one line: I found a line break after `alpha=1`."),
        ("run quick note='open", "A quote in your command isn't closed."),
        ("sweep quick", "A sweep needs at least one parameter with the values to try"),
        ("sweep quick lr=0.1,,0.2", "`lr=0.1,,0.2` has an empty value: separate values with single commas"),
        ("sweep quick lr=0.1 parallel:0", "`parallel:0` needs at least 1 run at once, e.g. `parallel:2`."),
        ("sweep quick lr=0.1 parallel:two", "`parallel:two` needs a whole number of runs at once, e.g. `parallel:2`."),
        ("sweep quick lr=0.1 parallel:²", "`parallel:²` needs a whole number of runs at once, e.g. `parallel:2`."),
        ("cancel L٣", "`L٣` is neither a launch id (`L12`) nor an MLflow run id (hex, at least 6 characters)."),
        ("status mine", "`status` takes nothing, or `all`; not `mine`."),
        ("cancel", "Say which run to stop: its launch id (`L12`, on its card) or its MLflow run id."),
        ("cancel L12 L13", "`cancel` stops one run at a time; you named 2: `cancel L12`, then the next."),
        ("cancel L99999999999999999999", "There is no launch L99999999999999999999."),  # was "neither a launch id"
        ("cancel xyz", "`xyz` is neither a launch id (`L12`) nor an MLflow run id (hex, at least 6 characters)."),
    ],
)
def test_bad_shapes_say_what_would_work(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert caught.value.message.startswith(message), caught.value.message


def test_sweep_values_and_parallel() -> None:
    assert parse("sweep quick:train lr=0.1,0.2 epochs=3 parallel:2") == SweepArgs(
        "quick", "train", (("lr", ("0.1", "0.2")), ("epochs", ("3",))), 2
    )


def test_status_and_cancel() -> None:
    assert parse("status") == StatusArgs(False)
    assert parse("status all") == StatusArgs(True)
    assert parse("cancel L12") == CancelArgs(launch_id=12)
    assert parse("cancel 12") == CancelArgs(launch_id=12)
    assert parse("cancel 3F9A2C1D") == CancelArgs(run_ref="3f9a2c1d")
    assert parse("cancel run:0a1b2c3d4e5f60718293a4b5c6d7e8f9") == CancelArgs(run_ref="0a1b2c3d4e5f60718293a4b5c6d7e8f9")


def test_parallel_above_any_fixed_cap_is_left_to_the_projects_limit() -> None:
    """The grammar doesn't know the project's `max_parallel_runs`: the handler says it (test_launch_commands)."""
    assert parse("sweep quick lr=0.1,0.2 parallel:999").parallel == 999


def test_a_bare_number_of_six_or_more_digits_may_be_a_launch_id_or_a_run_id() -> None:
    assert parse("cancel 12345678") == CancelArgs(launch_id=12345678, run_ref="12345678")
    assert parse("cancel 123456") == CancelArgs(launch_id=123456, run_ref="123456")
    # a prefix says which it is; a short number is a launch id (a run id prefix has at least 6 characters)
    assert parse("cancel L12345678") == CancelArgs(launch_id=12345678)
    assert parse("cancel #12345678") == CancelArgs(launch_id=12345678)
    assert parse("cancel #L12") == CancelArgs(launch_id=12)
    assert parse("cancel 12345") == CancelArgs(launch_id=12345)
    assert parse("cancel run:12345678") == CancelArgs(run_ref="12345678")
