"""The experiment verbs' parsers and the question interpreter: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot import grammar
from bot.grammar.experiments import BestArgs, CompareArgs, Condition, FindArgs, RunsArgs, SummaryArgs
from bot.grammar.questions import interpret
from labmate.errors import UsageError

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)  # a Sunday


def args(text: str) -> object:
    return grammar.parse(text, now=NOW).args


def test_summary() -> None:
    assert args("summary sales-agent") == SummaryArgs("sales-agent", None, 5)
    assert args("/lab summary sales-agent val_f1 top:3") == SummaryArgs("sales-agent", "val_f1", 3)
    with pytest.raises(UsageError, match="Which experiment"):
        args("summary")
    with pytest.raises(UsageError, match=r"`top:0` needs a whole number from 1 to 20"):
        args("summary sales-agent top:0")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("find sales-agent limit 0", "`limit 0` needs a whole number from 1 to 50, e.g. `limit 5`."),
        ("find sales-agent order by val_f1 limit ten", "`limit ten` needs a whole number from 1 to 50, e.g. `limit 5`."),
        ("summary sales-agent top:0", "`top:0` needs a whole number from 1 to 20, e.g. `top:5`."),
        ("summary sales-agent top:x", "`top:x` needs a whole number from 1 to 20, e.g. `top:5`."),
        ("summary sales-agent top:²", "`top:²` needs a whole number from 1 to 20, e.g. `top:5`."),  # int("²") raised
        ("summary sales-agent top:٣", "`top:٣` needs a whole number from 1 to 20, e.g. `top:5`."),
    ],
)
def test_a_bad_count_is_shown_in_the_syntax_it_is_typed_in(typed: str, message: str) -> None:
    """`find … limit 0` said "`limit:0` needs …, e.g. `limit:5`", a syntax `find` doesn't read."""
    with pytest.raises(UsageError) as bad:
        args(typed)
    assert bad.value.message == message


def test_find_full_structure() -> None:
    parsed = args("find sales-agent where val_f1 > 0.8 and alpha < 0.01 order by val_f1 desc limit 5")
    assert parsed == FindArgs(
        "sales-agent",
        (Condition("val_f1", ">", "0.8", True), Condition("alpha", "<", "0.01", True)),
        "val_f1",
        False,
        5,
    )
    assert args("find x where status = 'FAILED'") == FindArgs("x", (Condition("status", "=", "FAILED", False),))
    assert args("find x where run_name like 'demo-%'").conditions == (Condition("run_name", "LIKE", "demo-%", False),)
    assert args("find x where alpha<=1e-3").conditions == (Condition("alpha", "<=", "1e-3", True),)
    assert args("find x order by val_f1") == FindArgs("x", (), "val_f1", None, 10)


def test_find_malformed_condition_names_the_token_and_shows_an_example() -> None:
    with pytest.raises(UsageError) as bad_op:
        args("find sales-agent where val_f1 >> 0.8")
    assert bad_op.value.message == (
        "I can't read the condition `val_f1 >> 0.8`: `>>` is not a comparison; "
        "use one of `!=`, `>=`, `<=`, `=`, `>`, `<` or `like`."
    )
    assert bad_op.value.hint == "e.g. `where val_f1 > 0.8 and alpha < 0.01`"
    with pytest.raises(UsageError, match=r"condition `val_f1`: it needs a name, a comparison and a value"):
        args("find sales-agent where val_f1")
    with pytest.raises(UsageError, match=r"expected `where`, `order by` or `limit`, not `whre`"):
        args("find sales-agent whre val_f1 > 0.8")
    with pytest.raises(UsageError, match=r"`order by val_f1 sideways`"):
        args("find sales-agent order by val_f1 sideways")
    with pytest.raises(UsageError, match=r"`limit 500` needs a whole number from 1 to 50"):
        args("find sales-agent limit 500")
    # were "the value `0.8 and` has spaces; quote it" and "the value `0.8 limit 5` has spaces"
    with pytest.raises(UsageError, match=r"^The conditions end with `and`: say the condition after it, or leave"):
        args("find sales-agent where val_f1 > 0.8 and")
    with pytest.raises(UsageError, match=r"^`limit` and `order by` come once each, after the conditions"):
        args("find sales-agent where val_f1 > 0.8 limit 5 limit 6")
    assert args("find sales-agent where run_name like '%and%' and band = 3").conditions[1].name == "band"


