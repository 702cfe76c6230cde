"""Cards on the delivery path, against the fake Slack: a message two jobs deliver at once is posted once,
and a card's final state is never edited back to an intermediate one."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from fakeslack import FakeSlack

from bot.messages.render import Message
from bot.post import digest
from bot.slack_client import web_client
from bot.slack_delivery import SlackPoster
from labmate.outbox import TransientDeliveryError
from labmate.settings import get_settings
from models import deliveries
from models.base import utcnow
from models.db import session_scope


def message(text: str) -> Message:
    return Message(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}])


@pytest.fixture
def poster(slack_env: FakeSlack) -> SlackPoster:
    return SlackPoster(web_client(get_settings()))


def send(poster: SlackPoster, text: str, *, final: bool, key: str = "launch:7") -> str | None:
    shown = message(text)
    return poster.deliver({"channel": "C1", "source": "slack"}, shown, key=key, final=final, digest=digest(shown))


def test_a_late_intermediate_state_never_overwrites_the_final_one(poster: SlackPoster, slack_env: FakeSlack) -> None:
    ts = send(poster, "running 1/3", final=False)
    send(poster, "finished 3/3", final=True)
    send(poster, "running 2/3", final=False)  # an update that was in flight when the run ended
    assert [c.params["text"] for c in slack_env.calls("chat.update")] == ["finished 3/3"]
    assert send(poster, "running 2/3", final=False) == ts
    send(poster, "finished 3/3, chart attached", final=True)  # a final state may still be completed
    assert [c.params["text"] for c in slack_env.calls("chat.update")] == ["finished 3/3", "finished 3/3, chart attached"]


def test_a_rate_limited_intermediate_state_is_dropped_not_sent_after_the_final_one(
    poster: SlackPoster, slack_env: FakeSlack
) -> None:
    """The SDK waited out Slack's Retry-After and then sent the old state: when the run ended meanwhile,
    the card went back from "finished" to "running" (seen with 429s on card edits)."""
    send(poster, "running 1/3", final=False)
    with session_scope() as session:  # the last edit long enough ago that the next state is sent
        session.execute(deliveries.DeliveryRecord.__table__.update().values(updated_at=utcnow() - timedelta(minutes=1)))
    slack_env.retry_after = 2
    slack_env.rate_limit("chat.update", where=lambda params: params.get("text") == "running 2/3")
    late = threading.Thread(target=send, args=(poster, "running 2/3"), kwargs={"final": False})
    late.start()
    wait = time.monotonic() + 10
    while not slack_env.calls("chat.update") and time.monotonic() < wait:
        time.sleep(0.01)
    send(poster, "finished 3/3", final=True)
    late.join(timeout=10)
    assert [c.params["text"] for c in slack_env.calls("chat.update")] == ["running 2/3", "finished 3/3"]
    assert slack_env.calls("chat.update")[0].status == 429


def test_a_message_another_job_is_posting_now_is_not_posted_twice(poster: SlackPoster, slack_env: FakeSlack) -> None:
    with session_scope() as session:  # another worker recorded that it is posting this card, this instant
        deliveries.start(session, key="launch:8", channel="C1", thread_ts=None, digest="d", by="another-job")
    assert send(poster, "queued", final=False, key="launch:8") is None
    with pytest.raises(TransientDeliveryError, match="being posted by another job"):
        send(poster, "finished", final=True, key="launch:8")
    assert slack_env.calls("chat.postMessage") == []
    with session_scope() as session:  # long enough ago: that worker died mid-post; look, then post
        session.execute(
            deliveries.DeliveryRecord.__table__.update().values(created_at=utcnow() - timedelta(minutes=1))
        )
    send(poster, "finished", final=True, key="launch:8")
    assert [c.params["text"] for c in slack_env.calls("chat.postMessage")] == ["finished"]
    assert slack_env.calls("conversations.history"), "it looked for the other worker's post first"


def test_the_terminal_shows_a_refreshed_card_but_never_goes_back_from_its_final_state(lab_home) -> None:
    from bot.post import Router

    shown: list[str] = []
    router = Router()
    router.add_console("s1", lambda _to, m: shown.append(m.text))
    to = {"source": "shell", "session": "s1", "channel": "terminal"}
    context = {"message": "running", "hint": "", "error_id": None}
    router.deliver(to, "error", context, key="launch:1", final=False)
    router.deliver(to, "error", context, key="launch:1", final=False)  # unchanged: not shown again
    router.deliver(to, "error", {**context, "message": "finished"}, key="launch:1", final=True)
    router.deliver(to, "error", {**context, "message": "running late"}, key="launch:1", final=False)
    assert shown == ["running", "finished"]


def test_a_post_left_in_flight_by_no_job_or_a_failed_attempt_is_looked_up_and_retried(poster: SlackPoster, slack_env: FakeSlack) -> None:
    """Not another job's post in progress: the same job redelivered after its worker died, or an attempt
    that Slack refused (500). Those look for the message and post it, as before."""
    with session_scope() as session:
        deliveries.start(session, key="launch:9", channel="C1", thread_ts=None, digest="d")  # by this (no) job
    send(poster, "finished", final=True, key="launch:9")
    slack_env.fail("chat.postMessage", 1, status=500)
    with pytest.raises(TransientDeliveryError, match="Slack answered 500"):
        send(poster, "queued", final=True, key="launch:10")
    send(poster, "queued", final=True, key="launch:10")  # at once: the failed attempt isn't in flight
    texts = [c.params["text"] for c in slack_env.calls("chat.postMessage") if c.status == 200]
    assert texts == ["finished", "queued"]


def test_a_private_answer_whose_response_url_slack_no_longer_takes_is_sent_ephemerally(
    poster: SlackPoster, slack_env: FakeSlack
) -> None:
    """Slack takes a response_url for 30 minutes and five messages; a later answer goes to the person as
    an ephemeral message in the channel, and where the bot can't post one, as a direct message."""
    slack_env.expire_response_urls()
    reply_to = {"channel": "C1", "user": "U0ALICE", "source": "slack", "ephemeral": True,
                "response_url": slack_env.base_url + "response/commands/T1/1"}
    poster.deliver(reply_to, message("3 runs failed"), key=None, final=True, digest="d")
    assert [c.status for c in slack_env.calls("response_url")] == [404]
    (sent,) = slack_env.calls("chat.postEphemeral")
    assert (sent.params["channel"], sent.params["user"], sent.params["text"]) == ("C1", "U0ALICE", "3 runs failed")

    slack_env.refuse_posts("C2")
    poster.deliver({**reply_to, "channel": "C2"}, message("2 runs failed"), key=None, final=True, digest="d")
    assert [c.response.get("error") for c in slack_env.calls("chat.postEphemeral")][-1] == "not_in_channel"
    (dm,) = slack_env.messages("U0ALICE")
    assert dm["text"] == "Your answer from <#C2>:\n2 runs failed"
    assert dm["blocks"][0]["elements"][0]["text"] == "Your answer from <#C2>:" and dm["blocks"][1]["type"] == "section"


