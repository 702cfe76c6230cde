"""Events: mentions answer in thread, the decision emoji logs a message once, retries and 429s."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fakeslack import BOT_USER_ID, Call, FakeSlack, iter_texts, permalink
from slackreq import Lab, message_ts, unique


def in_thread(channel: str, ts: str) -> Callable[[Call], bool]:
    return lambda c: c.params.get("channel") == channel and c.params.get("thread_ts") == ts


def text_of(call: Call) -> str:
    return "\n".join([call.params.get("text", ""), *iter_texts(call.params.get("blocks", []))])


def decide(lab: Lab, text: str, *, user: str, channel: str) -> int:
    response = lab.slack.command(f"decide {text}", user=user, channel=channel)
    assert response.status == 200, response.body
    return max(d.id for d in lab.decisions(channel=channel))


def test_mention_answers_in_thread_with_the_matching_decision(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    # The served labmate keeps one knowledge base for the module: a unique word ranks ours first there.
    word = "" if lab.mode == "inprocess" else " " + unique("zq").lower()
    other = decide(lab, "ship the candidate model #release", user=user, channel=channel)
    wanted = decide(lab, f"drop bigrams{word}: they overfit on the val split #features", user=user, channel=channel)

    response, _, ts = lab.slack.mention(f"<@{BOT_USER_ID}> why did we drop bigrams{word}?", user=user, channel=channel)

    assert response.status == 200
    [reply] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, ts))
    shown = text_of(reply)
    assert f"*#{wanted}* drop bigrams{word}: they overfit on the val split" in shown
    assert f"*#{other}*" not in shown
    assert reply.token == "xoxb-test"
    asked = [e for e in lab.audit(user=user) if e.verb == "ask"]
    assert [(e.text, e.outcome, e.channel) for e in asked] == [(f"ask why did we drop bigrams{word}?", "ok", channel)]


def test_mention_with_a_verb_runs_it(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    _, _, ts = lab.slack.mention(f"<@{BOT_USER_ID}> help decide", user=user, channel=channel)
    [reply] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, ts))
    assert "*/lab decide*: Log a team decision" in text_of(reply)


def test_a_mentions_working_on_it_becomes_its_answer(lab: Lab) -> None:
    """A question a job answers: "Working on it" is posted in the thread, then edited into the answer; it was
    left above the answer for good."""
    user, channel = unique("U"), unique("C")
    _, _, ts = lab.slack.mention(f"<@{BOT_USER_ID}> summary no-such-experiment", user=user, channel=channel)
    [update] = lab.fake.wait_for("chat.update", where=lambda c: c.params.get("channel") == channel, timeout=60)
    lab.drain()
    [posted] = [c for c in lab.fake.posted(channel) if c.params.get("thread_ts") == ts]
    assert "Working on it" in text_of(posted)
    assert update.params["ts"] == posted.response["ts"]
    assert "no-such-experiment" in text_of(update) and "Working on it" not in text_of(update)
    [message] = [m for m in lab.fake.messages(channel) if m.get("thread_ts") == ts]
    assert "Working on it" not in message["text"]


def test_a_retried_event_is_answered_once(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    decide(lab, "freeze the tokenizer #data", user=user, channel=channel)
    response, event_id, ts = lab.slack.mention(f"<@{BOT_USER_ID}> tokenizer?", user=user, channel=channel)
    assert response.status == 200
    lab.fake.wait_for("chat.postMessage", where=in_thread(channel, ts))

    retried, _, _ = lab.slack.mention(
        f"<@{BOT_USER_ID}> tokenizer?", user=user, channel=channel, ts=ts, event_id=event_id, retry_num=1
    )

    assert retried.status == 200
    lab.drain()
    # Out of process there is no executor to drain: a later event in the same channel is the barrier
    # (its lazy listener is queued after the retry's, which only needs one SELECT to give up).
    _, _, barrier = lab.slack.mention(f"<@{BOT_USER_ID}> help", user=user, channel=channel)
    lab.fake.wait_for("chat.postMessage", where=in_thread(channel, barrier))
    assert [c.params["thread_ts"] for c in lab.fake.posted(channel)] == [ts, barrier]
    assert [e.verb for e in lab.audit(user=user)] == ["decide", "ask", "help"]


def test_reaction_logs_the_message_once_with_its_permalink(lab: Lab) -> None:
    author, reactor, other, channel = unique("U"), unique("U"), unique("U"), unique("C")
    ts = message_ts()
    lab.fake.add_message(channel, {"user": author, "ts": ts, "text": "we ship v3 &lt;today&gt; &amp; keep v2 warm #release"})

    response, _ = lab.slack.reaction("reaction_added", reaction="memo", user=reactor, channel=channel, ts=ts, item_user=author)

    assert response.status == 200
    [confirmation] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, ts))
    [decision] = lab.decisions(channel=channel)
    assert decision.text == "we ship v3 <today> & keep v2 warm"
    assert decision.tag_names == ["release"]
    assert (decision.author, decision.source_ts, decision.permalink) == (author, ts, permalink(channel, ts))
    assert f"*Decision #{decision.id}* by <@{author}>, logged by <@{reactor}>" in text_of(confirmation)
    assert "&lt;today&gt; &amp; keep" in text_of(confirmation)
    [history] = [c for c in lab.fake.calls("conversations.history") if c.params.get("channel") == channel]
    assert (history.params["latest"], history.params["inclusive"], history.params["limit"]) == (ts, "1", "1")
    assert [c.params["message_ts"] for c in lab.fake.calls("chat.getPermalink") if c.params["channel"] == channel] == [ts]

    # The same person again, then someone else: still one decision (each is told which one it is).
    lab.slack.reaction("reaction_added", reaction="memo", user=reactor, channel=channel, ts=ts, item_user=author)
    lab.slack.reaction("reaction_added", reaction="memo", user=other, channel=channel, ts=ts, item_user=author)
    confirmations = lab.fake.wait_for("chat.postMessage", 3, where=in_thread(channel, ts))
    assert all(f"*Decision #{decision.id}*" in text_of(c) for c in confirmations)
    assert [d.id for d in lab.decisions(channel=channel)] == [decision.id]

    removed, _ = lab.slack.reaction("reaction_removed", reaction="memo", user=reactor, channel=channel, ts=ts, item_user=author)
    assert removed.status == 200
    lab.drain()
    assert [d.id for d in lab.decisions(channel=channel)] == [decision.id]


def test_other_emoji_and_unreadable_messages(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    ts = message_ts()
    lab.fake.add_message(channel, {"user": user, "ts": ts, "text": "not a decision"})
    lab.slack.reaction("reaction_added", reaction="thumbsup", user=user, channel=channel, ts=ts, item_user=user)

    missing = message_ts()
    lab.slack.reaction("reaction_added", reaction="memo", user=user, channel=channel, ts=missing, item_user=user)

    [told] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, missing))
    assert "I can't find that message (was it deleted?), so nothing was logged." in text_of(told)  # not "invite me"
    lab.drain()
    assert lab.decisions(channel=channel) == []
    assert lab.fake.posted(channel) == [told]

    private = unique("G")
    lab.fake.not_a_member(private)
    lab.slack.reaction("reaction_added", reaction="memo", user=user, channel=private, ts=ts, item_user=user)
    [told] = lab.fake.wait_for("chat.postMessage", where=in_thread(private, ts))
    assert "invite me to the channel and react again" in text_of(told)
    assert lab.decisions(channel=private) == []


def test_a_rate_limited_post_is_retried_and_delivered_once(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    lab.fake.rate_limit("chat.postMessage", 1, where=lambda params: params.get("channel") == channel)

    _, _, ts = lab.slack.mention(f"<@{BOT_USER_ID}> help", user=user, channel=channel)

    [delivered] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, ts), timeout=20)
    lab.drain()
    attempts = [c for c in lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel]
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0  # Retry-After: 1 was honoured
    assert attempts[0].params == attempts[1].params
    assert lab.fake.posted(channel) == [delivered]


@pytest.mark.parametrize("times", [1, 2])
def test_the_web_client_retries_429s(slack_env: FakeSlack, times: int) -> None:
    """The SDK's RateLimitErrorRetryHandler, as configured by bot.slack_client, against the fake."""
    from bot.slack_client import web_client
    from labmate.settings import get_settings

    channel = unique("C")
    slack_env.rate_limit("chat.postMessage", times)
    answer = web_client(get_settings()).chat_postMessage(channel=channel, text="hello")
    assert answer["ok"] is True
    assert [c.status for c in slack_env.calls("chat.postMessage")] == [429] * times + [200]
    assert len(slack_env.posted(channel)) == 1


