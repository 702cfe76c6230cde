"""dispatch.handle on a real SQLite knowledge base: storage, access, idempotency, audit, internal errors."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from bot import dispatch
from bot.messages.render import render
from bot.origin import Origin
from labmate.settings import get_settings, reset_settings
from models import audit, search
from models import decision as decisions
from models.db import session_scope

RUN = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def audit_rows(url: str) -> list[audit.AuditRow]:
    with session_scope(url) as s:
        return list(reversed(audit.latest(s, limit=100)))


def shown(reply) -> str:
    message = render(reply.template, reply.context)
    return "\n".join([message.text, *(b["text"]["text"] for b in message.blocks if "text" in b),
                      *(e["text"] for b in message.blocks for e in b.get("elements", []))])


def write_access(toml: str) -> None:
    Path(os.environ["LABMATE_CONFIG"]).write_text(toml)
    reset_settings()
    assert get_settings().access.admins, "the access rules must be loaded for these tests to mean anything"


ACCESS = """
[access]
admins = ["UADMIN"]

[access.verbs]
decide = ["UWRITER", "CDECIDE"]
"""


def test_decide_is_stored_before_the_reply_returns(migrated):
    reply = dispatch.handle("decide drop the bigram features, they overfit #features", Origin(user="U1", channel="C1"))
    assert reply.outcome == "ok"
    assert reply.jobs == []
    decision_id = reply.context["d"]["id"]
    with session_scope(migrated) as s:  # a new session: the write is committed
        stored = decisions.get(s, decision_id=decision_id)
        assert (stored.text, stored.author, stored.channel) == ("drop the bigram features, they overfit", "U1", "C1")
        assert stored.tag_names == ["features"]
    (row,) = audit_rows(migrated)
    assert (row.user, row.channel, row.source, row.verb, row.outcome) == ("U1", "C1", "shell", "decide", "ok")
    assert row.text == "decide drop the bigram features, they overfit #features"
    assert row.error_id is None
    assert row.duration_ms > 0
    assert f"Decision #{decision_id}" in shown(reply)


def test_decide_with_a_run_link_is_queued_then_closed_by_the_job(migrated):
    from bot.post import router
    from tasks.client import wait

    delivered = []
    router().add_console("s1", lambda _reply_to, message: delivered.append(message))  # as every front does
    reply = dispatch.handle(f"decide promote the ranker run:{RUN}", Origin(user="U1", channel="C1", session="s1"))
    assert [job.name for job in reply.jobs] == ["labmate.decisions.check_links"]
    assert len(reply.task_ids) == 1
    (row,) = audit_rows(migrated)
    assert row.outcome == "queued"  # the job needs MLflow's store first; it closes the row later
    assert wait(reply.task_ids, 120) == ["ok"]
    (row,) = audit_rows(migrated)
    assert row.outcome == "ok"
    with session_scope(migrated) as s:
        (link,) = decisions.get(s, decision_id=reply.context["d"]["id"]).links
        assert link.status == "missing"
    assert [m.template for m in delivered] == ["links_checked"]
    # the reason sits in parentheses inside the sentence: no capital, no full stop of its own
    assert f"run `{RUN}` was not found in MLflow (no run has the id, id prefix or name `{RUN}`). Fix it" in (
        delivered[0].blocks[0]["text"]["text"])


def test_a_slack_answer_where_no_bot_token_is_set_is_audited_undelivered_not_ok(migrated):
    """A worker started without SLACK_BOT_TOKEN dropped every Slack answer with a log line, and the audit
    row said `ok` for a reply nobody saw."""
    import time

    from bot.post import reset_router, router

    assert get_settings().slack_bot_token is None
    reset_router()
    router()  # what a worker installs: its delivery, without a Slack token
    dispatch.handle(f"decide promote the ranker run:{RUN}", Origin(user="U1", channel="C1", source="slack"))
    deadline = time.monotonic() + 60  # a Slack command's job keeps no result to wait on: its audit row says
    while audit_rows(migrated)[0].outcome == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
    (row,) = audit_rows(migrated)
    assert row.outcome == "undelivered", row
    assert "no SLACK_BOT_TOKEN where this job ran" in json.dumps(row.detail)


def test_a_model_link_keeps_the_alias_it_was_named_by(migrated):
    """A run link is stored by its full id once found; a model link stays `name@alias` (or
    `name/version`): the version's run is in its detail, not in place of what the team wrote."""
    from bot.post import router
    from tasks.client import wait
    from tasks.mlflow_io import client

    delivered = []
    router().add_console("s2", lambda _reply_to, message: delivered.append(message))
    mlflow = client()
    run = mlflow.create_run(mlflow.create_experiment("ranking"))
    mlflow.create_registered_model("ranker")
    version = mlflow.create_model_version("ranker", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    mlflow.set_registered_model_alias("ranker", "candidate", version.version)
    reply = dispatch.handle("decide ship the candidate model:ranker@candidate", Origin(user="U1", channel="C1", session="s2"))
    assert wait(reply.task_ids, 120) == ["ok"]
    with session_scope(migrated) as s:
        (link,) = decisions.get(s, decision_id=reply.context["d"]["id"]).links
        assert (link.kind, link.ref, link.status) == ("model", "ranker@candidate", "ok")
        assert link.detail["run_id"] == run.info.run_id and link.detail["version"] == version.version
    assert "`ranker@candidate`" in json.dumps(delivered[0].blocks)


def test_decisions_on_an_empty_log_says_how_to_log_one(migrated):
    empty = shown(dispatch.handle("decisions", Origin(user="U1", channel="C1")))
    assert "No decisions logged yet. Log one with `decide`" in empty and "`decisions` alone" not in empty
    unmatched = shown(dispatch.handle("decisions pricing", Origin(user="U1", channel="C1")))
    assert "No decisions match “pricing”. Try fewer words, or `decisions` alone for the latest ten." in unmatched
    # filters are read as words after the heading, not "match with by dana"
    by = shown(dispatch.handle("decisions by:@dana", Origin(user="U1", channel="C1")))
    assert "No decisions by dana. `decisions` alone lists the latest ten." in by, by
    dispatch.handle("decide ship it #release", Origin(user="U1", channel="C1"))
    tagged = shown(dispatch.handle("decisions #release", Origin(user="U1", channel="C1")))
    assert "*Latest decisions* tagged #release" in tagged, tagged


def test_refused_names_who_may_and_is_audited(migrated):
    write_access(ACCESS)
    reply = dispatch.handle("decide ship it", Origin(user="UOTHER", channel="C1"))
    assert reply.outcome == "refused"
    text = shown(reply)
    assert "You can't use `decide` here. It is limited to <@UWRITER>, <#CDECIDE> and the admins (<@UADMIN>)." in text
    (row,) = audit_rows(migrated)
    assert (row.user, row.verb, row.outcome) == ("UOTHER", "decide", "refused")
    with session_scope(migrated) as s:
        assert search.latest(s) == []


def test_listed_users_channels_and_admins_may(migrated):
    write_access(ACCESS)
    for origin in (Origin(user="UWRITER", channel="C1"), Origin(user="UX", channel="CDECIDE", source="slack"),
                   Origin(user="UADMIN")):
        assert dispatch.handle("decide ship it", origin).outcome == "ok", origin
    assert [r.outcome for r in audit_rows(migrated)] == ["ok", "ok", "ok"]


def test_a_channel_entry_counts_only_where_slack_says_the_command_came_from(migrated):
    """In the terminal the channel is a label the typist picks (`labmate say -c CDECIDE`): it opens nothing."""
    write_access(ACCESS)
    reply = dispatch.handle("decide ship it", Origin(user="UX", channel="CDECIDE", source="shell"))
    assert reply.outcome == "refused"
    assert "You can't use `decide` here. It is limited to <@UWRITER>, <#CDECIDE> and the admins" in shown(reply)


HOSTILE = "a> <https://evil.example/|click here"
"""A name labmate didn't get from Slack (the terminal's login comes from $USER): text, never markup."""


def test_names_in_refusals_are_escaped_not_links(migrated, monkeypatch):
    write_access(ACCESS.replace('decide = ["UWRITER", "CDECIDE"]', ""))
    first = dispatch.handle("decide keep the tokenizer", Origin(user=HOSTILE, channel="C1"))
    refused = dispatch.handle(f"supersede {first.context['d']['id']} drop it", Origin(user="UOTHER", channel="C1"))
    assert "Only its author (a&gt; &lt;https://evil.example/|click here) or an admin (<@UADMIN>)" in shown(refused)
    assert "<https://evil" not in json.dumps(render(refused.template, refused.context).blocks)

    from bot import identity
    from labmate.errors import AccessDenied

    monkeypatch.setattr(identity, "login", lambda: HOSTILE)
    with pytest.raises(AccessDenied) as told:
        identity.terminal_user("<!channel>", get_settings())
    assert told.value.message == "You are `a&gt; &lt;https://evil.example/|click here` here, so you can't run commands as `&lt;!channel&gt;`."
    assert '`allow_acting_as = ["a&gt; &lt;https://evil.example/|click here"]`' in told.value.hint


def test_a_jobs_note_is_escaped_in_the_fallback_text_too():
    from bot.messages.render import Message, with_notes

    noted = with_notes(Message(text="Working on it.", blocks=[]), ["checking <!channel> in MLflow"])
    assert noted.text == "Working on it. checking &lt;!channel&gt; in MLflow"
    assert noted.blocks[-1]["elements"][0]["text"] == ":hourglass: checking &lt;!channel&gt; in MLflow"


def test_supersede_by_non_author_non_admin_is_refused(migrated):
    write_access(ACCESS.replace('decide = ["UWRITER", "CDECIDE"]', ""))
    first = dispatch.handle("decide drop bigrams", Origin(user="UAUTHOR", channel="C1"))
    old_id = first.context["d"]["id"]
    refused = dispatch.handle(f"supersede {old_id} keep bigrams", Origin(user="UOTHER", channel="C1"))
    assert refused.outcome == "refused"
    assert "Only its author (<@UAUTHOR>) or an admin (<@UADMIN>) can `supersede` that decision." in shown(refused)
    with session_scope(migrated) as s:
        assert decisions.get(s, decision_id=old_id).superseded_by is None
        assert len(search.latest(s)) == 1
    assert [r.outcome for r in audit_rows(migrated)] == ["ok", "refused"]

    by_admin = dispatch.handle(f"supersede {old_id} keep bigrams after all", Origin(user="UADMIN", channel="C1"))
    assert by_admin.outcome == "ok"
    with session_scope(migrated) as s:
        assert decisions.get(s, decision_id=old_id).superseded_by == by_admin.context["d"]["id"]


def test_supersede_by_author_and_unknown_or_replaced_ids(migrated):
    old_id = dispatch.handle("decide drop bigrams", Origin(user="U1")).context["d"]["id"]
    assert dispatch.handle(f"supersede {old_id} keep bigrams", Origin(user="U1")).outcome == "ok"
    again = dispatch.handle(f"supersede {old_id} third try", Origin(user="U1"))
    assert again.outcome == "user_error"
    assert f"Decision #{old_id} was already replaced by #{old_id + 1}" in shown(again)
    missing = dispatch.handle("supersede 999 x", Origin(user="U1"))
    assert missing.outcome == "user_error"
    assert "There is no decision #999." in shown(missing)


def test_same_idempotency_key_twice_stores_one_decision(migrated):
    origin = Origin(user="U1", channel="C1", source="slack", idempotency_key="slack:T1:C1:1700000000.1")
    first = dispatch.handle("decide ship it", origin)
    second = dispatch.handle("decide ship it", origin)
    assert first.outcome == "ok"
    assert second.outcome == "duplicate"
    with session_scope(migrated) as s:
        assert len(search.latest(s)) == 1
    other = dispatch.handle("decide ship it", Origin(user="U1", channel="C1", idempotency_key="another"))
    assert other.outcome == "ok"
    with session_scope(migrated) as s:
        assert len(search.latest(s)) == 2


def test_a_conflict_on_another_constraint_is_answered_not_taken_for_a_slack_retry(migrated, monkeypatch):
    """Every Slack request carries a key; a unique constraint of the command's own (two answers racing
    for one run) was treated as the key's and the click dropped without a word or an audit row."""
    from models.errors import Conflict

    def racing(args, origin, session):
        raise Conflict('duplicate key value violates unique constraint "uq_cleanup_candidates_busy_run"')

    monkeypatch.setitem(dispatch.HANDLERS, "decide", racing)
    reply = dispatch.handle("decide ship it", Origin(user="U1", channel="C1", source="slack", idempotency_key="k-1"))
    assert reply.outcome != "duplicate" and reply.failed
    assert "error id" in shown(reply).lower()


def test_user_errors_are_audited_with_the_text(migrated):
    reply = dispatch.handle("decied ship it", Origin(user="U1", channel="C1"))
    assert reply.outcome == "user_error"
    assert "Did you mean `decide`?" in shown(reply)
    (row,) = audit_rows(migrated)
    assert (row.verb, row.outcome, row.text, row.error_id) == ("", "user_error", "decied ship it", None)


def test_internal_exception_gives_an_error_id_audited_and_logged(migrated, monkeypatch, caplog):
    def broken(args, origin, session):
        decisions.create(session, new=decisions.NewDecision(text="half-written", author=origin.user))
        raise RuntimeError("handler exploded")

    monkeypatch.setitem(dispatch.HANDLERS, "decide", broken)
    with caplog.at_level(logging.ERROR, logger="bot.dispatch"):
        reply = dispatch.handle("decide ship it", Origin(user="U1", channel="C1"))
    assert reply.outcome == "error"
    error_id = reply.error_id
    assert error_id and error_id.startswith("E-")
    text = shown(reply)
    assert f"Error id `{error_id}`" in text
    assert "handler exploded" not in text  # internals stay in the log
    (row,) = audit_rows(migrated)
    assert (row.verb, row.outcome, row.error_id) == ("decide", "error", error_id)
    records = [r for r in caplog.records if error_id in r.getMessage()]
    assert records, "the error id must be in the log"
    assert records[0].exc_info is not None
    assert "handler exploded" in caplog.text and "Traceback" in caplog.text
    with session_scope(migrated) as s:  # the handler's half-done write was rolled back
        assert search.latest(s) == []


def test_help_needs_no_database_rows(migrated):
    reply = dispatch.handle("help", Origin(user="U1"))
    assert reply.template == "help"
    assert [r.verb for r in audit_rows(migrated)] == ["help"]


@pytest.mark.parametrize("text", ["", "   ", "/lab"])
def test_empty_text_is_help(migrated, text):
    assert dispatch.handle(text, Origin(user="U1")).template == "help"


def test_every_verb_has_a_handler_that_imports() -> None:
    """Handlers are named by module path and imported on first use; a wrong name must fail here,
    not on the first time somebody types that verb."""
    from bot import grammar

    assert {verb.name for verb in grammar.VERBS} | {"help"} == set(dispatch.HANDLERS)
    for verb in dispatch.HANDLERS:
        assert callable(dispatch.handler_for(verb)), verb


def test_an_empty_list_is_said_as_nobody_not_as_missing_admins(migrated):
    write_access('[access]\nadmins = ["UADMIN"]\n[access.verbs]\ndecide = []\n')
    refused = shown(dispatch.handle("decide ship it", Origin(user="UX", channel="C1")))
    assert "It is limited to nobody and the admins (<@UADMIN>)." in refused
    Path(os.environ["LABMATE_CONFIG"]).write_text('[access.verbs]\ndecide = ["UWRITER"]\n')
    reset_settings()
    no_admins = shown(dispatch.handle("decide ship it", Origin(user="UX", channel="C1")))
    assert "It is limited to <@UWRITER> and the admins (none are configured in labmate.toml)." in no_admins


def test_a_command_that_doesnt_parse_is_audited_under_the_verb_it_tried(migrated):
    for typed in ("cancel L-1", "/lab summary", "frobnicate now"):
        assert dispatch.handle(typed, Origin(user="U1", channel="C1")).outcome == "user_error"
    assert [(r.verb, r.text, r.outcome) for r in audit_rows(migrated)] == [
        ("cancel", "cancel L-1", "user_error"), ("summary", "/lab summary", "user_error"),
        ("", "frobnicate now", "user_error")]


@pytest.mark.parametrize(("question", "verb"), [
    ("which run had the best val_f1 in sales-agent?", "best"),
    ("how is sales-agent doing?", "summary"),
    ("what did we decide about pricing?", "decisions"),
])  # fmt: skip
def test_a_question_meets_the_access_rules_of_the_command_it_becomes(migrated, question: str, verb: str):
    """`best` or `decisions` limited in labmate.toml were answered to anyone who asked in words (and, as a
    mention, in the channel for everyone to see)."""
    write_access(f'[access]\nadmins = ["UADMIN"]\n[access.verbs]\n{verb} = ["UALLOWED"]\n')
    refused = dispatch.handle(f"ask {question}", Origin(user="UBOB", channel="C1"))
    assert refused.outcome == "refused" and refused.jobs == []
    assert f"That question is answered by `{verb}`. You can't use `{verb}` here." in shown(refused)
    allowed = dispatch.handle(f"ask {question}", Origin(user="UALLOWED", channel="C1"))
    assert allowed.outcome != "refused"  # answered, or handed to its job (which writes its own audit row)
    assert ("UBOB", "ask", "refused") in [(r.user, r.verb, r.outcome) for r in audit_rows(migrated)]


@pytest.mark.parametrize("text", ["help", "help decide"])
def test_help_can_be_handed_to_a_worker_as_json(migrated, text):
    """A mention's help reply goes to a worker like any other (retried, marked undelivered if Slack never
    takes it); its context held the grammar's Verb objects, which JSON can't carry, so it was posted
    once from the web process and lost on one Slack error."""
    from bot.replies import pack, unpacked

    reply = dispatch.handle(text, Origin(user="U1", channel="C1"))
    carried = unpacked(json.loads(json.dumps(pack(reply.context))))
    assert shown(reply) == shown(type(reply)(reply.template, carried))
    assert "decide" in shown(reply)


def test_a_repeated_modal_submission_is_a_duplicate_not_an_error(migrated):
    """Slack sends a view submission again when its ack was late. The repeat was refused by the first
    one's own decision ("already logged as decision #1"): the user saw that error over a saved modal,
    and each repeat wrote a user_error audit row."""
    from bot import grammar
    from bot.listeners import logging_decisions

    args = grammar.parse("decide we pick the modal model").args
    origin = Origin(user="U1", channel="C1", source="slack", idempotency_key="view:V1:h1:abc")
    first = logging_decisions.store(args, origin, author="U1", permalink=None, source_ts="1700000000.000100", edited=True)
    again = logging_decisions.store(args, origin, author="U1", permalink=None, source_ts="1700000000.000100", edited=True)
    assert first.outcome == "ok" and again.outcome == "duplicate"
    assert [(r.verb, r.outcome) for r in audit_rows(migrated)] == [("decide", "ok")]
    other = Origin(user="U1", channel="C1", source="slack", idempotency_key="view:V2:h2:abc")  # a new submission
    refused = logging_decisions.store(args, other, author="U1", permalink=None, source_ts="1700000000.000100", edited=True)
    assert refused.outcome == "user_error" and "already logged as decision" in shown(refused)
