"""Which runs are stale, and which runs are never proposed whatever the rules say. Pure: plain values in
and out, no I/O, so the property test can throw any combination of runs and rules at it.

The scan (tasks/cleanup/scan.py) asks the run index only for the runs each rule could match, then
decides with these functions, so what the SQL pre-filter finds and what is proposed can't disagree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from labmate.settings import CleanupRules

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
FAILED_STATUSES = ("FAILED", "KILLED")
RUNNING_STATUSES = ("RUNNING",)

KEEP = "keep"
DECISION = "decision"
MODEL = "model"
TOP = "top"
PARENT = "parent"


@dataclass(frozen=True)
class RunFacts:
    """What the rules look at, from the run index."""

    run_id: str
    status: str
    user: str = ""
    start_time: int = 0
    end_time: int | None = None
    last_activity: int = 0
    """The newest of its start and its latest metric, parameter or tag change (ms)."""
    has_metrics: bool = False
    parent_run_id: str | None = None
    name: str = ""


@dataclass(frozen=True)
class Stale:
    run: RunFacts
    rule: str
    reason: str
    orphan: bool = False
    """Still RUNNING: to be marked FAILED (with a note) before it is proposed."""


@dataclass(frozen=True)
class Protection:
    """The runs never proposed, by why; `parents` (run -> parent) lets their ancestors be found."""

    keep: frozenset[str] = frozenset()
    decisions: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    top: frozenset[str] = frozenset()
    parents: Mapping[str, str | None] = field(default_factory=dict)


def _ago(ms: int) -> str:
    hours = ms / HOUR_MS
    if hours < 48:
        return f"{hours:.0f} h"
    return f"{hours / 24:.0f} days"


def stale(run: RunFacts, rules: CleanupRules, now_ms: int, filter_matches: Mapping[int, Collection[str]] = {}) -> Stale | None:
    """The first rule that finds `run` stale, with why in words; None if none does."""
    on = set(rules.rules)
    ended = run.end_time or run.start_time
    if "failed" in on and run.status in FAILED_STATUSES and not run.has_metrics and ended <= now_ms - rules.failed_hours * HOUR_MS:
        return Stale(run, "failed", f"{run.status} {_ago(now_ms - ended)} ago before logging any metric")
    silent = max(run.start_time, run.last_activity)
    if "orphans" in on and run.status in RUNNING_STATUSES and silent <= now_ms - rules.orphan_hours * HOUR_MS:
        return Stale(run, "orphans", f"RUNNING but nothing logged for {_ago(now_ms - silent)}: its process is gone",
                     orphan=True)
    if "scratch" in on and rules.scratch and run.status == "FINISHED" and run.end_time is not None \
            and run.end_time <= now_ms - rules.scratch_days * DAY_MS:
        return Stale(run, "scratch", f"finished {_ago(now_ms - run.end_time)} ago in a scratch experiment")
    if "filters" in on:
        for index, rule in enumerate(rules.filters):
            if run.run_id in filter_matches.get(index, ()) and run.start_time <= now_ms - rule.days * DAY_MS:
                return Stale(run, "filters", f"matches the team's rule `{rule.name or rule.filter}`")
    return None


def top_k(values: Mapping[str, float], k: int, *, ascending: bool, start_times: Mapping[str, int] = {}) -> frozenset[str]:
    """The k best runs by their metric value (ties: the earlier run first)."""
    if k <= 0:
        return frozenset()
    ranked = sorted(values, key=lambda r: (values[r] if ascending else -values[r], start_times.get(r, 0), r))
    return frozenset(ranked[:k])


def protected(protection: Protection) -> dict[str, str]:
    """Every protected run -> why: kept, linked by a decision, behind a model version, among the top K,
    or the parent (at any depth) of one of those."""
    why: dict[str, str] = {}
    for reason, ids in ((KEEP, protection.keep), (DECISION, protection.decisions), (MODEL, protection.models),
                        (TOP, protection.top)):
        for run_id in ids:
            why.setdefault(run_id, reason)
    for run_id in list(why):
        parent = protection.parents.get(run_id)
        seen = {run_id}
        while parent and parent not in seen:
            seen.add(parent)
            why.setdefault(parent, PARENT)
            parent = protection.parents.get(parent)
    return why


def choose(
    runs: Iterable[RunFacts],
    rules: CleanupRules,
    protection: Protection,
    now_ms: int,
    filter_matches: Mapping[int, Collection[str]] = {},
) -> tuple[list[Stale], dict[str, str]]:
    """(the stale runs to propose, the stale runs spared -> why)."""
    shield = protected(protection)
    chosen: list[Stale] = []
    spared: dict[str, str] = {}
    for run in runs:
        found = stale(run, rules, now_ms, filter_matches)
        if found is None:
            continue
        if run.run_id in shield:
            spared[run.run_id] = shield[run.run_id]
            continue
        chosen.append(found)
    return chosen, spared