def test_the_web_client_gives_up_after_two_retries(slack_env: FakeSlack) -> None:
    """Past two 429s in one call the SDK stops waiting inline; the job's Celery retry takes over."""
    from slack_sdk.errors import SlackApiError

    from bot.slack_client import web_client
    from labmate.settings import get_settings

    slack_env.retry_after = 0
    slack_env.rate_limit("chat.postMessage", 4)
    with pytest.raises(SlackApiError) as caught:
        web_client(get_settings()).chat_postMessage(channel=unique("C"), text="hello")
    assert caught.value.response.status_code == 429
    assert [c.status for c in slack_env.calls("chat.postMessage")] == [429] * 3
    assert slack_env.posted() == []


def rows(lab: Lab, user: str) -> list[tuple[str, str, str]]:
    return [(e.user, e.verb, e.outcome) for e in lab.audit(user=user)]


def test_a_reaction_that_logs_nothing_writes_one_decide_row(lab: Lab) -> None:
    user, channel = unique("U"), unique("C")
    missing = message_ts()
    lab.slack.reaction("reaction_added", reaction="memo", user=user, channel=channel, ts=missing, item_user=user)
    [told] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, missing))
    assert told.params["text"] == "I can't find that message (was it deleted?), so nothing was logged."

    blank = message_ts()
    lab.fake.add_message(channel, {"user": user, "ts": blank, "text": "   "})
    lab.slack.reaction("reaction_added", reaction="memo", user=user, channel=channel, ts=blank, item_user=user)
    [told] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, blank))
    assert told.params["text"] == "A decision needs some text saying what was decided."

    lab.drain()
    assert lab.decisions(channel=channel) == []
    assert rows(lab, user) == [(user, "decide", "user_error"), (user, "decide", "user_error")]
    assert [e.text for e in lab.audit(user=user)] == [f"decide (:memo: on {channel}/{missing})", "decide"]


