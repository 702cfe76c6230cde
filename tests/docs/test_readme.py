import re
from pathlib import Path

from bot.grammar import VERBS
from bot.messages.render import render
from labmate.reference import refreshed

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_references_match_the_grammar_and_settings():
    assert README == refreshed(README), "run: python -m labmate.reference --write README.md"


def test_readme_lists_exactly_the_verbs_help_lists():
    from bot.dispatch import _help
    from bot.grammar import HelpArgs

    reply = _help(HelpArgs(None), None, None)  # type: ignore[arg-type]
    help_text = "\n".join(b["text"]["text"] for b in render(reply.template, reply.context).blocks if b["type"] == "section")
    in_help = set(re.findall(r"`/lab (\w+)", help_text))
    table = README.split("<!-- commands:start -->")[1].split("<!-- commands:end -->")[0]
    in_readme = set(re.findall(r"^\| `/lab (\w+)", table, re.M))
    assert in_help == in_readme == {v.name for v in VERBS}


def test_readme_opens_with_the_two_setup_commands():
    commands = re.findall(r"```bash\n(.+?)\n```", README, re.S)[:2]
    assert "labmate shell" in commands[0] and "pip install -e ." in commands[0]
    assert "pytest" in commands[1] and ".[dev]" in commands[1]
    assert README.index(commands[1]) < README.index("## What labmate does")
