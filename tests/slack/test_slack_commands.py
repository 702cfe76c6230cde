"""Slash commands, signed as Slack signs them, answered in the HTTP response itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakeslack import iter_texts
from slackreq import Lab, Response, poll, unique

RUN_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def answer(response: Response) -> dict[str, Any]:
    assert response.status == 200, (response.status, response.body)
    data = response.json()
    assert data.get("response_type") in ("in_channel", "ephemeral"), data
    return data


def shown(data: dict[str, Any]) -> str:
    """Everything the user sees: the fallback text and every text in the blocks."""
    return "\n".join([data.get("text", ""), *iter_texts(data.get("blocks", []))])


def test_decide_answers_in_channel_with_the_id_and_stores_it(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    data = answer(lab.slack.command("decide drop the bigram features, they overfit #features", user=user, channel=channel))

    [decision] = lab.decisions(channel=channel)
    assert decision.text == "drop the bigram features, they overfit"
    assert decision.author == user
    assert decision.tag_names == ["features"]
    assert data["response_type"] == "in_channel"
    assert f"Decision #{decision.id}" in data["text"]
    assert f"*Decision #{decision.id}*" in shown(data)
    [event] = lab.audit(user=user)
    assert (event.verb, event.outcome, event.source, event.channel) == ("decide", "ok", "slack", channel)


def test_decisions_is_ephemeral_and_finds_it(lab: Lab) -> None:
    user, channel, word = unique("U"), unique("C"), unique("zq").lower()
    answer(lab.slack.command(f"decide keep {word} in the eval set", user=user, channel=channel))
    [decision] = lab.decisions(channel=channel)

    data = answer(lab.slack.command(f"decisions {word}", user=user, channel=channel))

    assert data["response_type"] == "ephemeral"
    assert f"*#{decision.id}* keep {word} in the eval set" in shown(data)
    assert [(e.verb, e.outcome) for e in lab.audit(user=user)] == [("decide", "ok"), ("decisions", "ok")]


@pytest.mark.parametrize("text", ["help", "", "   "])
def test_help_lists_the_verbs(lab: Lab, text: str) -> None:
    user = unique("U")
    data = answer(lab.slack.command(text, user=user))
    assert data["response_type"] == "ephemeral"
    for usage in ("/lab decide &lt;text&gt;", "/lab decisions", "/lab supersede &lt;id&gt;", "/lab ask &lt;question&gt;", "/lab help"):
        assert usage in shown(data)
    assert [(e.verb, e.outcome) for e in lab.audit(user=user)] == [("help", "ok")]


def test_help_for_one_verb(lab: Lab) -> None:
    data = answer(lab.slack.command("help decide"))
    assert data["response_type"] == "ephemeral"
    assert "*/lab decide*: Log a team decision" in shown(data)
    assert "`/lab decide drop the bigram features" in shown(data)


@pytest.mark.parametrize(("typed", "closest"), [("decied", "decide"), ("decisons", "decisions"), ("hlep", "help")])
def test_unknown_verb_names_the_closest(lab: Lab, typed: str, closest: str) -> None:
    user = unique("U")
    data = answer(lab.slack.command(f"{typed} something", user=user))
    assert data["response_type"] == "ephemeral"
    assert f"I don't know the command `{typed}`. Did you mean `{closest}`?" in shown(data)
    [event] = lab.audit(user=user)
    assert event.outcome == "user_error"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("decide", "A decision needs some text saying what was decided."),
        ("decide #release", "A decision needs some text saying what was decided."),
        ("decide ship it model:xyz", "`model:xyz` is not a registered model version."),
        ("decide ship it model:", "`model:` needs a value right after the colon"),
        ("decide ship it model:sales agent", "`model:sales` is not a registered model version"),
        ("decisions since:someday", "`since:someday` is not a time I understand"),
        ("supersede abc ship it", "`abc` is not a decision id"),
        ("supersede 999999 ship it", "There is no decision #999999."),
        ("ask", "Ask me something"),
    ],
)
def test_bad_input_is_a_clear_ephemeral_200(lab: Lab, text: str, says: str) -> None:
    user, channel = unique("U"), unique("C")
    data = answer(lab.slack.command(text, user=user, channel=channel))
    assert data["response_type"] == "ephemeral"
    assert says in shown(data)
    assert "Error id" not in shown(data)
    assert lab.decisions(channel=channel) == []
    [event] = lab.audit(user=user)
    assert event.outcome == "user_error"


def test_ten_thousand_characters_is_too_long(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    data = answer(lab.slack.command("decide " + "x" * 10_000, user=user, channel=channel))
    assert data["response_type"] == "ephemeral"
    assert "That command is 10,007 characters long; the most I take is 4,000." in shown(data)
    assert lab.decisions(channel=channel) == []
    [event] = lab.audit(user=user)
    assert event.outcome == "user_error"
    assert len(event.text) <= 4000


def test_typed_markup_is_stored_as_typed_and_rendered_literally(lab: Lab) -> None:
    """Slack sends `&`, `<`, `>` in command text as entities (should_escape: false touches nothing else).

    The user typed: ship it <!channel> <@U123> <https://evil|ok> &lt; a&b #release
    """
    user, channel = unique("U"), unique("C")
    typed = "ship it <!channel> <@U123> <https://evil|ok> &lt; a&b"
    as_slack_sends = "decide ship it &lt;!channel&gt; &lt;@U123&gt; &lt;https://evil|ok&gt; &amp;lt; a&amp;b #release"

    data = answer(lab.slack.command(as_slack_sends, user=user, channel=channel))

    [decision] = lab.decisions(channel=channel)
    assert decision.text == typed
    assert decision.tag_names == ["release"]
    [event] = lab.audit(user=user)
    assert event.text == f"decide {typed} #release"
    payload = json.dumps(data)
    everything = shown(data)
    assert "&lt;!channel&gt;" in everything
    assert "&lt;@U123&gt;" in everything
    assert "&lt;https://evil|ok&gt;" in everything
    assert "&amp;lt;" in everything and "a&amp;b" in everything
    for raw in ("<!channel>", "<@U123>", "<https://evil|ok>", "<https://evil"):
        assert raw not in payload

    search = answer(lab.slack.command("decisions evil", user=user, channel=channel))
    listed = shown(search)
    assert "&lt;!channel&gt;" in listed
    for raw in ("<!channel>", "<@U123>", "<https://evil|ok>"):
        assert raw not in json.dumps(search)


def test_refused_and_allowed_commands_are_audited(inprocess: Lab, lab_home: Path) -> None:
    import os

    from labmate.settings import reset_settings

    Path(os.environ["LABMATE_CONFIG"]).write_text(
        '[access]\nadmins = ["UADMIN"]\n\n[access.verbs]\ndecide = ["UADMIN"]\n', encoding="utf-8"
    )
    reset_settings()
    channel = unique("C")

    refused = answer(inprocess.slack.command("decide ship the candidate #release", user="U0BOB", channel=channel))
    allowed = answer(inprocess.slack.command("decide ship the candidate #release", user="UADMIN", channel=channel))
    reading = answer(inprocess.slack.command("decisions candidate", user="U0BOB", channel=channel))

    assert refused["response_type"] == "ephemeral"
    assert "You can't use `decide` here. It is limited to <@UADMIN> and the admins (<@UADMIN>)." in shown(refused)
    assert allowed["response_type"] == "in_channel"
    [decision] = inprocess.decisions(channel=channel)
    assert decision.author == "UADMIN"
    assert f"*#{decision.id}* ship the candidate" in shown(reading)
    rows = [(e.user, e.verb, e.outcome, e.channel, e.source) for e in inprocess.audit()]
    assert rows == [
        ("U0BOB", "decide", "refused", channel, "slack"),
        ("UADMIN", "decide", "ok", channel, "slack"),
        ("U0BOB", "decisions", "ok", channel, "slack"),
    ]
    assert [e.text for e in inprocess.audit()] == [
        "decide ship the candidate #release",
        "decide ship the candidate #release",
        "decisions candidate",
    ]
    assert all(e.duration_ms > 0 for e in inprocess.audit())


def test_decide_with_a_run_link_checks_it_in_the_background(lab: Lab) -> None:
    """The answer comes at once; the link check runs on the embedded worker and reports the missing
    run in the channel; the decision is kept."""
    user, channel = unique("U"), unique("C")
    data = answer(lab.slack.command(f"decide drop bigrams, they overfit #features run:{RUN_ID}", user=user, channel=channel))

    assert data["response_type"] == "in_channel"
    [decision] = lab.decisions(channel=channel)
    assert f"run `{RUN_ID}` (checking…)" in shown(data)
    [event] = lab.audit(user=user)
    assert event.outcome == "queued"

    [post] = lab.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == channel, timeout=120)
    assert post.token == "xoxb-test"
    assert post.params["text"] == f"Decision #{decision.id}: 1 link(s) not found in MLflow"
    text = "\n".join(iter_texts(post.params["blocks"]))
    assert f"Decision *#{decision.id}* is kept, but run `{RUN_ID}` was not found in MLflow" in text
    [kept] = lab.decisions(channel=channel)
    assert kept.text == "drop bigrams, they overfit"
    assert [(link.kind, link.ref, link.status) for link in kept.links] == [("run", RUN_ID, "missing")]
    # The job closes the command's audit row after delivering its reply.
    poll(lambda: lab.audit(user=user)[0].outcome == "ok", timeout=30, what="the audit row closed as ok")


def test_a_user_group_in_labmate_toml_grants_its_members(inprocess: Lab, lab_home: Path) -> None:
    import os

    from bot import slack_groups
    from labmate.settings import reset_settings

    Path(os.environ["LABMATE_CONFIG"]).write_text(
        '[access]\nadmins = ["UADMIN"]\n\n[access.verbs]\nsupersede = ["S0LEADS"]\n', encoding="utf-8"
    )
    reset_settings()
    slack_groups.clear()
    inprocess.fake.set_usergroup("S0LEADS", ["U0LEAD"])
    channel = unique("C")
    answer(inprocess.slack.command("decide ship the candidate", user="U0CAROL", channel=channel))
    [decision] = inprocess.decisions(channel=channel)

    refused = answer(inprocess.slack.command(f"supersede {decision.id} keep production", user="U0BOB", channel=channel))
    allowed = answer(inprocess.slack.command(f"supersede {decision.id} keep production", user="U0LEAD", channel=channel))

    assert "It is limited to <!subteam^S0LEADS> and the admins (<@UADMIN>)." in shown(refused)
    assert f"replacing *#{decision.id}*" in shown(allowed)
    assert [c.params.get("usergroup") for c in inprocess.fake.calls("usergroups.users.list")] == ["S0LEADS"]
    slack_groups.clear()
