from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str)


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(to_json(report) + "\n", encoding="utf-8")
