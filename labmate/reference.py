"""The README's command and configuration references, generated from the grammar and the settings.

`python -m labmate.reference --write README.md` refreshes them; a test fails when they drift.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

COMMANDS = ("<!-- commands:start -->", "<!-- commands:end -->")
SETTINGS = ("<!-- settings:start -->", "<!-- settings:end -->")


def commands_markdown() -> str:
    from msgspec.structs import fields

    from bot.grammar import VERBS
    from labmate.settings import Settings

    command = next(field.default for field in fields(Settings) if field.name == "command")
    lines = ["| command | what it does | example |", "|---|---|---|"]
    for verb in VERBS:
        usage = f"`{command} {verb.usage}`".replace("|", "\\|")
        example = f"`{command} {verb.examples[0]}`".replace("|", "\\|") if verb.examples else ""
        lines.append(f"| {usage} | {verb.summary} | {example} |")
    return "\n".join(lines)


def settings_markdown() -> str:
    from labmate.settings import ENVIRONMENT_ONLY, describe

    lines = ["| environment variable | labmate.toml key | default | meaning |", "|---|---|---|---|"]
    for row in describe():
        default = row["default"]
        shown = "" if default in (None, "", {}, []) or not isinstance(default, (str, int, float)) else f"`{default}`"
        if row["field"] == "access":
            shown = "everyone reads and decides"
        if row.get("shown_default"):
            shown = row["shown_default"]
        if row["field"] == "projects":
            shown = "the demo's `sales-agent`"
        env = f"`{row['env']}`" if row["env"] else ""
        key = "(environment only)" if row["field"] in ENVIRONMENT_ONLY else f"`{row['field']}`"
        lines.append(f"| {env} | {key} | {shown} | {row['description']} |")
    return "\n".join(lines)


def _replace(text: str, markers: tuple[str, str], body: str) -> str:
    pattern = re.compile(re.escape(markers[0]) + r".*?" + re.escape(markers[1]), re.S)
    return pattern.sub(lambda _: f"{markers[0]}\n{body}\n{markers[1]}", text)


def refreshed(readme: str) -> str:
    return _replace(_replace(readme, COMMANDS, commands_markdown()), SETTINGS, settings_markdown())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = Path(sys.argv[2])
        path.write_text(refreshed(path.read_text()))
    else:
        print(commands_markdown())
        print()
        print(settings_markdown())