def test_an_answer_to_an_event_in_a_channel_the_bot_cant_post_in_reaches_the_person_privately(
    poster: SlackPoster, slack_env: FakeSlack
) -> None:
    """A reaction's or a mention's answer has no response_url: when the channel refuses the post (archived,
    or posting restricted since), it was dropped with a log line. It goes to the person as a slash
    command's does, and a card's final state follows it the same way."""
    slack_env.refuse_posts("C3")
    reply_to = {"channel": "C3", "user": "U0ALICE", "source": "slack"}
    assert poster.deliver(reply_to, message("Decision #4 logged"), key=None, final=True, digest="d") is None
    (dm,) = slack_env.messages("U0ALICE")
    assert dm["text"] == "Your answer from <#C3>:\nDecision #4 logged"

    poster.deliver(reply_to, message("L2 running"), key="launch:9", final=False, digest="r")
    poster.deliver(reply_to, message("L2 finished"), key="launch:9", final=True, digest="f")
    assert [m["text"].split("\n")[-1] for m in slack_env.messages("U0ALICE")] == [
        "Decision #4 logged", "L2 running", "L2 finished"]


def test_a_response_url_takes_five_messages_like_slacks(slack_env: FakeSlack) -> None:
    from slack_sdk.webhook import WebhookClient

    url = slack_env.base_url + "response/commands/T1/2"
    assert [WebhookClient(url).send(text=str(i)).status_code for i in range(6)] == [200] * 5 + [404]
