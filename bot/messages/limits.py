"""Slack's Block Kit limits, enforced by truncation that says so."""

from __future__ import annotations

from typing import Any

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_FALLBACK_TEXT = 4000
TRUNCATED = "… (truncated)"


def cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = text[: limit - len(TRUNCATED)]
    amp = keep.rfind("&")
    if amp != -1 and ";" not in keep[amp:]:
        keep = keep[:amp]
    return keep + TRUNCATED


def _fit_text(obj: dict[str, Any], limit: int) -> None:
    if isinstance(obj.get("text"), str):
        obj["text"] = cut(obj["text"], limit)


def fit_block(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "header" and isinstance(block.get("text"), dict):
        _fit_text(block["text"], MAX_HEADER_TEXT)
    elif kind == "section":
        if isinstance(block.get("text"), dict):
            _fit_text(block["text"], MAX_SECTION_TEXT)
        if "fields" in block:
            block["fields"] = block["fields"][:MAX_FIELDS]
            for f in block["fields"]:
                _fit_text(f, MAX_FIELD_TEXT)
    elif kind == "context":
        block["elements"] = block.get("elements", [])[:MAX_CONTEXT_ELEMENTS]
        for element in block["elements"]:
            _fit_text(element, MAX_SECTION_TEXT)
    return block


def fit_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks = [fit_block(b) for b in blocks]
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    dropped = len(blocks) - (MAX_BLOCKS - 1)
    note = {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": f"… {dropped} more not shown (Slack shows at most {MAX_BLOCKS} blocks)."}],
    }
    return [*blocks[: MAX_BLOCKS - 1], note]
