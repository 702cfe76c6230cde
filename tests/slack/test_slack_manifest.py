"""slack/manifest.yml declares exactly what the code registers and calls: command, shortcut, events, scopes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "slack" / "manifest.yml"
BOT = REPO / "bot"

HISTORY = {"channels:history", "groups:history", "im:history", "mpim:history"}
# Web API methods the bot calls -> the bot scopes they need (none for auth.test, views.open, chat.getPermalink).
METHOD_SCOPES: dict[str, set[str]] = {
    "auth_test": set(),
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "chat_getPermalink": set(),
    "conversations_history": HISTORY,
    "conversations_replies": HISTORY,
    "views_open": set(),
    "views_publish": set(),
    "files_upload_v2": {"files:write"},
    "usergroups_users_list": {"usergroups:read"},
    "reactions_get": {"reactions:read"},
    "users_info": {"users:read"},
}
EVENT_SCOPES: dict[str, set[str]] = {
    "app_mention": {"app_mentions:read"},
    "app_home_opened": set(),
    "reaction_added": {"reactions:read"},
    "reaction_removed": {"reactions:read"},
    "message.channels": {"channels:history"},
    "link_shared": {"links:read"},
}
CLIENT_CALL = re.compile(r"\bclient\.([a-z]+_[A-Za-z_0-9]+)\(")
EVENT = re.compile(r"\bapp\.event\(\s*[\"']([a-z_.]+)[\"']")
SHORTCUT = re.compile(r"\bapp\.shortcut\(")
COMMAND = re.compile(r"\bapp\.command\(")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))


def _sources() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(BOT.rglob("*.py")))


def used_methods() -> set[str]:
    return set(CLIENT_CALL.findall(_sources()))


def used_events() -> set[str]:
    return set(EVENT.findall(_sources()))


def test_the_scan_finds_what_the_code_does() -> None:
    """Guard against a scan that finds nothing (and so would pass against any manifest)."""
    assert {"chat_postMessage", "views_open", "conversations_history", "files_upload_v2"} <= used_methods()
    assert {"app_mention", "reaction_added", "reaction_removed"} <= used_events()
    assert len(COMMAND.findall(_sources())) == 1
    assert len(SHORTCUT.findall(_sources())) == 1


def test_every_method_the_bot_calls_has_known_scopes() -> None:
    unknown = used_methods() - set(METHOD_SCOPES)
    assert not unknown, f"add the scopes these Web API methods need to METHOD_SCOPES and the manifest: {unknown}"
    unknown_events = used_events() - set(EVENT_SCOPES)
    assert not unknown_events, f"add these events' scopes to EVENT_SCOPES: {unknown_events}"


def test_scopes_are_exactly_what_the_code_needs(manifest: dict[str, Any]) -> None:
    needed = {"commands"}  # slash commands and shortcuts
    for method in used_methods():
        needed |= METHOD_SCOPES[method]
    for event in used_events():
        needed |= EVENT_SCOPES[event]
    declared = manifest["oauth_config"]["scopes"]["bot"]
    assert len(declared) == len(set(declared))
    assert set(declared) == needed


def test_the_slash_command_is_the_default_command(manifest: dict[str, Any]) -> None:
    from bot.server import EVENTS_PATH
    from labmate.settings import Settings

    commands = manifest["features"]["slash_commands"]
    assert [c["command"] for c in commands] == [Settings().command] == ["/lab"]
    [command] = commands
    assert command["url"].startswith("https://") and command["url"].endswith(EVENTS_PATH)
    # The listener unescapes &amp; &lt; &gt; and nothing else: only right with should_escape false.
    assert command["should_escape"] is False
    assert "unescape(body.get(\"text\"" in (BOT / "listeners" / "commands.py").read_text(encoding="utf-8")


def test_the_message_shortcut(manifest: dict[str, Any]) -> None:
    from bot.listeners.shortcuts import SHORTCUT_ID

    shortcuts = manifest["features"]["shortcuts"]
    assert [(s["type"], s["callback_id"]) for s in shortcuts] == [("message", SHORTCUT_ID)] == [("message", "log_decision")]
    assert all(s["name"] and s["description"] for s in shortcuts)


def test_bot_events_are_exactly_the_registered_ones(manifest: dict[str, Any]) -> None:
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert len(events) == len(set(events))
    assert set(events) == used_events() == {"app_home_opened", "app_mention", "reaction_added", "reaction_removed"}


def test_requests_come_over_http_to_the_events_path(manifest: dict[str, Any]) -> None:
    from bot.server import EVENTS_PATH

    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is False
    assert settings["interactivity"]["is_enabled"] is True
    for url in (settings["interactivity"]["request_url"], settings["event_subscriptions"]["request_url"]):
        assert url.startswith("https://") and url.endswith(EVENTS_PATH)
    assert manifest["features"]["bot_user"]["display_name"]
    assert manifest["display_information"]["name"] == "labmate"