def test_find_keywords_inside_a_quoted_value_are_part_of_the_value() -> None:
    """`limit 5` inside quotes was read as the limit clause, and ` and ` inside quotes split the condition."""
    assert args('find x where run_name = "speed limit 5"') == FindArgs(
        "x", (Condition("run_name", "=", "speed limit 5", False),))
    assert args("find x where note = 'rock and roll' and band = 3 order by val_f1 limit 2") == FindArgs(
        "x", (Condition("note", "=", "rock and roll", False), Condition("band", "=", "3", True)), "val_f1", None, 2)
    assert args("find x where run_name = 'order by x limit 4'").conditions == (
        Condition("run_name", "=", "order by x limit 4", False),)
    with pytest.raises(UsageError, match=r"^`limit` and `order by` come once each"):
        args("find x where run_name = 'a limit 5' limit 5 limit 6")


def test_compare_best_runs() -> None:
    assert args("compare 3f9a2c1d and demo-baseline") == CompareArgs(("3f9a2c1d", "demo-baseline"))
    with pytest.raises(UsageError, match="at least two runs"):
        args("compare 3f9a2c1d")
    with pytest.raises(UsageError, match=r"^You named `demo-baseline` 2 times; compare needs two different runs\.$"):
        args("compare demo-baseline demo-baseline")
    assert args("best sales-agent val_f1 since:7d") == BestArgs(
        "sales-agent", "val_f1", datetime(2026, 11, 22, 10, tzinfo=UTC)
    )
    assert args("runs sales-agent status:failed since:monday by:@dana tag:team=nlp") == RunsArgs(
        "sales-agent", "FAILED", datetime(2026, 11, 23, tzinfo=UTC), "dana", (("team", "nlp"),)
    )
    with pytest.raises(UsageError, match="`status:broken` is not a run status"):
        args("runs sales-agent status:broken")
    with pytest.raises(UsageError, match=r"^I read `extra` as an extra word: `runs` takes one experiment \(quote a name"):
        args("runs sales-agent extra")
    with pytest.raises(UsageError, match=r"^Usage: `runs <experiment>"):
        args("runs")


def test_help_lists_the_new_verbs() -> None:
    names = {verb.name for verb in grammar.VERBS}
    assert {"summary", "compare", "find", "best", "runs"} <= names


@pytest.mark.parametrize(
    ("question", "verb", "understood"),
    [
        (
            "which run had the best val_f1 in sales-agent last week?",
            "best",
            "best sales-agent by val_f1 since 2026-11-22 10:00 UTC",  # "last week": 7 days back from now
        ),
        ("show failed runs in sales-agent since monday", "runs", "failed runs in sales-agent since 2026-11-23 (UTC)"),
        ("what is the best run in sales-agent?", "best", "best sales-agent by its primary metric"),
        ("how is sales-agent doing? give me a summary of sales-agent", "summary", "summary of sales-agent"),
        ("how is sales-agent doing?", "summary", "summary of sales-agent"),  # ask_unknown's own example
        ("how's the experiment 'wine quality' going", "summary", "summary of wine quality"),
        ("runs by @dana in sales-agent this week", "runs", "runs in sales-agent by dana since 2026-11-23 (UTC)"),
        # a person without "by": the answer was the whole experiment's summary, or "not about runs"
        ("which runs did sam run in sales-agent?", "runs", "runs in sales-agent by sam"),
        ("which runs did lee start in sales-agent?", "runs", "runs in sales-agent by lee"),
        ("what did sam run in sales-agent this week?", "runs", "runs in sales-agent by sam since 2026-11-23 (UTC)"),
        ("sam's runs in sales-agent", "runs", "runs in sales-agent by sam"),
        ("what did we run in sales-agent this week?", "runs", "runs in sales-agent since 2026-11-23 (UTC)"),
        ("compare demo-baseline and demo-unigram-v2", "compare", "compare demo-baseline and demo-unigram-v2"),
        # the direction a question names wins: "lowest" was answered with the highest
        ("which run had the lowest val_f1 in ties?", "best", "best ties by val_f1, lowest first"),
        ("which run had the highest val_loss in big3000?", "best", "best big3000 by val_loss, highest first"),
        ("smallest val_loss in sales-agent", "best", "best sales-agent by val_loss, lowest first"),
        # "yesterday" was dropped, and the answer covered all time without a word
        ("which runs did alice run in mixed yesterday?", "runs", "runs in mixed by alice since 2026-11-28 (UTC)"),
    ],
)
def test_questions_become_queries(question: str, verb: str, understood: str) -> None:
    reading = interpret(question, NOW)
    assert reading is not None and (reading.verb, reading.understood) == (verb, understood)


