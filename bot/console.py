"""Block Kit -> readable terminal output with rich (the shell's and `labmate say`'s renderer)."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.emoji import Emoji
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

from bot.messages.mrkdwn import unescape
from bot.messages.render import Message

_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>|<([^<>|]+)>")
_STYLES = {"*": "bold", "_": "italic", "~": "strike", "`": "cyan"}
_FENCE = re.compile(r"```\n?(.*?)\n?```", re.S)
_SPAN = re.compile(r"(?<![\w*_~`])([*_~`])(?!\s|\1)(.+?)(?<!\s)\1(?![\w*_~`])")  # `***` (a mask) is no span
SLACK_EMOJI = {
    "octagonal_sign": "\U0001f6d1",
    "large_green_circle": "\U0001f7e2",
    "large_yellow_circle": "\U0001f7e1",
    "large_orange_circle": "\U0001f7e0",
    "large_red_circle": "\U0001f534",
    "large_purple_circle": "\U0001f7e3",
}
"""Slack's names for emoji that rich knows by another name (or not at all): rich's `Emoji.replace`
would leave `:octagonal_sign:` (a killed run's icon) as it is."""
_SLACK_EMOJI = re.compile(":(" + "|".join(SLACK_EMOJI) + "):")
_CONTROLS = {cp: f"\\x{cp:02x}" for cp in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if cp not in (0x09, 0x0A)}
_CONTROLS |= {cp: f"\\u{cp:04x}" for cp in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def shown_safe(source: str) -> str:
    """Text from users and stores, as the terminal may print it: escape sequences (`ESC[31m`), other
    control characters and bidirectional overrides spelled out (`\\x1b`), not acted on by the terminal.
    (rich strips a few control codes, not ESC.)"""
    return source.translate(_CONTROLS)


def _link(match: re.Match[str]) -> str:
    url, label, bare = match.groups()
    if bare:
        if bare.startswith("@"):
            return bare
        if bare.startswith("!"):
            return "@" + bare[1:].split("^")[-1].split("|")[0]
        if bare.startswith("#"):
            return bare.split("|")[0]
        return bare
    if url.startswith(("@", "#", "!")):
        return "@" + label if url.startswith("@") else "#" + label
    return f"{label} ({url})"


def mrkdwn_text(source: str) -> Text:
    """mrkdwn -> rich Text: code blocks and formatting spans styled (nested ones too, as `~*#1*~`),
    links spelled out, entities decoded."""
    plain = Emoji.replace(_SLACK_EMOJI.sub(lambda m: SLACK_EMOJI[m.group(1)], _LINK.sub(_link, shown_safe(source))))
    plain = re.sub(r"^>", "▎ ", plain, flags=re.M)
    text = Text()
    position = 0
    for fence in _FENCE.finditer(plain):
        text.append_text(_spans(plain[position : fence.start()]))
        text.append(unescape(fence.group(1)), style=_STYLES["`"])
        position = fence.end()
    text.append_text(_spans(plain[position:]))
    return text


def _spans(plain: str, style: str = "") -> Text:
    text = Text(style=style)
    position = 0
    for match in _SPAN.finditer(plain):
        text.append(unescape(plain[position : match.start()]))
        mark, inner = match.groups()
        if mark == "`":  # code: what's inside is shown as it is
            text.append(unescape(inner), style=_STYLES[mark])
        else:
            text.append_text(_spans(inner, _STYLES[mark]))
        position = match.end()
    text.append(unescape(plain[position:]))
    return text


def _element_text(element: dict[str, Any]) -> Text:
    if element.get("type") == "mrkdwn":
        return mrkdwn_text(element.get("text", ""))
    if element.get("type") == "image":
        return Text(f"[image: {shown_safe(element.get('alt_text', ''))}]", style="dim")
    return Text(unescape(shown_safe(element.get("text", ""))))


def block(block: dict[str, Any]) -> RenderableType | None:
    kind = block.get("type")
    if kind == "header":
        return Text(unescape(shown_safe(block["text"]["text"])), style="bold underline")
    if kind == "divider":
        return Rule(style="dim")
    if kind == "section":
        parts: list[RenderableType] = []
        if block.get("text"):
            parts.append(_element_text(block["text"]))
        for field in block.get("fields", []):
            parts.append(_element_text(field))
        return Group(*parts)
    if kind == "context":
        line = Text(style="dim")
        for i, element in enumerate(block.get("elements", [])):
            if i:
                line.append("  ")
            line.append_text(_element_text(element))
        return line
    if kind == "image":
        return Text(shown_safe(f"[chart: {block.get('alt_text', '')}] {block.get('image_url', '')}"), style="dim")
    if kind == "actions":
        return Text("buttons: " + " | ".join(_button(e) for e in block.get("elements", [])), style="dim")
    return None


PER_RUN = {"choose": "`delete`, `keep` or `snooze` with the run ids (`delete 1a2b3c 4d5e6f`)"}
"""Buttons that open a Slack form, and what does the same in the terminal."""


def _button(element: dict[str, Any]) -> str:
    """A button with the command that does the same here: `[Stop] → cancel L12`."""
    label = unescape(shown_safe(element.get("text", {}).get("text", "")))
    action = element.get("action_id", "")
    if not action.startswith("lab:"):
        return f"[{label}]"
    verb = action.split(":")[1]
    if verb in PER_RUN:  # a form in Slack; here, the answer verbs take run ids
        return f"[{label}] → type {PER_RUN[verb]}"
    command = shown_safe(f"{verb} {element.get('value', '')}".strip())
    return f"[{label}] → type `{command}`"


def renderable(message: Message) -> RenderableType:
    """Slack leaves space between two sections (a long list split at Slack's size limit): a blank line."""
    parts: list[RenderableType] = []
    previous = ""
    for item in message.blocks:
        shown = block(item)
        if shown is None:
            continue
        if previous == item.get("type") == "section":
            parts.append(Text(""))
        parts.append(shown)
        previous = item.get("type", "")
    if not parts:
        parts = [mrkdwn_text(message.text)]
    for item in message.files:
        parts.append(Text(f"chart saved: {item['path']}", style="green"))
    return Panel(Group(*parts), border_style="blue", expand=False)


def show(console: Console, message: Message) -> None:
    console.print(renderable(message))
