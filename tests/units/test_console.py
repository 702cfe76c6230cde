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


def _emoji_names() -> set[str]:
    """Every `:name:` our messages use: in the templates (comments aside) and the status icons."""
    import re

    from bot.messages.render import TEMPLATES
    from tasks.cleanup import proposals
    from tasks.launches import cards as launch_cards
    from tasks.regressions import cards as regress_cards
    from tasks.watch import poll

    names: set[str] = set()
    for path in TEMPLATES.glob("*.j2"):
        source = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)
        names.update(re.findall(r":([a-z0-9_+-]+):", source))
    for icons in (launch_cards.ICONS, poll.ICONS, regress_cards.ICONS, proposals.ICONS):
        names.update(icon.strip(":") for icon in icons.values())
    return names


def test_every_emoji_our_messages_use_is_shown_as_one() -> None:
    """`cancel L3` showed a raw `:octagonal_sign:`: rich knows that emoji as `stop_sign`."""
    names = _emoji_names()
    assert {"octagonal_sign", "trophy", "hourglass_flowing_sand"} <= names
    for name in sorted(names):
        shown = mrkdwn_text(f"*L3* :{name}: stopped").plain
        assert f":{name}:" not in shown and shown.startswith("L3 ") and shown.endswith(" stopped"), (name, shown)
    assert mrkdwn_text(":octagonal_sign: :not_an_emoji:").plain == "\U0001f6d1 :not_an_emoji:"  # unknown: as typed
