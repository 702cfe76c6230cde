"""One renderer for every message: a Jinja2 template -> Block Kit JSON.

Templates write Block Kit as JSON. Every `{{ expression }}` is escaped for mrkdwn and for a
JSON string by the environment's finalize hook, so user, database and MLflow text can't
inject mentions, links or break the JSON; only values wrapped in `Mrkdwn` (built by `link`,
`user` and `code`) pass through as markup. User text inside formatting (`*…*`) could close it:
show it outside, or as inline code with `| code`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined
from jinja2.bccache import Bucket
from msgspec import Struct

from bot.messages import limits
from bot.messages.mrkdwn import CODE_TICK, Mrkdwn, channel, code, escape, link, user

TEMPLATES = Path(__file__).resolve().parent / "templates"


class Message(Struct):
    text: str
    blocks: list[dict[str, Any]] = []
    template: str = ""
    files: list[dict[str, str]] = []

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}


class BlockJSON(str):
    """A Block Kit element our own code built as JSON (a button): written into the template as it is."""


def button(label: str, verb: str, args: Any, index: int = 0, style: str | None = None) -> BlockJSON:
    """A button that is a typed command: clicking it runs `<verb> <args>` as the clicker
    (bot/listeners/actions.py). Templates use it as `{{ button("Stop", "cancel", label) }}`."""
    if not verb.isalpha() or not verb.islower():
        raise ValueError(f"a button's verb is a command name, not {verb!r}")
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": limits.cut(str(label), 75)},
        "action_id": f"lab:{verb}:{int(index)}",
        "value": limits.cut(str(args), 2000),
    }
    if style in ("primary", "danger"):
        element["style"] = style
    return BlockJSON(json.dumps(element))


def _finalize(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, BlockJSON):
        return str(value)
    if isinstance(value, Mrkdwn):
        return json.dumps(str(value))[1:-1]
    return json.dumps(escape(value))[1:-1]


def _when(value: datetime) -> str:
    """Naive values are UTC already (SQLite keeps no zone); aware ones are converted."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}" + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")


class _BestEffortBytecodeCache(FileSystemBytecodeCache):
    """Compiled templates on disk (Jinja's per-user temp directory, keyed by the source's checksum):
    a terminal process renders one or two templates, and compiling one cost it 28 ms. A cache that
    can't be written (a full or read-only disk) is no cache: a reply must not fail for it."""

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _bytecode_cache() -> FileSystemBytecodeCache | None:
    try:
        return _BestEffortBytecodeCache()
    except (OSError, RuntimeError):  # no safe per-user temp directory
        return None


def _in_bold(value: object) -> str:
    """User text shown inside `*…*`: its own `*` would close the bold (shown as ∗, U+2217) and a line
    break would end it (shown as a space)."""
    return " ".join(str(value).replace("*", "\u2217").split())


def _in_strike(value: object) -> str:
    """User text shown inside `~…~`: its own `~` would end the strikethrough early (shown as ∼, U+223C)."""
    return " ".join(str(value).replace("~", "\u223c").split())


def _in_pre(value: object) -> str:
    """Text inside a ``` block: its own backticks could close the block early (shown as ˋ)."""
    return str(value).replace("`", CODE_TICK)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        bytecode_cache=_bytecode_cache(),
        undefined=StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        number=_number,
        plural=_plural,
        cut=limits.cut,
        link=lambda label, url: link(url, label),
        user=user,
        channel=channel,
        code=code,
        in_bold=_in_bold,
        in_pre=_in_pre,
        in_strike=_in_strike,
        mrkdwn=lambda v: Mrkdwn(v),
    )
    env.globals["block_button"] = button
    return env


NOTES = "_notes"
"""A context key any message may carry: what it must also say (a job delayed), shown under it. It
travels in the context, so a reply rendered later by a worker says it too."""


def render(template: str, context: dict[str, Any]) -> Message:
    raw = environment().get_template(f"{template}.json.j2").render(**context)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"template {template} produced invalid JSON: {exc}") from exc
    blocks = limits.fit_blocks(data.get("blocks", []))
    text = limits.cut(data.get("text", ""), limits.MAX_FALLBACK_TEXT)
    message = Message(text=text, blocks=blocks, template=template, files=list(context.get("files", [])))
    return with_notes(message, context[NOTES]) if context.get(NOTES) else message


_rendered: OrderedDict[str, Message] = OrderedDict()
RENDERED_CACHE_SIZE = 512


def render_reply(reply: Any) -> Message:
    """A Reply's message. Replies with a `cache_key` (help, "working on it" acks) are rendered once
    and kept in a small LRU: their keys can hold user text, so the cache must not grow unbounded.
    The cache is keyed by template too, and never used for a reply with notes: what a reply says
    after its enqueue (an error, a delay) is never served from the cache, nor cached."""
    if reply.notes:
        return render(reply.template, {**reply.context, NOTES: reply.notes})
    if reply.cache_key is None:
        return render(reply.template, reply.context)
    key = f"{reply.template}\0{reply.cache_key}"
    message = _rendered.get(key)
    if message is None:
        message = _rendered[key] = render(reply.template, reply.context)
        if len(_rendered) > RENDERED_CACHE_SIZE:
            _rendered.popitem(last=False)
    else:
        _rendered.move_to_end(key)
    return message


def with_notes(message: Message, notes: list[str]) -> Message:
    extra = [{"type": "context", "elements": [{"type": "mrkdwn", "text": ":hourglass: " + escape(note)}]} for note in notes]
    text = " ".join([message.text, *map(escape, notes)])
    blocks = limits.fit_blocks([*message.blocks, *extra])
    return Message(text=limits.cut(text, limits.MAX_FALLBACK_TEXT), blocks=blocks, template=message.template, files=message.files)
