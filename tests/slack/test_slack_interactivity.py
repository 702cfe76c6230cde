"""The "Log as decision" message shortcut, its modal, and the modal's submission."""

from __future__ import annotations

import json
import time

from fakeslack import iter_texts, permalink
from slackreq import Lab, message_ts, poll, unique

RUN_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def test_shortcut_opens_a_prefilled_modal_and_its_submission_stores_the_decision(lab: Lab) -> None:
    author, user, channel = unique("U"), unique("U"), unique("C")
    ts = message_ts()
    message = {"type": "message", "user": author, "ts": ts, "text": "switch to the distilled model &amp; keep v2 &lt;warm&gt;"}

    response = lab.slack.message_shortcut(callback_id="log_decision", user=user, channel=channel, message=message)

    assert response.status == 200
    [opened] = lab.fake.wait_for("views.open", where=lambda c: channel in c.params["view"]["private_metadata"])
    view = opened.params["view"]
    assert view["callback_id"] == "log_decision_modal"
    assert view["type"] == "modal"
    assert json.loads(view["private_metadata"]) == {"channel": channel, "ts": ts, "author": author}
    [text_block] = [b for b in view["blocks"] if b["block_id"] == "text"]
    assert text_block["element"]["initial_value"] == "switch to the distilled model & keep v2 <warm>"
    assert [b["block_id"] for b in view["blocks"]] == ["text", "tags", "links"]
    poll(lambda: lab.audit(user=user), what="the opening's audit row")  # served: written just after views.open

    submitted = lab.slack.view_submission(
        opened.response["view"],
        user=user,
        values={"text": text_block["element"]["initial_value"], "tags": "release, models", "links": None},
    )

    assert submitted.status == 200
    assert submitted.body == ""  # a plain ack closes the modal
    [decision] = lab.decisions(channel=channel)
    assert decision.text == "switch to the distilled model & keep v2 <warm>"
    assert decision.tag_names == ["models", "release"]
    assert (decision.author, decision.source_ts) == (author, ts)
    # The permalink is looked up after the ack, so a slow Slack API never holds the modal open.
    poll(lambda: lab.decisions(channel=channel)[0].permalink == permalink(channel, ts), what="the permalink")
    assert [c.params["message_ts"] for c in lab.fake.calls("chat.getPermalink") if c.params["channel"] == channel] == [ts]
    [confirmation] = lab.fake.wait_for(
        "chat.postMessage", where=lambda c: c.params.get("channel") == channel and c.params.get("thread_ts") == ts
    )
    shown = "\n".join(iter_texts(confirmation.params["blocks"]))
    assert f"*Decision #{decision.id}* by <@{author}>, logged by <@{user}>" in shown
    assert "keep v2 &lt;warm&gt;" in shown
    opening, event = lab.audit(user=user)
    assert (opening.verb, opening.outcome, opening.text) == ("decide", "ok", "decide (form opened)")
    assert (event.verb, event.outcome, event.channel) == ("decide", "ok", channel)

    # Slack may deliver the same submission twice: one decision, one confirmation.
    again = lab.slack.view_submission(
        opened.response["view"],
        user=user,
        values={"text": text_block["element"]["initial_value"], "tags": "release, models", "links": None},
    )
    assert again.status == 200
    assert [d.id for d in lab.decisions(channel=channel)] == [decision.id]
    assert len(lab.fake.posted(channel)) == 1


def test_a_bad_model_link_in_the_modal_is_an_error_on_the_links_block(lab: Lab) -> None:
    from bot.listeners.shortcuts import modal

    user, channel = unique("U"), unique("C")
    ts = message_ts()
    view = {**modal("ship it", {"channel": channel, "ts": ts, "author": user}), "id": unique("V"), "hash": "1.abc"}

    response = lab.slack.view_submission(view, user=user, values={"text": "ship it", "tags": "", "links": "model:nothex"})

    assert response.status == 200
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert list(answer["errors"]) == ["links"]
    assert answer["errors"]["links"].startswith("model:nothex is not a registered model version.")  # plain text
    assert len(answer["errors"]["links"]) <= 150
    assert lab.decisions(channel=channel) == []
    assert lab.fake.posted(channel) == []


