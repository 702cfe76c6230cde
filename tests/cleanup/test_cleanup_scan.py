"""The scan on a real MLflow store through the run index: every rule finds its run, every protection
spares its run, a dry run changes nothing, and a real scan marks the orphan FAILED with a note."""

from __future__ import annotations

from labmate.settings import get_settings
from models import cleanup as proposals
from models.db import session_scope
from tasks.cleanup.proposals import make
from tasks.cleanup.scan import scan
from tasks.experiments import resolve
from tests.cleanup.conftest import SPARED, STALE


def names(lab, ids) -> set[str]:
    by_id = {v: k for k, v in lab.runs.items()}
    return {by_id[i] for i in ids}


def test_each_rule_finds_its_run_and_each_protection_spares_its_run(lab) -> None:
    experiment = resolve.experiment("sales-agent")
    result = scan(experiment, get_settings().cleanup.rules_for("sales-agent"))
    assert names(lab, [s.run.run_id for s in result.stale]) == STALE
    assert {names(lab, [r]).pop(): why for r, why in result.spared.items()} == SPARED
    rules = {s.run.name: s.rule for s in result.stale}
    assert rules == {"died-early": "failed", "died-early-2": "failed", "zombie": "orphans", "old-finished": "scratch",
                     "tiny-fresh": "filters"}
    reasons = {s.run.name: s.reason for s in result.stale}
    assert reasons["died-early-2"].startswith("KILLED ") and reasons["died-early-2"].endswith(" ago before logging any metric")
    assert reasons["tiny-fresh"] == "matches the team's rule `tiny models`"
    assert lab.client.get_run(lab.runs["zombie"]).info.status == "RUNNING"  # a scan alone changes nothing
    with session_scope() as session:
        assert proposals.open_proposals(session) == []


def test_orphans_are_marked_failed_with_a_note_once_proposed(lab) -> None:
    experiment = resolve.experiment("sales-agent")
    result = scan(experiment, get_settings().cleanup.rules_for("sales-agent"))
    make(result, created_by="alice", asked_from={"source": "shell", "session": "s", "user": "alice"})
    zombie = lab.client.get_run(lab.runs["zombie"])
    assert zombie.info.status == "FAILED"
    assert "Marked FAILED by labmate's clean-up: RUNNING but nothing logged for 30 h" in zombie.data.tags["mlflow.note.content"]
    with session_scope() as session:
        [candidate] = [c for c in session.query(proposals.Candidate).all() if c.run_name == "zombie"]
        assert candidate.reason.endswith("; marked FAILED") and candidate.fingerprint.startswith("FAILED|")


def test_rules_switched_off_find_nothing(lab, tmp_path) -> None:
    (tmp_path / "labmate.toml").write_text("[cleanup.defaults]\nrules = []\n")
    from labmate.settings import reset_settings

    reset_settings()
    result = scan(resolve.experiment("sales-agent"), get_settings().cleanup.rules_for("sales-agent"))
    assert result.stale == [] and result.spared == {}


def test_a_new_tag_or_parameter_on_a_running_run_counts_as_activity(lab) -> None:
    experiment = resolve.experiment("sales-agent")
    rules = get_settings().cleanup.rules_for("sales-agent")
    assert "zombie" in {s.run.name for s in scan(experiment, rules).stale}  # silent in metrics for 30 h
    lab.client.set_tag(lab.runs["zombie"], "phase", "evaluating")  # no metric, but it is alive
    for _ in range(2):  # seen changing now: silent for 0 h, then still less than 12 h
        assert "zombie" not in {s.run.name for s in scan(experiment, rules).stale}
    lab.client.log_param(lab.runs["alive"], "late", "1")
    assert {s.run.name for s in scan(experiment, rules).stale} == STALE - {"zombie"}


def test_a_filter_the_index_cant_evaluate_goes_to_mlflow_and_a_bad_one_is_named(lab, tmp_path) -> None:
    from labmate.errors import UsageError
    from labmate.settings import reset_settings
    from tasks.cleanup.scan import index_clauses

    assert index_clauses("params.model = 'tiny' and metrics.val_f1 < 0.5") is not None
    assert index_clauses("params.model ILIKE 'TINY'") is None  # case-insensitive: MLflow's search runs it
    toml = (tmp_path / "labmate.toml").read_text().replace("params.model = 'tiny'", "params.model ILIKE 'TINY'")
    (tmp_path / "labmate.toml").write_text(toml)
    reset_settings()
    experiment = resolve.experiment("sales-agent")
    found = {s.run.name: s.reason for s in scan(experiment, get_settings().cleanup.rules_for("sales-agent")).stale}
    assert found["tiny-fresh"] == "matches the team's rule `tiny models`"
    (tmp_path / "labmate.toml").write_text(toml.replace("params.model ILIKE 'TINY'", "params.model === tiny"))
    reset_settings()
    try:
        scan(experiment, get_settings().cleanup.rules_for("sales-agent"))
    except UsageError as exc:
        assert exc.message.startswith("The clean-up filter `params.model === tiny` in labmate.toml isn't an MLflow filter")
    else:
        raise AssertionError("a bad filter must be named")
