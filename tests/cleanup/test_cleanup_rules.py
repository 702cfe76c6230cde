"""The rules and the protections, pure. The property: whatever runs, rules, thresholds and team filters,
no protected run (kept, linked by a decision, behind a model version, among the top K, or a parent at any
depth of one of those) is ever proposed; and every run proposed is stale by the rule it names."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from labmate.settings import CleanupRules, FilterRule, load_settings
from tasks.cleanup.rules import (
    DAY_MS,
    HOUR_MS,
    PARENT,
    Protection,
    RunFacts,
    choose,
    protected,
    stale,
    top_k,
)

NOW = 1_800_000_000_000
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED")


@st.composite
def stores(draw: st.DrawFn) -> tuple[list[RunFacts], dict[str, float]]:
    count = draw(st.integers(1, 40))
    ids = [f"{i:032x}" for i in range(count)]
    runs: list[RunFacts] = []
    values: dict[str, float] = {}
    for i, run_id in enumerate(ids):
        start = NOW - draw(st.integers(0, 60 * DAY_MS))
        ended = draw(st.one_of(st.none(), st.integers(start, NOW)))
        parent = draw(st.one_of(st.none(), st.sampled_from(ids[:i]) if i else st.none()))
        metrics = draw(st.booleans())
        runs.append(RunFacts(run_id, draw(st.sampled_from(STATUSES)), draw(st.sampled_from(["ann", "bob", ""])),
                             start, ended, draw(st.integers(start, NOW)) if metrics else start, metrics, parent))
        if metrics:
            values[run_id] = draw(st.floats(-10, 10, allow_nan=False))
    return runs, values


rule_sets = st.builds(
    CleanupRules,
    rules=st.lists(st.sampled_from(["failed", "orphans", "scratch", "filters"]), unique=True),
    failed_hours=st.floats(0, 100),
    orphan_hours=st.floats(0.1, 100),
    scratch=st.booleans(),
    scratch_days=st.floats(0, 30),
    filters=st.lists(st.builds(FilterRule, filter=st.just("metrics.x < 1"), days=st.floats(0, 30)), max_size=3),
    top_k=st.integers(0, 5),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(store=stores(), rules=rule_sets, data=st.data())
def test_no_rule_combination_proposes_a_protected_run(store, rules: CleanupRules, data: st.DataObject) -> None:
    runs, values = store
    ids = [r.run_id for r in runs]
    subset = st.frozensets(st.sampled_from(ids))
    matches = {i: data.draw(subset) for i in range(len(rules.filters))}
    ascending = data.draw(st.booleans())
    protection = Protection(
        keep=data.draw(subset), decisions=data.draw(subset), models=data.draw(subset),
        top=top_k(values, rules.top_k, ascending=ascending, start_times={r.run_id: r.start_time for r in runs}),
        parents={r.run_id: r.parent_run_id for r in runs},
    )
    chosen, spared = choose(runs, rules, protection, NOW, matches)

    proposed = {s.run.run_id for s in chosen}
    shielded = set(protection.keep | protection.decisions | protection.models | protection.top)
    ancestors = set()
    by_id = {r.run_id: r for r in runs}
    for run_id in shielded:
        parent = by_id[run_id].parent_run_id
        while parent:
            ancestors.add(parent)
            parent = by_id[parent].parent_run_id
    assert not proposed & (shielded | ancestors)
    assert len(protection.top) == min(rules.top_k, len(values))
    if protection.top:
        worst_kept = max(values[r] for r in protection.top) if ascending else min(values[r] for r in protection.top)
        outside = [v for r, v in values.items() if r not in protection.top]
        assert all((v >= worst_kept) if ascending else (v <= worst_kept) for v in outside)
    for s in chosen:  # every proposal is stale by the rule it names, and no run is proposed twice
        assert s.rule in rules.rules
        assert stale(s.run, rules, NOW, matches) == s
    assert len(proposed) == len(chosen)
    assert set(spared) <= shielded | ancestors


def test_each_rule_with_its_threshold() -> None:
    rules = CleanupRules(failed_hours=2, orphan_hours=5, scratch=True, scratch_days=3,
                         filters=[FilterRule(filter="params.model = 'tiny'", days=1, name="tiny models")])
    failed = RunFacts("a" * 32, "FAILED", start_time=NOW - 4 * HOUR_MS, end_time=NOW - 3 * HOUR_MS)
    assert stale(failed, rules, NOW).reason == "FAILED 3 h ago before logging any metric"
    assert stale(RunFacts("a" * 32, "FAILED", start_time=NOW - HOUR_MS, end_time=NOW - HOUR_MS), rules, NOW) is None
    assert stale(RunFacts("a" * 32, "KILLED", end_time=NOW - 9 * HOUR_MS, has_metrics=True), rules, NOW) is None
    orphan = stale(RunFacts("b" * 32, "RUNNING", start_time=NOW - 9 * HOUR_MS, last_activity=NOW - 6 * HOUR_MS), rules, NOW)
    assert orphan.orphan and orphan.reason == "RUNNING but nothing logged for 6 h: its process is gone"
    assert stale(RunFacts("b" * 32, "RUNNING", start_time=NOW - 9 * HOUR_MS, last_activity=NOW - HOUR_MS), rules, NOW) is None
    old = RunFacts("c" * 32, "FINISHED", start_time=NOW - 5 * DAY_MS, end_time=NOW - 4 * DAY_MS, has_metrics=True)
    assert stale(old, rules, NOW).reason == "finished 4 days ago in a scratch experiment"
    assert stale(old, replace(rules, scratch=False), NOW) is None
    assert stale(old, replace(rules, scratch=False), NOW, {0: {old.run_id}}).reason == \
        "matches the team's rule `tiny models`"
    young = RunFacts("d" * 32, "FINISHED", start_time=NOW - HOUR_MS, end_time=NOW, has_metrics=True)
    assert stale(young, rules, NOW, {0: {young.run_id}}) is None  # not a day old yet
    assert stale(failed, replace(rules, rules=["orphans"]), NOW) is None


def test_parents_of_protected_runs_are_protected_at_any_depth() -> None:
    parents = {"c": "b", "b": "a", "a": None, "x": "a"}
    assert protected(Protection(keep=frozenset({"c"}), parents=parents)) == {"c": "keep", "b": PARENT, "a": PARENT}
    assert protected(Protection(parents={"a": "b", "b": "a"}, top=frozenset({"a"}))) == {"a": "top", "b": PARENT}


def test_per_experiment_rules_override_only_what_they_set(tmp_path) -> None:
    toml = tmp_path / "labmate.toml"
    toml.write_text("[cleanup.defaults]\nfailed_hours = 6\ntop_k = 5\n"
                    "[cleanup.experiments.scratchpad]\nscratch = true\ntop_k = 1\n")
    config = load_settings(environ={}, path=toml).cleanup
    mine = config.rules_for("scratchpad")
    assert (mine.failed_hours, mine.top_k, mine.scratch) == (6, 1, True)
    assert config.rules_for("other") == config.defaults
