"""Block Kit mrkdwn as the terminal shows it: styles instead of Slack's markers."""

from __future__ import annotations

import pytest

from bot.console import mrkdwn_text


def _styled(source: str) -> tuple[str, list[tuple[str, str]]]:
    text = mrkdwn_text(source)
    return text.plain, [(text.plain[s.start : s.end], str(s.style)) for s in text.spans]


@pytest.mark.parametrize(
    ("source", "plain", "spans"),
    [
        ("a *bold* and _it_", "a bold and it", [("bold", "bold"), ("it", "italic")]),
        ("~*#1*~ superseded by *#2*", "#1 superseded by #2", [("#1", "strike"), ("#1", "bold"), ("#2", "bold")]),
        ("run:\n```python train.py --epochs=3```", "run:\npython train.py --epochs=3",
         [("python train.py --epochs=3", "cyan")]),
        ("`a*b*c` &lt;@U1&gt;", "a*b*c <@U1>", [("a*b*c", "cyan")]),  # code keeps its stars; entities decoded
        ("<https://mlflow/x|the run> by <@U1>", "the run (https://mlflow/x) by @U1", []),
        ("at https://bot:***@git.example.com failed", "at https://bot:***@git.example.com failed", []),
    ],
)
def test_mrkdwn_markers_become_styles(source: str, plain: str, spans: list[tuple[str, str]]) -> None:
    assert _styled(source) == (plain, spans)


def test_consecutive_sections_are_apart_as_in_slack() -> None:
    """The help list is split into sections at Slack's size limit; the terminal showed the split as
    two commands on adjacent lines where every other pair had a blank line between them."""
    from rich.console import Console

    from bot.console import renderable
    from bot.messages.render import Message

    def section(text: str) -> dict[str, object]:
        return {"type": "section", "text": {"type": "mrkdwn", "text": text}}

    message = Message(text="", blocks=[section("one"), section("two"),
                                       {"type": "context", "elements": [{"type": "mrkdwn", "text": "note"}]}])
    console = Console(width=40, record=True)
    console.print(renderable(message))
    lines = [line.strip("│ ") for line in console.export_text().splitlines()[1:-1]]
    assert lines == ["one", "", "two", "note"]
