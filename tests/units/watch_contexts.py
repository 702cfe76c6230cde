"""Hostile-text contexts for the watch, digest and Home templates (tests/units/test_render.py renders every template)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

URL = "https://mlflow.example/#/experiments/1/runs/0a1b2c3d4e5f60718293a4b5c6d7e8f9"
WHEN = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def notice(text: str, **kw: Any) -> dict[str, Any]:
    base = {
        "run_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "short": "0a1b2c3d", "name": text[:80], "status": "failed",
        "icon": ":x:", "user": text[:40], "experiment": text[:60], "url": URL, "took": "3 min",
        "metrics": [{"key": text[:30], "value": "0.8123"}], "primary": "val_f1", "primary_value": 0.8, "error": text,
    }  # fmt: skip
    return {**base, **kw}


def best(text: str, **kw: Any) -> dict[str, Any]:
    base = {
        "run_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "name": text[:80], "user": text[:40], "experiment": text[:60],
        "url": URL, "metric": text[:30], "value": "0.91", "direction": "higher is better", "previous": text[:40],
        "previous_url": URL, "previous_value": "0.88", "delta": "+0.03",
    }  # fmt: skip
    return {**base, **kw}


def watch_contexts(text: str) -> dict[str, list[dict[str, Any]]]:
    top = {"metric": text[:30], "direction": "lower is better", "name": text[:40], "value": "0.1", "url": URL,
           "user": text[:20]}  # fmt: skip
    digest = {
        "since": WHEN, "until": WHEN, "quiet": False, "note": text,
        "experiments": [{"experiment": text[:60], "url": URL, "started": 3, "finished": 2, "failed": 1, "killed": 1}],
        "more_experiments": 2, "totals": {"started": 3, "finished": 2, "failed": 1, "killed": 1},
        "bests": [{"experiment": text[:60], "name": text[:40], "url": URL, "metric": text[:30], "value": "0.9",
                   "previous": text[:40], "previous_url": URL, "previous_value": "0.8", "delta": "+0.1", "first": False},
                  {"experiment": "e", "name": "n", "url": "", "metric": "m", "value": "1", "previous": text[:40],
                   "previous_url": "", "previous_value": "0.5", "delta": "+0.5", "first": False},
                  {"experiment": "e", "name": "n", "url": "", "metric": "m", "value": "1", "previous": "",
                   "previous_url": "", "previous_value": "", "delta": "", "first": True}],
        "more_bests": 3,
        "launches": {"total": 2, "sweeps": 1, "counts": [{"status": "finished", "count": 2}]},
        "decisions": [{"id": 4, "text": text, "author": "U1"}], "decision_count": 1,
        "cleanup": [{"owner": text[:20], "runs": 3, "experiment": text[:40]}],
        "files": [{"path": "/tmp/digest.png", "title": "runs ended per experiment"}],
    }  # fmt: skip
    home = {
        "user": "U1", "command": "/lab", "updated": WHEN,
        "launches": [{"label": "L1", "project": text[:40], "entry_point": "train", "status": "queued",
                      "where": "#1 in the queue", "when": "queued for 2 min"}],
        "decisions": [{"id": 3, "text": text, "author": "U1", "when": WHEN, "superseded": True},
                      {"id": 4, "text": text, "author": "U2", "when": WHEN, "superseded": False}],
        "bests": [{"experiment": text[:60], "best": top}, {"experiment": text[:60], "best": None}],
        "cleanup": [{"label": "P3", "runs": 2, "experiment": text[:40]}], "snooze_days": "7",
    }  # fmt: skip
    return {
        "watch_added": [
            {"experiment": text[:60], "experiment_url": URL, "channel": "C1", "here": True, "new": True, "since": WHEN,
             "best": top, "indexing": False, "unwatch": f"unwatch {text[:60]}", "terminal": False, "recent": "runs x since:1d"},
            {"experiment": text[:60], "experiment_url": "", "channel": "#ml-runs", "here": False, "new": False,
             "since": WHEN, "best": None, "indexing": True, "unwatch": f"unwatch {text[:60]} #ml-runs", "terminal": True,
             "recent": f"runs {text[:60]} since:1d"},
            {"experiment": text[:60], "experiment_url": "", "channel": "C1", "here": True, "new": True, "since": WHEN,
             "best": None, "indexing": False, "unwatch": "unwatch x", "terminal": True, "recent": f"runs {text[:60]} since:1d"},
        ],
        "watch_list": [{"watches": [{"experiment": text[:60], "by": "U1"}]}, {"watches": []}],
        "watch_removed": [{"experiment": text[:60], "channel": "C1", "here": True},
                          {"experiment": text[:60], "channel": "#x", "here": False}],
        "watch_notice": [
            notice(text),
            notice(text, status="killed", icon=":octagonal_sign:", error=None, url=""),
            notice(text, status="finished", icon=":white_check_mark:", error=None, metrics=[]),
        ],
        "watch_best": [best(text), best(text, url="", previous_url="", user="")],
        "watch_group": [
            {"experiment": text[:60], "total": 12, "counts": [{"status": "finished", "count": 11},
                                                                {"status": "failed", "count": 1}],
             "runs": [notice(text), notice(text, error=None, url=""), notice(text, status="finished", error=None)],
             "more": 9, "best": best(text)},
            {"experiment": text[:60], "total": 6, "counts": [{"status": "finished", "count": 6}],
             "runs": [notice(text, status="finished", error=None, metrics=[])], "more": 0, "best": None},
        ],
        "digest": [digest, {**digest, "quiet": True, "experiments": [], "bests": [], "files": []},
                   {**digest, "bests": [], "cleanup": [], "decisions": [], "decision_count": 0, "files": [],
                    "launches": {"total": 0, "sweeps": 0, "counts": []}, "note": ""}],
        "digest_not_in_channel": [{"channel": text[:40]}],
        "home": [home, {**home, "launches": [], "decisions": [], "bests": [], "cleanup": []}],
    }
