"""The grammar: every verb, its edge cases and its exact messages; any text parses or says why not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import grammar
from bot.grammar import HelpArgs, parse
from bot.grammar.command import Command
from bot.grammar.decisions import AskArgs, DecideArgs, SearchArgs, SupersedeArgs
from labmate.errors import TooLong, UsageError

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)  # a Thursday
RUN = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def p(text: str) -> Command:
    return parse(text, now=NOW)


def usage_error(text: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        p(text)
    return info.value


# --- decide -----------------------------------------------------------------


def test_decide_text_tags_and_links():
    cmd = p(f"decide ship sales-agent v3: +4 pts val_f1 #release #NLP run:{RUN.upper()} model:sales-agent/3 "
            "exp:sales-agent #release model:sales-agent@production")
    assert cmd.verb == "decide"
    assert cmd.args == DecideArgs(
        text="ship sales-agent v3: +4 pts val_f1",
        tags=("release", "nlp"),
        links=(
            ("run", RUN),
            ("model", "sales-agent/3"),
            ("experiment", "sales-agent"),
            ("model", "sales-agent@production"),
        ),
    )


def test_decide_keeps_words_order_and_non_tag_hashes():
    cmd = p("decide use issue#12 fix, not # or #-bad tags, #ok, but #fine")
    assert cmd.args.text == "use issue#12 fix, not # or #-bad tags, #ok, but"  # "#ok," is not a whole-token tag
    assert cmd.args.tags == ("fine",)


def test_decide_model_slash_at_alias_and_duplicate_links():
    cmd = p(f"decide pin it model:ranker/@champion run:{RUN} run:{RUN}")
    assert cmd.args.links == (("model", "ranker@champion"), ("run", RUN))


def test_decide_needs_text():
    err = usage_error("decide #release run:" + RUN)
    assert err.message == "A decision needs some text saying what was decided."
    assert err.hint == "e.g. `decide ship the candidate: better val_f1 and no new failures #release`"
    assert usage_error("decide").message == "A decision needs some text saying what was decided."


def test_decide_runs_by_prefix_or_name_are_kept_for_the_link_job_to_resolve():
    assert p("decide ship it run:3F9A2C1D").args.links == (("run", "3f9a2c1d"),)
    assert p('decide ship it run:"grid search child 3" exp:"wine quality"').args.links == (
        ("run", "grid search child 3"),
        ("experiment", "wine quality"),
    )
    assert usage_error("decide ship it run:" + "a" * 300).message.endswith("is too long to be an MLflow reference.")


def test_decide_prose_quotes_stay_as_typed():
    assert p('decide we said "ship it and don\'t look back').args.text == 'we said "ship it and don\'t look back'


def test_unicode_tags_are_tags_or_refused():
    cmd = p("decide ship it #リリース #Qualität ＃release")
    assert cmd.args.tags == ("リリース", "qualität", "release") and cmd.args.text == "ship it"
    err = usage_error("decide ship it #リリース!")
    assert err.message == "`#リリース!` looks like a tag but can't be one: a tag is letters, digits, `_`, `.` and `-` only."
    assert p("decisions #リリース").args.tags == ("リリース",)


def test_decide_bad_model_ref():
    assert usage_error("decide ship it model:sales-agent").message == (
        "`model:sales-agent` is not a registered model version. "
        "Use `model:<name>/<version>` or `model:<name>@<alias>`, e.g. `model:sales-agent/3` "
        "or `model:sales-agent@production`."
    )
    # MLflow keeps a version in a SQL integer: a larger one failed inside the link check, as an internal error
    assert usage_error("decide ship it model:sales-agent/9223372036854775808").message == (
        "`model:sales-agent/9223372036854775808` names version 9223372036854775808, and no model has that many: MLflow "
        "counts versions from 1. Use a version that exists, or an alias: `model:sales-agent@production`."
    )
    assert p("decide ship it model:sales-agent/2147483647").args.links == (("model", "sales-agent/2147483647"),)


def test_option_without_value():
    assert usage_error("decide ship it exp:").message == "`exp:` needs a value right after the colon, e.g. `exp:sales-agent`."
    assert usage_error("decisions by:").message == "`by:` needs a value right after the colon, e.g. `by:@dana`."


def test_decide_too_long_decision():
    err = usage_error("decide " + "x" * 3001)
    assert err.message == (
        "That decision is 3,001 characters; the most a decision can hold is 3,000. Shorten it, or link to a document."
    )
    assert p("decide " + "x" * 3000).args.text == "x" * 3000


def test_unknown_keys_stay_in_the_text():
    assert p("decide see https://example.com/a:b now").args.text == "see https://example.com/a:b now"


# --- decisions ----------------------------------------------------------------


def test_decisions_query_and_filters():
    cmd = p("decisions bigram features #Features by:<@U123ABC|dana> since:7d")
    assert cmd.args == SearchArgs("bigram features", ("features",), "U123ABC", NOW - timedelta(days=7))


def test_decisions_alone_is_the_latest():
    assert p("decisions").args == SearchArgs("", (), None, None)


@pytest.mark.parametrize(("typed", "shown"), [("(((", "`(((`"), ("\\", "`\\`"), ("#", "`#`"), ("* ?", "`* ?`"),
                                              ("``", "`ˋˋ`"), ("( #release", "`(`")])
def test_a_query_of_punctuation_only_says_it_has_no_words(typed: str, shown: str) -> None:
    """It listed every decision under "Decisions matching “(((”": the search reads words only."""
    err = usage_error(f"decisions {typed}")
    assert err.message == f"{shown} has no words to search for: the decision log is searched by words, not punctuation."
    assert err.hint == (
        "`decisions` alone lists the latest ten; or search for a word (`decisions bigram`), "
        "a tag (`decisions #release`) or a person (`decisions by:@dana`)."
    )
    assert p("decisions ship*").args.query == "ship*"  # a word and punctuation: searched
    assert p("decisions _").args.query == "_"  # `_` is a word character to the search


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12h", NOW - timedelta(hours=12)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        ("today", datetime(2026, 11, 26, tzinfo=UTC)),
        ("yesterday", datetime(2026, 11, 25, tzinfo=UTC)),
        ("Monday", datetime(2026, 11, 23, tzinfo=UTC)),
        ("thursday", datetime(2026, 11, 19, tzinfo=UTC)),  # the same weekday means a week ago
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_since_values(value, expected):
    assert p(f"decisions since:{value}").args.since == expected


def test_since_bad_value():
    assert usage_error("decisions since:lastweek").message == (
        "`since:lastweek` is not a time I understand. Try `since:7d`, `since:12h`, `since:2w`, "
        "`since:yesterday`, `since:monday` or `since:2026-11-01`."
    )
    assert "is not a time I understand" in usage_error("decisions since:2026-13-40").message
    # a count too big for a date was "not a time I understand", as if the syntax were wrong
    assert usage_error("decisions since:3650000d").message == (
        "`since:3650000d` goes back too far: a count of minutes, hours, days or weeks has at most 4 digits. "
        "For older windows give the date, e.g. `since:2020-01-01`."
    )


def test_help_names_an_unknown_command_as_it_was_typed():
    assert usage_error("help Frobnicate THE runs").message == "I don't know the command `Frobnicate THE runs`."
    assert p("help DECIDE").args.verb == "decide"


@pytest.mark.parametrize(("value", "author"), [("@dana", "dana"), ("dana.k", "dana.k"), ("U0ABC", "U0ABC"),
                                               ("<@W42>", "W42")])
def test_by_values(value, author):
    assert p(f"decisions by:{value}").args.author == author


def test_by_bad_value():
    assert usage_error("decisions by:@da/na").message == (
        "`by:@da/na` is not a person. Use `by:@name` or mention them: `by:@dana`."
    )


# --- supersede ----------------------------------------------------------------


def test_supersede_id_and_new_decision():
    cmd = p("supersede #12 keep the bigram features after all #features")
    assert cmd.args == SupersedeArgs(12, DecideArgs("keep the bigram features after all", ("features",), ()))
    assert p("supersede 7 x").args.old_id == 7


def test_supersede_needs_an_id():
    err = usage_error("supersede twelve keep it")
    assert err.message == (
        "`twelve` is not a decision id. Say which decision is replaced, then the new text."
    )
    assert err.hint == "e.g. `supersede 12 ship the candidate after all: the p0 failure was a flaky test`"
    assert usage_error("supersede").message.startswith("`(nothing)` is not a decision id.")
    assert usage_error("supersede 1234567890123 x").message.startswith("`1234567890123` is not a decision id.")


def test_supersede_needs_new_text():
    err = usage_error("supersede 12")  # the example was decide's, which replaces nothing
    assert err.message == "Superseding decision #12 needs the new decision's text after its id."
    assert err.hint == "e.g. `supersede 12 ship the candidate after all: the p0 failure was a flaky test`"
    assert usage_error("supersede #12 #release").message == "A decision needs some text saying what was decided."


# --- ask, help, prefixes, unknown verbs -----------------------------------------------


def test_ask():
    assert p("ask  why did we drop bigrams? ").args == AskArgs("why did we drop bigrams?")
    assert usage_error("ask").message == "Ask me something, e.g. `ask why did we pick the candidate model?`"


def test_help_and_empty_text():
    assert p("help").args == HelpArgs(None)
    assert p("").args == HelpArgs(None)
    assert p("   ").args == HelpArgs(None)
    assert p("help DECIDE").args == HelpArgs("decide")
    assert p("help /supersede").args == HelpArgs("supersede")
    err = usage_error("help frobnicate")
    assert err.message == "I don't know the command `frobnicate`."
    assert err.hint.startswith("`help` lists every command")


def test_slash_prefix_is_optional():
    assert p("/lab decide ship it").args == p("decide ship it").args
    assert p("/lab").args == HelpArgs(None)
    assert grammar.strip_prefix("  /lab decisions x ") == "decisions x"
    assert grammar.strip_prefix("/labx decisions") == "/labx decisions"


def test_verbs_are_case_insensitive():
    assert p("DECIDE ship it").verb == "decide"


def test_unknown_verb_suggests_the_closest():
    err = usage_error("decied ship it")
    assert err.message == "I don't know the command `decied`. Did you mean `decide`?"
    assert err.hint == "`help` lists every command; a question (ending in `?`) is answered as `ask` would."
    assert usage_error("zzzz").message == "I don't know the command `zzzz`."
    assert usage_error("decison x").message == "I don't know the command `decison`. Did you mean `decisions` or `decide`?"


def test_a_question_without_ask_is_asked():
    assert p("which run had the best val_f1 in sales-agent?").args == AskArgs("which run had the best val_f1 in sales-agent?")
    assert p("why did we drop bigrams").args == AskArgs("why did we drop bigrams")
    assert p("weather tomorrow?").verb == "ask"
    assert usage_error("frobnicate the runs").message == "I don't know the command `frobnicate`."


def test_a_question_that_starts_with_a_reading_verb_is_asked_or_read_without_its_mark():
    """`best run in sales-agent?` was refused (`sales-agent?` an extra word), though a question is asked."""
    assert p("best run in sales-agent?").args == AskArgs("best run in sales-agent?")
    assert p("runs that failed in sales-agent?").verb == "ask"
    assert p("best sales-agent?").verb == "best" and p("best sales-agent?").args == p("best sales-agent").args
    assert p("decide why not ship it?").verb == "decide"  # a command that parses is that command
    assert "L9?" in usage_error("cancel L9?").message  # an acting verb's mistake keeps its message


def test_unknown_long_verb_is_shortened():
    assert usage_error("q" * 60).message == f"I don't know the command `{'q' * 40}…`."


def test_ten_thousand_characters_is_too_long():
    with pytest.raises(TooLong) as info:
        p("decide " + "a" * 9993)
    assert info.value.message == (
        "That command is 10,000 characters long; the most I take is 4,000. "
        "Shorten it, or put the details in a thread and log a summary."
    )
    assert isinstance(info.value, UsageError)


def test_every_verb_example_parses():
    for verb in grammar.VERBS:
        for example in verb.examples:
            assert p(example).verb == verb.name, example


# --- run id prefixes, as the docs state them ----------------------------------------------


def test_the_docs_state_the_run_id_prefixes_the_grammar_takes() -> None:
    """docs/cleanup.md said 6+ characters and the README 8 "everywhere": the clean-up answers and
    `cancel` take 6 (their grammar), a run named in `decide` or `compare` needs 8 to be read as a prefix."""
    import re
    from pathlib import Path

    from bot.grammar.decisions import MIN_PREFIX

    root = Path(__file__).resolve().parents[2]
    cleanup_doc = " ".join((root / "docs/cleanup.md").read_text().split())
    readme = " ".join((root / "README.md").read_text().split())
    documented = re.search(r"/lab keep \w+ answer one run: its id, or a prefix of it of (\d+) characters or more", cleanup_doc)
    answers = re.search(r"\(`keep`, `delete`, `snooze`, `restore`\) and `cancel` take run ids only, "
                        r"and a prefix of (\d+) characters or more", readme)
    named = re.search(r"Runs are named by their full id, a unique id prefix of (\d+) characters or more", readme)
    assert documented and answers and named, "the docs no longer say how long a run id prefix must be"
    shortest = int(documented.group(1))
    assert int(answers.group(1)) == shortest
    for verb in ("keep", "delete", "snooze", "restore", "cancel"):
        args = p(f"{verb} {RUN[:shortest]}").args
        assert (args.run_ref if verb == "cancel" else args.runs[0]) == RUN[:shortest], verb
        assert "at least 6 characters" in usage_error(f"{verb} {RUN[:shortest - 1]}").message
    assert int(named.group(1)) == MIN_PREFIX
    assert p(f"decide x run:{RUN[:MIN_PREFIX].upper()}").args.links == (("run", RUN[:MIN_PREFIX]),)  # a prefix: lowered
    short = RUN[: MIN_PREFIX - 1].upper()
    assert p(f"decide x run:{short}").args.links == (("run", short),)  # kept as typed: a run name


# --- any text -----------------------------------------------------------------

WORDS = st.sampled_from(
    ["decide", "decisions", "supersede", "ask", "help", "/lab", "#", "#tag", "run:", "model:", "exp:", "by:",
     "since:", "by:@x", "since:7d", f"run:{RUN}", "model:a/1", "12", "#12", ":", "@", "<@U1>", " ", "\n", "\t"]
)
TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=12).map(" ".join),
)


@settings(max_examples=600, deadline=None)
@given(text=TEXT)
def test_any_text_is_a_command_or_a_usage_error(text):
    try:
        cmd = parse(text, now=NOW)
    except UsageError as exc:
        assert exc.message
        return
    assert isinstance(cmd, Command)
    assert grammar.lookup(cmd.verb) is not None


def test_a_window_start_says_its_time_when_it_isnt_midnight_and_always_utc() -> None:
    from labmate.when import window_start

    assert window_start(datetime(2026, 3, 10, 0, 0, tzinfo=UTC)) == "2026-03-10 (UTC)"
    assert window_start(datetime(1, 1, 1, 0, 0, tzinfo=UTC)) == "0001-01-01 (UTC)"  # was `1-01-01`
    assert window_start(datetime(999, 1, 1, 9, 5, tzinfo=UTC)) == "0999-01-01 09:05 UTC"
    assert window_start(datetime(2026, 3, 10, 22, 0, tzinfo=UTC)) == "2026-03-10 22:00 UTC"
    assert window_start(datetime(2026, 3, 10, 15, 0, tzinfo=timezone(timedelta(hours=-7)))) == "2026-03-10 22:00 UTC"
    from bot.grammar import questions

    asked = questions.interpret("show failed runs in sales-agent in the last 3 hours", datetime(2026, 3, 11, 1, tzinfo=UTC))
    assert asked is not None and asked.understood.endswith("since 2026-03-10 22:00 UTC")


@pytest.mark.parametrize("typed", ["promote R٣", "delete P٣", "supersede ٣ keep it", "runs sales-agent since:٣d"])
def test_ids_and_durations_take_ascii_digits_only(typed: str) -> None:
    """`\\d` took `٣` (Arabic-Indic three): `promote R٣` answered about R3."""
    with pytest.raises(UsageError):
        grammar.parse(typed)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("runs sales-agent since:7d since:2d", "`since:` is given twice (`since:7d`, `since:2d`): give it once."),
        ("summary sales-agent top:3 top:5", "`top:` is given twice (`top:3`, `top:5`): give it once."),
        ("decisions by:@dana by:@lee", "`by:` is given twice (`by:@dana`, `by:@lee`): give it once."),
        ("regress shop workers:1 workers:2", "`workers:` is given twice (`workers:1`, `workers:2`): give it once."),
        ("sweep sales-agent alpha=1,2 parallel:1 parallel:2", "`parallel:` is given twice (`parallel:1`, `parallel:2`): give it once."),
    ],
)
def test_an_option_given_twice_is_refused_not_replaced(typed: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        grammar.parse(typed)
    assert refused.value.message == message


@pytest.mark.parametrize("typed", ["run sales-agent epochs=3 \u2014dry-run", "sweep sales-agent epochs=1,2 \u2013dry-run"])
def test_a_dash_that_slack_made_of_two_hyphens_is_still_a_dry_run(typed: str) -> None:
    """Slack and macOS turn a typed `--` into `—`: that was "I can't read `—dry-run`: parameters are written…"."""
    assert p(typed).args.dry_run is True


@pytest.mark.parametrize("typed", ["run sales-agent epochs=3 --force", "sweep sales-agent epochs=1,2 -v"])
def test_an_unknown_option_is_named_as_one(typed: str) -> None:
    option = typed.rsplit(" ", 1)[1]
    verb = typed.split(" ", 1)[0]
    assert usage_error(typed).message == f"`{option}` is not an option of `{verb}`: its one option is `--dry-run`."


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("promote", "Say which regression run to promote: its id (`R12`, on its card)."),
        ("promote abc", "Say which regression run to promote: its id (`R12`, on its card) (`abc` is not one)."),
        ("promote R2 R2", "`promote` takes one regression run; you named 2. Promote them one at a time."),
    ],
)
def test_promote_says_what_was_wrong_with_what_was_named(typed: str, message: str) -> None:
    """`promote abc` and `promote R2 R2` were both told "Say which regression run to promote"."""
    assert usage_error(typed).message == message
