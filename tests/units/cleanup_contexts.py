"""Hostile-text contexts for the clean-up templates (tests/units/test_render.py renders each as Block Kit)."""

from __future__ import annotations

from typing import Any


def cleanup_contexts(text: str) -> dict[str, list[dict[str, Any]]]:
    run = {"name": text, "short": "3f9a2c1d", "run_id": "3f9a2c1d" * 4, "url": "https://mlflow.example/#/runs/1",
           "reason": text, "state": "pending", "icon": ":wastebasket:", "word": "", "note": "", "by": ""}
    done = {**run, "url": "", "state": "skipped", "word": "skipped", "note": text, "by": "U0ALICE"}
    proposal = {"id": 3, "label": "P3", "experiment": text, "owner": text, "recipient": "", "runs": [run, done],
                "hidden": 40, "total": 42, "pending": 1, "counts": {"waiting": 1, "skipped": 1}, "grace_days": "7",
                "snooze_days": "7", "created": "2026-11-29", "final": False}
    experiment = {"name": text, "stale": 2, "busy": 1, "orphans": 1,
                  "owners": [{"owner": text, "runs": [{"name": text, "short": "3f9a2c1d", "reason": text}], "more": 3,
                              "count": 4}],
                  "spared": [{"why": "keep", "count": 2, "said": "tagged `keep`"}]}
    return {
        "cleanup_proposal": [proposal, {**proposal, "recipient": "U0ALICE", "pending": 0, "final": True, "hidden": 0}],
        "cleanup_scan": [
            {"dry_run": True, "experiments": [experiment], "made": [], "waiting": [{"label": "P1", "experiment": text,
             "pending": 2}], "configured": [], "scanned": True},
            {"dry_run": False, "experiments": [experiment], "made": [{"label": "P2", "owner": text, "recipient": "",
             "experiment": text, "channel": "C1"}], "waiting": [], "configured": [], "scanned": True},
            {"dry_run": False, "experiments": [], "made": [], "waiting": [], "configured": [], "scanned": False},
        ],
        "cleanup_answering": [
            {"verb": "delete", "count": 2, "labels": text, "missing": [text], "already": [{"run": text, "state": text}]},
            {"verb": "restore", "count": 1, "labels": "P1", "missing": [], "already": []},
        ],
        "cleanup_answered": [
            {"verb": "delete", "done": 3, "skipped": [{"run": text, "why": text}], "decision": 9, "grace_days": "7",
             "failed": text},
            {"verb": "keep", "done": 0, "skipped": [], "decision": None, "grace_days": "7", "failed": ""},
            {"verb": "snooze", "done": 0, "skipped": [], "decision": None, "grace_days": "7", "failed": ""},
        ],
    }
