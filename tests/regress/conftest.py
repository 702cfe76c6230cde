from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

AGENTS_FILE = Path(__file__).with_name("agents.py")


def agent_uri(name: str) -> str:
    return f"{AGENTS_FILE}:{name}"


@pytest.fixture
def agent() -> Callable[[str], str]:
    return agent_uri


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
