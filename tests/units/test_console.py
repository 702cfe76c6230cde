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


def test_every_button_tells_the_terminal_a_command_that_exists() -> None:
    """A button is a typed command; one that opens a Slack form ("Choose per run") has no command of its
    name, and the terminal said `choose P1`, which it then refused as unknown."""
    import json
    import re
    from pathlib import Path

    from bot import grammar
    from bot.console import PER_RUN, block
    from bot.messages.render import button

    templates = Path(grammar.__file__).resolve().parents[1] / "messages" / "templates"
    verbs = {v for t in templates.glob("*.j2") for v in re.findall(r'button\("[^"]*", "(\w+)"', t.read_text())}
    assert {"cancel", "promote", "delete", "choose"} <= verbs
    known = {verb.name for verb in grammar.VERBS}
    assert {v for v in verbs if v not in known} == set(PER_RUN)
    elements = [json.loads(button("Choose per run", "choose", "P1", 3)), json.loads(button("Delete", "delete", "P1"))]
    shown = block({"type": "actions", "elements": elements})
    assert shown.plain == ("buttons: [Choose per run] → type `delete`, `keep` or `snooze` with the run ids "
                           "(`delete 1a2b3c 4d5e6f`) | [Delete] → type `delete P1`")
    assert grammar.parse("delete 1a2b3c 4d5e6f").verb == "delete"


def test_escape_sequences_and_bidi_overrides_from_stored_text_are_spelled_out_not_acted_on() -> None:
    """A decision logged as `decide ansi \\x1b[31mRED` coloured (or, with other sequences, rewrote) the
    terminal of whoever listed decisions; a right-to-left override reversed what followed it."""
    from rich.console import Console

    from bot.console import renderable
    from bot.messages.render import Message

    hostile = "ansi \x1b[31mRED\x1b[0m \x9b2J \u202eevil &lt;b&gt;"
    message = Message(text="", blocks=[
        {"type": "header", "text": {"type": "plain_text", "text": hostile}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"#12 {hostile}"}},
        {"type": "context", "elements": [{"type": "plain_text", "text": hostile}]},
    ])
    console = Console(record=True, width=200, color_system=None, force_terminal=False)
    console.print(renderable(message))
    out = console.export_text()
    assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out
    assert out.count("ansi \\x1b[31mRED\\x1b[0m \\x9b2J \\u202eevil <b>") == 3, out  # entities decoded, plain_text too
