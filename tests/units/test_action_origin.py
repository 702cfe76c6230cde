"""Where a button's answer goes: the clicker only, in the channel; a Home tab button has no channel."""

from __future__ import annotations

from bot.listeners.actions import origin_of

ACTION = {"action_id": "lab:keep:0", "value": "P3", "action_ts": "1.2"}


def test_a_button_in_a_channel_answers_the_clicker_ephemerally_there() -> None:
    body = {"user": {"id": "U1"}, "channel": {"id": "C1"}, "container": {"type": "message", "message_ts": "9.9"},
            "response_url": "https://hooks.slack.test/r"}  # fmt: skip
    reply_to = origin_of(body, ACTION).reply_to()
    assert (reply_to["channel"], reply_to.get("ephemeral")) == ("C1", True)


def test_a_home_tab_button_answers_the_clicker_in_a_dm() -> None:
    body = {"user": {"id": "U1"}, "container": {"type": "view", "view_id": "V1"}, "view": {"type": "home"}}
    reply_to = origin_of(body, ACTION).reply_to()
    assert reply_to["channel"] == "U1" and "ephemeral" not in reply_to
