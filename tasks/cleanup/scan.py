"""The clean-up scan of one experiment, on the run index: bring the index up to date (an incremental
sync), ask it for the runs each rule could match and for the runs that protect others, decide with the
pure rules (rules.py), and mark the orphans FAILED. Reads only what the rules and protections name,
never every run; MLflow is asked only for the registered model versions and for a team filter the
index can't evaluate."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labmate.errors import UsageError
from labmate.settings import CleanupRules
from models import cleanup as proposals
from models import run_index, stale_runs
from models.base import utcnow
from models.db import session_scope
from models.errors import Conflict, Unavailable
from tasks.cleanup.rules import DAY_MS, HOUR_MS, Protection, RunFacts, Stale, choose, top_k
from tasks.experiments import resolve, summary
from tasks.experiments.sync import Experiment, ensure_fresh
from tasks.mlflow_io import cleanup as mlflow_cleanup

log = logging.getLogger(__name__)

KINDS = {"metric": "metrics", "parameter": "params", "tag": "tags", "attribute": "attributes"}
INDEX_OPS = ("=", "!=", "<", "<=", ">", ">=", "LIKE")
ATTRIBUTES = {"status", "run_name", "run_id", "user_id", "start_time", "end_time"}


@dataclass
class ScanResult:
    experiment: Experiment
    stale: list[Stale] = field(default_factory=list)
    spared: dict[str, str] = field(default_factory=dict)
    """Stale runs never proposed -> why (keep, decision, model, top, parent)."""
    busy: int = 0
    """Stale runs already in an open proposal, or snoozed."""
    orphans: list[str] = field(default_factory=list)
    """RUNNING runs to mark FAILED (once proposed)."""
    read: int = 0
    """Runs the scan read from the index (what the rules pre-selected), of all the experiment's."""


def fingerprint(status: str, end_time: int | None, last_ts: int) -> str:
    """The run as the rules saw it: a run that logs, ends or changes status since is no longer the one proposed."""
    return f"{status}|{end_time or 0}|{last_ts}"


def index_clauses(filter_string: str) -> list[run_index.Clause] | None:
    """A team filter as run-index clauses, parsed by MLflow's own parser; None when the index can't
    evaluate it (IN, ILIKE, an attribute it doesn't keep): then MLflow's search runs it."""
    try:
        parsed = mlflow_cleanup.parse_filter(filter_string)
    except Exception as exc:
        raise UsageError(f"The clean-up filter `{filter_string}` in labmate.toml isn't an MLflow filter: {exc}") from None
    clauses = []
    for part in parsed:
        kind = KINDS.get(str(part.get("type")))
        op = str(part.get("comparator", "")).upper()
        key, value = str(part.get("key")), part.get("value")
        if kind is None or op not in INDEX_OPS or isinstance(value, list | tuple):
            return None
        if kind == "attributes" and key not in ATTRIBUTES:
            return None
        numeric = kind == "params" and op in ("<", "<=", ">", ">=") and _is_number(str(value))
        if kind == "params" and op in ("<", "<=", ">", ">=") and not numeric:
            return None
        clauses.append(run_index.Clause(kind, key, op, str(value), numeric))
    return clauses


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _candidates(session: Any, experiment: Experiment, rules: CleanupRules, now_ms: int) -> tuple[dict[str, dict[str, Any]], dict[int, set[str]]]:
    store, eid = experiment.store, experiment.experiment_id
    found: dict[str, dict[str, Any]] = {}
    on = set(rules.rules)
    if "failed" in on:
        for row in stale_runs.failed_without_metrics(session, store, eid, ended_before=int(now_ms - rules.failed_hours * HOUR_MS)):
            found[row["run_id"]] = row
    if "orphans" in on:
        for row in stale_runs.silent_running(session, store, eid, silent_since=int(now_ms - rules.orphan_hours * HOUR_MS)):
            found[row["run_id"]] = row
    if "scratch" in on and rules.scratch:
        for row in stale_runs.finished_before(session, store, eid, ended_before=int(now_ms - rules.scratch_days * DAY_MS)):
            found[row["run_id"]] = row
    matches: dict[int, set[str]] = {}
    if "filters" in on:
        for index, rule in enumerate(rules.filters):
            started_before = int(now_ms - rule.days * DAY_MS)
            clauses = index_clauses(rule.filter)
            if clauses is not None:
                rows = stale_runs.matching(session, store, eid, clauses, started_before=started_before)
            else:
                ids = mlflow_cleanup.filter_run_ids(eid, rule.filter)
                rows = [
                    row for row in stale_runs.matching(session, store, eid, [], started_before=started_before)
                    if row["run_id"] in ids
                ] if ids else []
            matches[index] = {row["run_id"] for row in rows}
            for row in rows:
                found[row["run_id"]] = row
    return found, matches


