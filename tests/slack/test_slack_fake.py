"""The fake Slack itself, through the real slack_sdk client labmate uses (bot.slack_client)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeslack import BOT_USER_ID, FakeSlack
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slackreq import unique


@pytest.fixture
def client(slack_env: FakeSlack) -> WebClient:
    from bot.slack_client import web_client
    from labmate.settings import get_settings

    return web_client(get_settings())


def test_auth_is_checked_and_recorded(slack_env: FakeSlack, client: WebClient) -> None:
    assert client.auth_test()["user_id"] == BOT_USER_ID
    with pytest.raises(SlackApiError) as wrong:
        WebClient(token="xoxb-wrong", base_url=slack_env.api_url).auth_test()
    assert wrong.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as none:
        WebClient(base_url=slack_env.api_url).auth_test()
    assert none.value.response["error"] == "not_authed"
    assert [c.token for c in slack_env.calls("auth.test")] == ["xoxb-test", "xoxb-wrong", None]


def test_json_and_form_params_are_recorded(slack_env: FakeSlack, client: WebClient) -> None:
    channel = unique("C")
    posted = client.chat_postMessage(channel=channel, text="hi", blocks=[{"type": "divider"}], thread_ts="1.2")
    link = client.chat_getPermalink(channel=channel, message_ts=posted["ts"])
    [post] = slack_env.calls("chat.postMessage")
    assert post.headers["content-type"].startswith("application/json")
    assert post.params == {"channel": channel, "text": "hi", "blocks": [{"type": "divider"}], "thread_ts": "1.2"}
    assert link["permalink"].endswith(f"/archives/{channel}/p{posted['ts'].replace('.', '')}")
    replies = client.conversations_replies(channel=channel, ts="1.2")
    assert [m["text"] for m in replies["messages"]] == ["hi"]


def test_history_serves_canned_messages(slack_env: FakeSlack, client: WebClient) -> None:
    channel = unique("C")
    for ts, text in (("100.000001", "first"), ("200.000001", "second"), ("300.000001", "third")):
        slack_env.add_message(channel, {"user": "U1", "ts": ts, "text": text})
    latest = client.conversations_history(channel=channel, latest="200.000001", inclusive=True, limit=1)
    assert [m["text"] for m in latest["messages"]] == ["second"]
    before = client.conversations_history(channel=channel, latest="200.000001", limit=10)
    assert [m["text"] for m in before["messages"]] == ["first"]


def test_files_upload_v2_goes_through_the_three_steps(slack_env: FakeSlack, tmp_path: Path) -> None:
    """What the Slack delivery does for a reply with files: post, then files_upload_v2 in the thread."""
    from bot.messages.render import Message
    from bot.post import router

    chart = tmp_path / "val_f1.png"
    chart.write_bytes(b"\x89PNG fake chart bytes")
    channel = unique("C")
    poster = router().slack
    assert poster is not None

    poster.deliver(
        {"channel": channel, "thread_ts": "123.000001"},
        Message(text="chart", files=[{"path": str(chart), "title": "val_f1 by run"}]),
        key=None,
        final=True,
        digest="d",
    )

    assert [c.method for c in slack_env.calls()] == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    [upload] = slack_env.uploads()
    assert upload["data"] == chart.read_bytes()
    assert (upload["filename"], upload["title"], upload["channel"], upload["thread_ts"]) == (
        "val_f1.png",
        "val_f1 by run",
        channel,
        "123.000001",
    )


def test_usergroup_members(slack_env: FakeSlack, client: WebClient) -> None:
    slack_env.set_usergroup("S0MLTEAM", ["U1", "U2"])
    assert client.usergroups_users_list(usergroup="S0MLTEAM")["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError):
        client.usergroups_users_list(usergroup="S0NOPE")


def test_unknown_methods_are_errors(slack_env: FakeSlack, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.scheduleMessage", json={"channel": "C1", "text": "x", "post_at": 1})
    assert caught.value.response["error"] == "unknown_method"