@pytest.mark.parametrize(
    ("command", "verb", "shown"),
    [
        ("supersede abc", "supersede", "`abc` is not a decision id. Say which decision is replaced, then the new text."),
        ("supersede 424242 keep bigrams", "supersede", "There is no decision #424242."),
    ],
)
def test_a_retried_event_whose_command_fails_is_audited_once(lab: Lab, command: str, verb: str, shown: str) -> None:
    user, channel = unique("U"), unique("C")
    _, event_id, ts = lab.slack.mention(f"<@{BOT_USER_ID}> {command}", user=user, channel=channel)
    [told] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, ts))
    lab.drain()

    retried, _, _ = lab.slack.mention(
        f"<@{BOT_USER_ID}> {command}", user=user, channel=channel, ts=ts, event_id=event_id, retry_num=1
    )

    assert retried.status == 200
    lab.drain()
    _, _, barrier = lab.slack.mention(f"<@{BOT_USER_ID}> help", user=user, channel=channel)
    lab.fake.wait_for("chat.postMessage", where=in_thread(channel, barrier))
    assert told.params["text"] == shown
    assert [c.params["thread_ts"] for c in lab.fake.posted(channel)] == [ts, barrier]
    assert rows(lab, user) == [(user, verb, "user_error"), (user, "help", "ok")]
    assert lab.audit(user=user)[0].idempotency_key == f"evt:{event_id}"


def test_a_refused_reaction_or_mention_is_told_to_the_person_alone(inprocess: Lab) -> None:
    """A refusal names the admins and the user groups that may: in the thread it would ping them all."""
    import os
    from pathlib import Path

    from labmate.settings import reset_settings

    Path(os.environ["LABMATE_CONFIG"]).write_text(
        '[access]\nadmins = ["U0ADMIN"]\n\n[access.verbs]\ndecide = ["S0MLLEADS"]\n', encoding="utf-8"
    )
    reset_settings()
    lab, user, channel = inprocess, unique("U"), unique("C")
    ts = message_ts()
    lab.fake.add_message(channel, {"user": "U0AUTHOR", "ts": ts, "text": "we ship friday"})
    lab.slack.reaction("reaction_added", reaction="memo", user=user, channel=channel, ts=ts, item_user="U0AUTHOR")
    lab.slack.mention(f"<@{BOT_USER_ID}> decide we ship friday", user=user, channel=channel)

    told = lab.fake.wait_for("chat.postEphemeral", 2, where=lambda c: c.params.get("channel") == channel)
    assert {c.params["user"] for c in told} == {user}
    assert all("It is limited to <!subteam^S0MLLEADS> and the admins (<@U0ADMIN>)." in text_of(c) for c in told)
    lab.drain()
    assert lab.fake.posted(channel) == [], "nothing in the channel or its threads"
    assert lab.decisions(channel=channel) == []
    assert [e.outcome for e in lab.audit(user=user)] == ["refused", "refused"]


def test_a_logged_message_keeps_its_mentions_channels_and_links_as_words(inprocess: Lab) -> None:
    """Slack sends them as markup; kept as it was, every list would show `<https://x|the doc>` literally."""
    lab, user, channel = inprocess, unique("U"), unique("C")
    ts = message_ts()
    text = "ship it per <@U0DANA>'s review, see <https://docs.example/x|the doc> in <#C0ML|ml> &amp; <!here> #release"
    lab.fake.add_message(channel, {"user": "U0AUTHOR", "ts": ts, "text": text})
    lab.slack.reaction("reaction_added", reaction="memo", user=user, channel=channel, ts=ts, item_user="U0AUTHOR")
    [confirmation] = lab.fake.wait_for("chat.postMessage", where=in_thread(channel, ts))
    [decision] = lab.decisions(channel=channel)
    assert decision.text == "ship it per @U0DANA's review, see the doc (https://docs.example/x) in “#ml” & @here"
    assert decision.tag_names == ["release"]
    shown = text_of(confirmation)
    assert "see the doc (https://docs.example/x) in “#ml” &amp; @here" in shown
    assert "&lt;" not in shown and "<!here>" not in shown