def _decision_runs(session: Any, store: str, refs: Sequence[str]) -> set[str]:
    found = set()
    for ref in refs:
        ref = ref.lower()
        if len(ref) == 32:
            found.add(ref)
        elif len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref):
            found.update(r.run_id for r in run_index.runs_by_prefix(session, store, ref, limit=20))
    return found


def _top(session: Any, experiment: Experiment, k: int) -> set[str]:
    if k <= 0:
        return set()
    keys = run_index.metric_keys(session, experiment.store, experiment.experiment_id)
    if not keys:
        return set()
    metric = summary.primary_metric(experiment, keys)
    ascending = resolve.direction(experiment, metric, None).ascending
    ranked = run_index.top_runs(
        session, experiment.store, experiment_id=experiment.experiment_id, metric=metric, limit=k,
        ascending=ascending, exclude_failed=False,
    )
    values = {row.run_id: value for row, value in ranked}
    return set(top_k(values, k, ascending=ascending, start_times={row.run_id: row.start_time for row, _ in ranked}))


def scan(experiment: Experiment, rules: CleanupRules, *, now_ms: int | None = None, sync: bool = True) -> ScanResult:
    """What to propose in this experiment now (reads only: `mark_orphans` acts once proposals hold them)."""
    now_ms = now_ms if now_ms is not None else int(utcnow().timestamp() * 1000)
    if sync:
        ensure_fresh(experiment)
    registered = mlflow_cleanup.registered_run_ids()
    with session_scope() as session:
        found, matches = _candidates(session, experiment, rules, now_ms)
        store = experiment.store
        keep = stale_runs.kept(session, store, experiment.experiment_id)
        decided = _decision_runs(session, store, stale_runs.decision_run_refs(session))
        top = _top(session, experiment, rules.top_k)
        parents = stale_runs.parents_of(session, store, keep | decided | registered | top)
        busy = proposals.excluded(session, store=store, now=utcnow())
    protection = Protection(frozenset(keep), frozenset(decided), frozenset(registered), frozenset(top), parents)
    _activity(experiment, found, now_ms)
    facts = [RunFacts(**row) for row in found.values()]
    chosen, spared = choose(facts, rules, protection, now_ms, matches)
    result = ScanResult(experiment, spared=spared, read=len(found))
    for item in chosen:
        if item.run.run_id in busy:
            result.busy += 1
            continue
        result.stale.append(item)
    result.orphans = [s.run.run_id for s in result.stale if s.orphan]
    return result


IGNORED_TAGS = ("mlflow.note.content", mlflow_cleanup.CLEANUP_NOTE_TAG)


def _digest(record: Any) -> str:
    shown = {"p": sorted(record.params.items()),
             "t": sorted((k, v) for k, v in record.tags.items() if k not in IGNORED_TAGS)}
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()


def _activity(experiment: Experiment, found: dict[str, dict[str, Any]], now_ms: int) -> None:
    """The running runs the index calls silent, as MLflow has them now: their newest metric, and since when
    their parameters and tags are as they are (a few runs, read by id)."""
    running = [run_id for run_id, row in found.items() if row["status"] == "RUNNING"]
    if not running:
        return
    records = mlflow_cleanup.current(running)
    seen = {}
    for run_id in running:
        record = records.get(run_id)
        if record is None or record.deleted or record.status != "RUNNING":
            found.pop(run_id)  # gone, or ended since the index saw it: not an orphan
            continue
        logged = max([record.start_time, *(t for _v, _s, t in record.metrics.values())])
        seen[run_id] = (_digest(record), logged)
    with session_scope(write=True) as session:
        since = proposals.activity_since(session, store=experiment.store, seen=seen, now_ms=now_ms)
    for run_id, at in since.items():
        found[run_id]["last_activity"] = max(found[run_id]["last_activity"], at)


def mark_orphans(store: str, candidates: list[tuple[int, str, str]]) -> None:
    """Orphans (RUNNING, silent past the threshold) are marked FAILED with a note once a proposal holds
    them (the database lets one scan's proposal hold a run, so two scans never mark one run twice); then
    the index and the proposal get the run as MLflow now has it. `candidates`: (candidate id, run id, reason)."""
    if not candidates:
        return
    for _cid, run_id, reason in candidates:
        mlflow_cleanup.mark_failed(run_id, f"Marked FAILED by labmate's clean-up: {reason}.")
    now = mlflow_cleanup.current([run_id for _c, run_id, _r in candidates])
    try:
        with session_scope(write=True) as session:
            run_index.upsert(session, store, list(now.values()), now_ms=int(utcnow().timestamp() * 1000))
    except (Conflict, Unavailable) as exc:  # the next sync writes the same
        log.info("could not index the orphans marked FAILED now: %s", exc)
    with session_scope() as session:
        for cid, run_id, reason in candidates:
            record = now.get(run_id)
            if record is None:
                continue
            last_ts = max((t for _v, _s, t in record.metrics.values()), default=0)
            proposals.refresh_candidate(session, candidate_id=cid, reason=f"{reason}; marked FAILED",
                                        fingerprint=fingerprint(record.status, record.end_time, last_ts))
