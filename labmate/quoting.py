"""Names as they must be typed: shared by the grammar (which reads them) and the jobs (which
suggest them), so every suggestion parses back to the same name."""

from __future__ import annotations

QUOTES = {'"': '"”“', "'": "'’‘", "“": "”“\"", "”": "”“\"", "‘": "’‘'", "’": "’‘'", "«": "»", "„": "“”\""}
"""Opening quote -> the characters that close it (Slack clients mix straight and curly quotes)."""
TAG_MARKS = ("#", "＃")
MAX_MODEL_VERSION = 2**31 - 1
"""The largest registered model version that can be typed (`model:x/3`, `models:/x/3`): MLflow's SQL
stores keep a version in an integer column, and a larger number fails inside the store (SQLite:
OverflowError) instead of answering 'not found'."""


def quote(name: str) -> str:
    """A name as it must be typed to parse as one word: quoted when it has spaces or quotes."""
    if name and not any(ch.isspace() for ch in name) and name[0] not in QUOTES and name[0] not in TAG_MARKS:
        return name
    if '"' not in name:
        return f'"{name}"'
    if "'" not in name:
        return f"'{name}'"
    return f"“{name}”"