def test_question_arguments() -> None:
    reading = interpret("which run had the best val_f1 in sales-agent last week?", NOW)
    assert reading is not None and reading.args == BestArgs(
        "sales-agent", "val_f1", datetime(2026, 11, 22, 10, tzinfo=UTC)
    )
    lowest = interpret("which run had the lowest val_f1 in ties?", NOW)
    assert lowest is not None and lowest.args == BestArgs("ties", "val_f1", None, True)



def test_a_question_with_a_date_that_is_not_one_is_told_so_not_answered_over_all_time() -> None:
    with pytest.raises(UsageError) as refused:
        interpret("which runs failed in sales-agent since 2026-13-45?", NOW)
    assert refused.value.message.startswith("`since:2026-13-45` is not a time I understand. Try `since:7d`")


@pytest.mark.parametrize(
    "question",
    [
        "why did we drop bigrams?",
        "why was the best run in sales-agent not shipped?",
        "what about the pricing intent?",
        "how are you doing?",
        "how is it going",
        "",
    ],
)
def test_other_questions_stay_with_the_decision_log(question: str) -> None:
    assert interpret(question, NOW) is None


@pytest.mark.parametrize(
    "typed",
    [
        '"/Users/dana@example.com/wine quality"',
        "'/Users/dana@example.com/wine quality'",
        "“/Users/dana@example.com/wine quality”",
        "‘/Users/dana@example.com/wine quality’",
    ],
)
def test_experiment_names_as_mlflow_users_write_them(typed: str) -> None:
    name = "/Users/dana@example.com/wine quality"
    assert args(f"summary {typed} rmse asc top:3") == SummaryArgs(name, "rmse", 3, True)
    assert args(f"best {typed} since:7d") == BestArgs(name, None, datetime(2026, 11, 22, 10, tzinfo=UTC))
    assert args(f"runs {typed} status:failed").experiment == name
    assert args(f"find {typed} where alpha > 0.1 order by rmse").experiment == name


def test_names_with_quotes_and_unicode() -> None:
    assert args("""summary "it's “quoted”" """).experiment == "it's “quoted”"
    assert args("summary ワイン品質").experiment == "ワイン品質"
    assert args("summary 12").experiment == "12"  # an experiment id is tried as a name, then as an id
    with pytest.raises(UsageError, match="is never closed"):
        args('summary "wine quality')


def test_direction_on_best_and_summary() -> None:
    assert args("best grid rank_test_score asc") == BestArgs("grid", "rank_test_score", None, True)
    assert args("best grid desc") == BestArgs("grid", None, None, False)
    assert args("summary grid uptime_ratio DESC") == SummaryArgs("grid", "uptime_ratio", 5, False)
    assert args('summary grid "desc"') == SummaryArgs("grid", "desc", 5, None)  # quoted: a metric named desc
    with pytest.raises(UsageError, match="I read `extra` as an extra word"):
        args("best grid rank_test_score asc extra")


def test_compare_run_names_within_an_experiment() -> None:
    assert args('compare baseline "grid child 3" in "wine quality"') == CompareArgs(
        ("baseline", "grid child 3"), "wine quality"
    )
    assert args("compare a b exp:sales-agent") == CompareArgs(("a", "b"), "sales-agent")


def test_questions_name_quoted_experiments() -> None:
    reading = interpret('which run is best in "/Users/dana@example.com/wine quality"?', NOW)
    assert reading is not None and reading.args.experiment == "/Users/dana@example.com/wine quality"


def test_quote_makes_names_typeable() -> None:
    from bot.grammar import tokens

    for name in ("sales-agent", "/Users/dana@example.com/wine quality", 'say "hi"', """it's "x" """.strip()):
        assert args(f"summary {tokens.quote(name)}").experiment == name


def test_the_questions_ask_unknown_suggests_are_understood() -> None:
    """The examples the bot gives when it can't answer must themselves be answered."""
    import re
    from pathlib import Path

    template = (Path(__file__).resolve().parents[2] / "bot/messages/templates/ask_unknown.json.j2").read_text()
    runs_part = template.split("*Runs in an experiment*:")[1].split("*Past decisions*")[0]
    examples = re.findall(r"`([^`]+)`", runs_part)
    assert len(examples) >= 4
    for question in examples:
        assert interpret(question, NOW) is not None, question
    # The questions about past decisions go to the decision log, where tests/kb/test_kb_ask.py asks them.
    decisions_part = template.split("*Past decisions*:")[1].split('"}}')[0]
    asked = re.findall(r"`([^`]+)`", decisions_part)
    assert "what did we decide about the candidate model?" in asked
    for question in asked:
        assert interpret(question, NOW) is None, question
