"""The configuration file a bench's processes read: LABMATE_CONFIG must name a file that exists."""

from __future__ import annotations

from pathlib import Path


def empty_config(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
    return path
