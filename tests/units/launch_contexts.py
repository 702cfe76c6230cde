"""Hostile-text contexts for the launch templates (tests/units/test_render.py renders every template)."""

from __future__ import annotations

from typing import Any


def card(text: str, **kw: Any) -> dict[str, Any]:
    base = {
        "id": 12, "label": "L12", "project": "quick", "entry_point": "train", "user": "U999", "status": "running",
        "icon": ":runner:", "reason": "", "stopped_by": "", "params": [{"key": "note", "value": text}],
        "experiment": text[:60], "run_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "run_short": "0a1b2c3d",
        "run_url": "https://mlflow.example/#/experiments/1/runs/0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "when": "running for 2 min", "progress": "▰▰▰▱▱▱▱▱▱▱▱▱ 3/12 (25%)",
        "metrics": [{"key": text[:30], "value": "0.8123"}], "output": "", "position": None, "sweep": "",
        "active": True, "attempts": 1, "best": None, "files": [], "final": False,
    }
    return {**base, **kw}


def launch_contexts(text: str) -> dict[str, list[dict[str, Any]]]:
    best = {"metric": "score", "name": text[:40], "value": "0.7", "url": "https://mlflow.example/#/experiments/1/runs/x",
            "first": False, "delta": "+0.1", "better": True}
    params = [{"key": "note", "value": text, "given": True}, {"key": "lr", "value": "0.1", "given": False}]
    sweep = {
        "id": 3, "label": "S3", "project": "quick", "entry_point": "train", "user": "U999", "size": 2, "parallel": 2,
        "grid": [{"name": "note", "choices": text}], "counts": [{"status": "finished", "count": 1},
                                                                {"status": "failed", "count": 1}],
        "ended": True, "runs": [{"label": "L1", "status": "finished", "params": f"note={text}"}],
    }
    row = {"label": "L1", "status": "failed", "params": f"note={text}", "value": "0.5", "raw": 0.5,
           "run_short": "0a1b2c3d", "reason": text, "last_line": text, "stopped_by": ""}
    stopped = {**row, "status": "killed", "stopped_by": "U1", "reason": ""}
    return {
        "launch_card": [
            card(text),
            card(text, status="failed", icon=":x:", reason=text, output=text, active=False, final=True, best=best,
                 files=[{"path": "/tmp/x.png", "title": "L12 · score"}]),
            card(text, status="killed", stopped_by="U1", active=False, final=True, progress="", metrics=[], run_id="",
                 run_short="", run_url=""),
            card(text, status="queued", position=3, progress="", metrics=[], run_url="", params=[]),
            card(text, status="finished", active=False, final=True,
                 best={**best, "first": True, "delta": "", "name": "", "url": ""}),
            card(text, status="finished", active=False, final=True, best={**best, "better": False, "delta": "-0.2"}),
        ],
        "launch_queued": [{"label": "L12", "project": "quick", "entry_point": "train", "params": params},
                          {"label": "L12", "project": "quick", "entry_point": "train", "params": []}],
        "launch_dry_run": [{"project": "quick", "entry_point": "train", "experiment": text, "params": params,
                            "command": f"python quick.py --note {text}", "time_limit": "30 min"}],
        "launch_cancelled": [{"label": "L12", "project": text[:60], "was": "running", "has_run": True},
                             {"label": "L12", "project": "quick", "was": "queued", "has_run": False},
                             {"label": "L12", "project": "quick", "was": "running", "has_run": False}],
        "launch_status": [
            {"everywhere": True, "launches": [{"label": "L1", "project": "quick", "entry_point": "train", "user": "U1",
                                               "status": "running", "where": text, "when": "running for 1 min",
                                               "metric": {"key": "score", "value": "0.5"}, "channel": "C1", "sweep": "S2"}]},
            {"everywhere": False, "launches": []},
        ],
        "sweep_queued": [{"label": "S3", "project": text[:60], "entry_point": "train", "size": 4, "parallel": 2,
                          "first": "L1", "last": "L4"}],
        "sweep_dry_run": [{"project": "quick", "entry_point": "train", "size": 2, "parallel": 2,
                           "runs": [{"params": f"note={text}"}], "fixed": [{"key": "lr", "value": text}]},
                          {"project": "quick", "entry_point": "train", "size": 1, "parallel": 1,
                           "runs": [{"params": "(one run)"}], "fixed": []}],
        "sweep_card": [sweep, {**sweep, "ended": False}],
        "sweep_summary": [
            {**sweep, "metric": "score", "direction": "higher is better", "table": [row], "best": row,
             "best_params": [{"key": "note", "value": text}], "failures": [row, stopped],
             "files": [{"path": "/x", "title": "t"}]},
            {**sweep, "metric": "", "direction": "", "table": [], "best": None, "best_params": [], "failures": [],
             "files": []},
        ],
    }
