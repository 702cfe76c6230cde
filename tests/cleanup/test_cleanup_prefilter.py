"""The scan asks the run index only for the runs each rule could match (one SQL query per rule), then
decides with the pure rules. Property: on any index, those queries find exactly the runs the pure rules,
run over every run, call stale; so what is proposed never depends on which side a condition is written."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from labmate.settings import CleanupRules, FilterRule
from models import run_index
from models.db import session_scope
from models.run_index import RunRecord
from tasks.cleanup.rules import DAY_MS, RunFacts, stale
from tasks.cleanup.scan import _candidates
from tasks.experiments.sync import Experiment

NOW = 1_800_000_000_000
STORE = "prop0000store000"


@st.composite
def records(draw: st.DrawFn) -> list[RunRecord]:
    found = []
    for i in range(draw(st.integers(1, 25))):
        status = draw(st.sampled_from(["RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED"]))
        start = NOW - draw(st.integers(0, 30 * DAY_MS))
        end = None if status in ("RUNNING", "SCHEDULED") else draw(st.integers(start, NOW))
        metrics = {}
        if draw(st.booleans()):
            metrics["val_f1"] = (draw(st.floats(0, 1)), 1, draw(st.integers(start, NOW)))
        found.append(RunRecord(f"{i:032x}", "1", f"run-{i}", status, draw(st.sampled_from(["ann", "bob"])), start, end,
                               metrics=metrics, params={"model": draw(st.sampled_from(["tiny", "big"]))}))
    return found


rule_sets = st.builds(
    CleanupRules,
    rules=st.lists(st.sampled_from(["failed", "orphans", "scratch", "filters"]), unique=True),
    failed_hours=st.sampled_from([0, 1, 24, 24 * 7]),
    orphan_hours=st.sampled_from([0.5, 12, 24 * 3]),
    scratch=st.booleans(),
    scratch_days=st.sampled_from([0, 1, 10]),
    filters=st.sampled_from([[], [FilterRule(filter="params.model = 'tiny'", days=2)],
                             [FilterRule(filter="metrics.val_f1 < 0.5", days=0)]]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=records(), rules=rule_sets)
def test_the_index_queries_find_exactly_what_the_rules_call_stale(migrated, runs: list[RunRecord], rules: CleanupRules) -> None:
    with session_scope() as session:
        for model in (run_index.IndexedMetric, run_index.IndexedParam, run_index.IndexedTag, run_index.IndexedRun,
                      run_index.IndexedKey):
            session.execute(delete(model))
        run_index.upsert(session, STORE, runs, now_ms=NOW, new=True)
    experiment = Experiment("1", "prop", store=STORE)
    with session_scope() as session:
        found, matches = _candidates(session, experiment, rules, NOW)
    everything = [
        RunFacts(r.run_id, r.status, r.user, r.start_time, r.end_time,
                 max((t for _v, _s, t in r.metrics.values()), default=0), bool(r.metrics), None, r.name)
        for r in runs
    ]
    expected = {f.run_id for f in everything if stale(f, rules, NOW, matches) is not None}
    assert {run_id for run_id in found if stale(RunFacts(**found[run_id]), rules, NOW, matches)} == expected
    for index, rule in enumerate(rules.filters if "filters" in rules.rules else []):  # checked by hand
        assert matches[index] == {r.run_id for r in runs if _matched(rule.filter, r) and r.start_time <= NOW - rule.days * DAY_MS}


def _matched(filter_string: str, r: RunRecord) -> bool:
    if "model" in filter_string:
        return r.params["model"] == "tiny"
    return "val_f1" in r.metrics and r.metrics["val_f1"][0] is not None and r.metrics["val_f1"][0] < 0.5