def test_an_empty_modal_text_is_an_error_on_the_text_block(lab: Lab) -> None:
    from bot.listeners.shortcuts import modal

    user, channel = unique("U"), unique("C")
    view = {**modal("", {"channel": channel, "ts": message_ts(), "author": user}), "id": unique("V"), "hash": "1.abc"}

    response = lab.slack.view_submission(view, user=user, values={"text": "  ", "tags": "release", "links": f"run:{RUN_ID}"})

    answer = response.json()
    assert answer["response_action"] == "errors"
    assert answer["errors"] == {"text": "A decision needs some text saying what was decided."}
    assert lab.decisions(channel=channel) == []


def test_a_button_runs_its_command_as_the_clicker_and_answers_them_alone(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    word = unique("w").lower()
    lab.slack.command(f"decide {word} is the tokenizer we keep #release", user=user, channel=channel)

    response = lab.slack.block_action(action_id="lab:decisions:0", value=word, user=user, channel=channel)

    assert response.status == 200 and response.body == ""  # acked at once
    [answer] = lab.fake.wait_for(
        "response_url", where=lambda c: "actions/" in c.headers.get("host", "") or word in json.dumps(c.params)
    )
    assert answer.params["response_type"] == "ephemeral" and answer.params["replace_original"] is False
    assert word in "\n".join(iter_texts(answer.params["blocks"]))
    [event] = [e for e in lab.audit(user=user) if e.verb == "decisions"]
    assert (event.outcome, event.channel, event.source) == ("ok", channel, "slack")


def test_a_button_whose_command_fails_tells_the_clicker_why(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    response = lab.slack.block_action(action_id="lab:supersede:0", value="424242 something else", user=user, channel=channel)
    assert response.status == 200
    [answer] = lab.fake.wait_for("response_url", where=lambda c: "424242" in json.dumps(c.params))
    assert "There is no decision #424242" in answer.params["text"]


def test_opening_the_log_as_decision_form_writes_one_row(lab: Lab) -> None:
    author, user, channel = unique("U"), unique("U"), unique("C")
    message = {"type": "message", "user": author, "ts": message_ts(), "text": "ship it"}

    response = lab.slack.message_shortcut(callback_id="log_decision", user=user, channel=channel, message=message)

    assert response.status == 200 and response.body == ""
    lab.fake.wait_for("views.open", where=lambda c: channel in c.params["view"]["private_metadata"])
    lab.drain()
    # Served, the row is written just after views.open answers: wait for it, then check it is the only one.
    poll(lambda: lab.audit(user=user), what="the opening's audit row")
    assert [(e.user, e.verb, e.outcome, e.text, e.channel) for e in lab.audit(user=user)] == [
        (user, "decide", "ok", "decide (form opened)", channel)
    ]
    assert lab.fake.posted(channel) == []


def test_a_modal_refused_by_validation_is_refused_again_when_saved_again_and_a_corrected_one_is_stored(lab: Lab) -> None:
    from bot.listeners.shortcuts import modal

    user, channel = unique("U"), unique("C")
    view = {**modal("ship it", {"channel": channel, "ts": message_ts(), "author": user}), "id": unique("V"), "hash": "1.abc"}
    bad = {"text": "ship it", "tags": "", "links": "model:nothex"}

    first = lab.slack.view_submission(view, user=user, values=bad)
    repeat = lab.slack.view_submission(view, user=user, values=bad)  # Save pressed again, unchanged

    for response in (first, repeat):
        assert response.json() == {
            "response_action": "errors",
            "errors": {"links": first.json()["errors"]["links"]},
        }
    assert first.json()["errors"]["links"].startswith("model:nothex is not a registered model version.")
    assert [(e.user, e.verb, e.outcome, e.text) for e in lab.audit(user=user)] == [
        (user, "decide", "user_error", "decide ship it model:nothex")
    ] * 2  # Slack never re-sends a form: the second is the person's second try

    # Corrected in the same modal (same view id and hash): a new submission, stored.
    fixed = lab.slack.view_submission(view, user=user, values={"text": "ship it", "tags": "", "links": None})
    assert fixed.status == 200 and fixed.body == ""
    [decision] = lab.decisions(channel=channel)
    assert decision.text == "ship it"
    assert [(e.user, e.verb, e.outcome) for e in lab.audit(user=user)] == [
        (user, "decide", "user_error"),
        (user, "decide", "user_error"),
        (user, "decide", "ok"),
    ]


def test_a_modal_saved_again_after_something_went_wrong_stores_the_decision(inprocess: Lab, monkeypatch) -> None:
    """The first Save fails on our side ("try again"); the same form Saved again is that try, not a
    duplicate of the failure (it was closed as one, and the decision lost)."""
    from bot.listeners import logging_decisions
    from bot.listeners.shortcuts import modal

    real, calls = logging_decisions.log_message, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a failure of ours (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(logging_decisions, "log_message", fails_once)
    user, channel = unique("U"), unique("C")
    view = {**modal("ship it", {"channel": channel, "ts": message_ts(), "author": user}), "id": unique("V"), "hash": "1.abc"}
    values = {"text": "ship it", "tags": "", "links": None}

    first = inprocess.slack.view_submission(view, user=user, values=values)
    assert first.json()["response_action"] == "errors" and "went wrong" in first.json()["errors"]["text"]
    again = inprocess.slack.view_submission(view, user=user, values=values)
    assert again.status == 200 and again.body == ""
    inprocess.drain()
    [decision] = inprocess.decisions(channel=channel)
    assert decision.text == "ship it"
    assert [e.outcome for e in inprocess.audit(user=user)] == ["error", "ok"]
    [confirmation] = inprocess.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == channel)
    assert f"*Decision #{decision.id}* logged" in "\n".join(iter_texts(confirmation.params["blocks"]))


def test_a_modal_saved_while_the_job_queue_is_down_says_its_link_check_waits(inprocess: Lab, monkeypatch) -> None:
    from bot.listeners.shortcuts import modal

    def broker_down(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused. (test)")

    monkeypatch.setattr("tasks.client.enqueue", broker_down)
    user, channel = unique("U"), unique("C")
    view = {**modal("ship it", {"channel": channel, "ts": message_ts(), "author": user}), "id": unique("V"), "hash": "1.abc"}
    saved = inprocess.slack.view_submission(view, user=user, values={"text": "ship it", "tags": "", "links": f"run:{RUN_ID}"})
    assert saved.status == 200 and saved.body == ""
    [confirmation] = inprocess.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == channel)
    shown = "\n".join(iter_texts(confirmation.params["blocks"]))
    assert "*Decision #" in shown and "The job queue is unreachable, so " in shown, shown


def _form(lab: Lab, *, channel: str, ts: str, author: str) -> dict:
    from bot.listeners.shortcuts import modal

    return {**modal("ship it", {"channel": channel, "ts": ts, "author": author}), "id": unique("V"), "hash": "1.abc"}


def test_the_modal_is_acked_at_once_while_slack_is_slow_to_give_the_permalink(lab: Lab) -> None:
    user, channel, ts = unique("U"), unique("C"), message_ts()
    lab.fake.stall("chat.getPermalink", 6)
    started = time.monotonic()
    response = lab.slack.view_submission(_form(lab, channel=channel, ts=ts, author=user), user=user,
                                         values={"text": "ship it", "tags": "", "links": ""})
    assert response.status == 200 and response.body == ""
    assert time.monotonic() - started < 3, "Slack wants the ack within 3 s"
    [decision] = lab.decisions(channel=channel)
    assert decision.permalink is None
    poll(lambda: lab.decisions(channel=channel)[0].permalink == permalink(channel, ts), timeout=20, what="the permalink")


def test_each_modal_field_is_read_as_what_its_label_says(inprocess: Lab) -> None:
    lab, user = inprocess, unique("U")

    def submit(**values: str) -> tuple[dict, str]:
        channel = unique("C")
        answer = lab.slack.view_submission(_form(lab, channel=channel, ts=message_ts(), author=user), user=user,
                                           values={"text": "ok", "tags": "", "links": "", **values})
        return (answer.json() if answer.body else {}), channel

    refused, channel = submit(links="hello world")
    assert list(refused["errors"]) == ["links"]
    assert refused["errors"]["links"].startswith("hello isn't an MLflow link. Use run:<run id>")
    assert lab.decisions(channel=channel) == []

    refused, _ = submit(tags="run:abc")
    assert list(refused["errors"]) == ["tags"] and refused["errors"]["tags"].startswith("run:abc isn't a tag")
    refused, _ = submit(links='exp:"unclosed model:x')
    assert list(refused["errors"]) == ["links"], "a mistake in the links shows under the links"

    accepted, channel = submit(links=f"https://mlflow.example/#/experiments/1/runs/{RUN_ID}", tags="#release, models")
    assert accepted == {}
    [decision] = lab.decisions(channel=channel)
    assert decision.text == "ok" and decision.tag_names == ["models", "release"]
    assert [(link.kind, link.ref) for link in decision.links] == [("run", RUN_ID)]


def test_saving_the_form_again_for_a_logged_message_is_refused_under_its_text(inprocess: Lab) -> None:
    lab, user, channel, ts = inprocess, unique("U"), unique("C"), message_ts()
    first = lab.slack.view_submission(_form(lab, channel=channel, ts=ts, author=user), user=user,
                                      values={"text": "ship it", "tags": "", "links": ""})
    assert first.body == ""
    [decision] = lab.decisions(channel=channel)
    lab.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == channel)

    again = lab.slack.view_submission(_form(lab, channel=channel, ts=ts, author=user), user=user,
                                      values={"text": "ship it on monday", "tags": "", "links": ""})
    assert again.json() == {"response_action": "errors", "errors": {"text": (
        f"This message is already logged as decision #{decision.id}. To change it, supersede it: "
        f"/lab supersede {decision.id} <the new decision>.")}}
    assert [d.text for d in lab.decisions(channel=channel)] == ["ship it"]
    lab.drain()
    assert len(lab.fake.posted(channel)) == 1, "no second post in the thread"
    assert [e.outcome for e in lab.audit(user=user)] == ["ok", "user_error"]

    # Nor does the shortcut open the form on it again: the person is told why, privately.
    message = {"type": "message", "user": user, "ts": ts, "text": "ship it"}
    lab.slack.message_shortcut(callback_id="log_decision", user=user, channel=channel, message=message)
    [told] = lab.fake.wait_for("response_url", where=lambda c: f"#{decision.id}" in json.dumps(c.params))
    assert f"already logged as decision #{decision.id}" in json.dumps(told.params)
    assert not [c for c in lab.fake.calls("views.open") if channel in c.params["view"]["private_metadata"]]


def test_the_form_does_not_open_for_someone_who_may_not_decide_and_a_long_message_says_it_was_cut(
    inprocess: Lab,
) -> None:
    import os
    from pathlib import Path

    from bot.grammar.decisions import MAX_DECISION
    from labmate.settings import reset_settings

    lab, channel = inprocess, unique("C")
    Path(os.environ["LABMATE_CONFIG"]).write_text('[access]\nadmins = ["UADMIN"]\n\n[access.verbs]\ndecide = ["UADMIN"]\n')
    reset_settings()
    message = {"type": "message", "user": "UAUTHOR", "ts": message_ts(), "text": "x" * (MAX_DECISION + 503)}
    lab.slack.message_shortcut(callback_id="log_decision", user="U0PLEB", channel=channel, message=message)
    [told] = lab.fake.wait_for("response_url", where=lambda c: "You can't use `decide` here" in json.dumps(c.params))
    assert told.params["response_type"] == "ephemeral"

    lab.slack.message_shortcut(callback_id="log_decision", user="UADMIN", channel=channel, message=message)
    [opened] = lab.fake.wait_for("views.open", where=lambda c: channel in c.params["view"]["private_metadata"])
    [text_block] = [b for b in opened.params["view"]["blocks"] if b["block_id"] == "text"]
    assert len(text_block["element"]["initial_value"]) == MAX_DECISION
    assert text_block["hint"]["text"].startswith(f"The message is {MAX_DECISION + 503:,} characters and a decision holds")


def test_a_field_error_shows_mentions_as_names_and_keeps_our_placeholders() -> None:
    """Slack shows field errors as plain text: `<@U1>` would read literally, and a channel is no `@`."""
    from bot.listeners.views import field_text

    assert field_text("It is limited to <@U1>, <#CDECIDE>, <!subteam^S1> and the admins (<@U0ADMIN>).") == (
        "It is limited to @U1, #CDECIDE, @S1 and the admins (@U0ADMIN)."
    )
    assert field_text("Use `run:<run id>`.") == "Use run:<run id>."
