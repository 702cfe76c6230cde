"""watch and unwatch through the terminal front, dispatch, the real embedded worker and the renderer;
the grammar's answers to bad input; the audit row of every command."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot import grammar
from bot.grammar.watch import UnwatchArgs, WatchArgs
from bot.terminal import run_one
from labmate.errors import UsageError
from models import audit
from models.db import session_scope
from tests.watch.conftest import ADMIN, end_run

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _text(outcome) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(m.text + json.dumps(m.blocks) for m in outcome.messages)


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("watch sales-agent", WatchArgs("sales-agent", None)),
        ('watch "wine quality" <#C0123ABCD|ml-runs>', WatchArgs("wine quality", "C0123ABCD")),
        ("watch sales-agent #ml-runs", WatchArgs("sales-agent", "#ml-runs")),
        ("watch sales-agent C0123ABCDE", WatchArgs("sales-agent", "C0123ABCDE")),
        ("watch sales-agent #C0123ABCD", WatchArgs("sales-agent", "C0123ABCD")),  # typed as the usage's `#channel`
        ("watch", WatchArgs(None, None)),
        ("unwatch sales-agent", UnwatchArgs("sales-agent", None)),
    ],
)
def test_watch_grammar(text: str, args: object) -> None:
    assert grammar.parse(text, now=NOW).args == args


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("watch sales-agent extra words", "I read `extra` as an extra word"),
        ("watch #ml-runs", "Name the experiment first"),
        ("watch sales-agent #Bad Name", "`#Bad` is not a channel I can post to"),
        ("unwatch", "Which experiment should I stop watching?"),
        ("watch sales-agent #UPPER!", "is not a channel I can post to"),
        ("watch sales-agent <#C0123ABCD|ml-runs> extra", "I read `extra` as an extra word"),  # not the channel
        ("watch sales-agent C0123ABCD C0123ABCE", "`watch` takes one channel"),
    ],
)
def test_watch_grammar_says_what_was_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        grammar.parse(text, now=NOW)
    assert says in caught.value.message


def test_watch_list_and_unwatch_through_the_terminal(watched) -> None:
    outcome = run_one("watch sales-agent", user="U1", channel="C1")
    assert outcome.exit_code == 0, _text(outcome)
    assert [m.template for m in outcome.messages] == ["exp_working", "watch_added"]
    assert "Watching" in outcome.messages[1].text and "unigram-v2" in _text(outcome)
    assert "`unwatch sales-agent` stops the notices" in _text(outcome)
    listed = run_one("watch", user="U1", channel="C1")
    assert "`sales-agent`" in _text(listed)
    elsewhere = run_one("watch", user="U1", channel="C2")
    assert "watches no experiment" in _text(elsewhere)
    gone = run_one("unwatch Sales-Agent", user="U1", channel="C1")
    assert gone.exit_code == 0 and "No more notices about *sales-agent* here" in _text(gone)
    again = run_one("unwatch sales-agent", user="U1", channel="C1")
    assert again.exit_code == 1 and "doesn't watch `sales-agent`" in _text(again)
    with session_scope() as session:
        verbs = [e.verb for e in audit.latest(session, limit=10)]
    assert verbs.count("watch") == 3 and verbs.count("unwatch") == 2


def test_another_channels_watch_is_stopped_from_elsewhere_only_by_its_starter_or_an_admin(watched) -> None:
    for channel in ("C0TEAMCHAN1", "C0OPSCHAN1"):
        started = run_one(f"watch sales-agent {channel}", user="U0DANA", channel="D0DANA0001")
        assert started.exit_code == 0, _text(started)
        assert f"`unwatch sales-agent {channel}` stops" in _text(started)  # what stops it from where it was asked
        assert f"Watching *sales-agent* in <#{channel}>:" in _text(started)  # a link in Slack, not a raw id
    refused = run_one("unwatch sales-agent C0TEAMCHAN1", user="U0MALLORY", channel="D0MALLORY1")
    assert refused.exit_code == 1
    assert ("<#C0TEAMCHAN1>'s watch of `sales-agent` was started by <@U0DANA>: from another channel, only they "
            f"or an admin (<@{ADMIN}>) can stop it. In <#C0TEAMCHAN1> itself, in Slack, anyone can. Nothing changed."
            ) in _text(refused)
    assert "`sales-agent`" in _text(run_one("watch", user="U0MALLORY", channel="C0TEAMCHAN1"))
    stopped = run_one("unwatch sales-agent C0TEAMCHAN1", user="U0DANA", channel="D0DANA0001")
    assert stopped.exit_code == 0 and "No more notices about *sales-agent* in <#C0TEAMCHAN1>." in _text(stopped)
    assert run_one("unwatch sales-agent C0OPSCHAN1", user=ADMIN, channel="D0ADMIN001").exit_code == 0
    run_one("watch sales-agent C0TEAMCHAN1", user="U0DANA", channel="D0DANA0001")
    labelled = run_one("unwatch sales-agent", user="U0MALLORY", channel="C0TEAMCHAN1")  # the terminal's -c: a label
    assert labelled.exit_code == 1 and "was started by <@U0DANA>" in _text(labelled)
    from bot import dispatch
    from bot.origin import Origin

    here = dispatch.handle("unwatch sales-agent", Origin(user="U0MALLORY", channel="C0TEAMCHAN1", source="slack"))
    assert here.template == "watch_removed" and here.context["here"]
    with session_scope() as session:
        refusals = [e for e in audit.latest(session, limit=20) if e.outcome == "refused"]
    assert [(e.user, e.verb) for e in refusals] == [("U0MALLORY", "unwatch"), ("U0MALLORY", "unwatch")]


def test_watch_of_an_unknown_experiment_in_the_terminal(watched) -> None:
    outcome = run_one("watch sales-agnet", user="U1", channel="C1")
    assert outcome.exit_code == 1
    assert "MLflow has no experiment `sales-agnet`. Did you mean `sales-agent`" in _text(outcome)


def test_a_poll_job_on_the_real_worker_delivers_each_notice_once(watched, recorder) -> None:
    """The beat job's task on the embedded Celery worker: delivered through the outbox, marked delivered."""
    from tasks.client import enqueue, wait
    from tasks.watch import add, poll

    add.add("sales-agent", "CWATCH", {"user": "U1", "channel": "CWATCH", "source": "slack"})
    end_run(watched, "good", f1=0.93)
    job = enqueue("labmate.watch.poll", {}, track=True)
    assert wait([job], timeout=60) == ["ok"]
    assert sorted(t for t, _c, _k in recorder.delivered) == ["watch_best", "watch_notice"]
    assert poll.pending_replies() == ([], [])
    job = enqueue("labmate.watch.poll", {}, track=True)
    assert wait([job], timeout=60) == ["ok"]
    assert len(recorder.delivered) == 2


def test_a_watch_job_run_again_after_a_failure_still_says_watching(watched, monkeypatch) -> None:
    """The watch was stored before the index's build and the best run were read; when one of those failed
    (a locked database under load, seen in CI) the job ran again and told its asker "Already watching"."""
    from models.errors import Unavailable
    from tasks.watch import add

    real = add.current_best

    def locked(experiment: object) -> None:
        raise Unavailable("database is locked (test)")

    monkeypatch.setattr(add, "current_best", locked)
    reply_to = {"user": "U0DANA", "channel": "C0TEAMCHAN1", "source": "slack"}
    with pytest.raises(Unavailable):
        add.add("sales-agent", "C0TEAMCHAN1", reply_to)
    monkeypatch.setattr(add, "current_best", real)
    [(template, context)] = add.add("sales-agent", "C0TEAMCHAN1", reply_to)  # the job's next attempt
    assert template == "watch_added" and context["new"] is True
    [(_, again)] = add.add("sales-agent", "C0TEAMCHAN1", reply_to)  # a second `watch` by anyone: already
    assert again["new"] is False
