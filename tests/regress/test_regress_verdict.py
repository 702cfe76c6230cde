from __future__ import annotations

import pytest

from tasks.regress.session import execute, plan
from tasks.regress.verdict import apply_gate, percentile


def _result(status, replies=("a",), latencies=(10.0,), failed_turn=None):
    turns = []
    for index, reply in enumerate(replies, start=1):
        passed = not (failed_turn == index)
        turns.append({"index": index, "user": f"u{index}", "reply": reply, "intent": None, "latency_ms": 1.0,
                      "error": None, "expectations": [{"description": "contains 'x'", "type": "contains",
                                                       "passed": passed, "optional": False, "weight": 1.0,
                                                       "detail": ""}]})
    return {"status": status, "error": None, "score": 1.0, "runs": 1, "passed_runs": int(status == "pass"),
            "turns": turns, "latencies_ms": list(latencies), "duration_ms": 1.0}


def test_percentile_nearest_rank():
    assert percentile([], 95) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(v) for v in range(1, 101)], 95) == 95.0
    assert percentile([1.0, 2.0, 3.0, 100.0], 50) == 2.0


SHOP = """
    suite: shop
    targets:
      baseline: {base}
      candidate: {cand}
    {gate}
    conversations:
      - id: price
        tags: [p0]
        turns:
          - user: hello
          - user: What is the price?
            expect: [{{contains: "49 USD"}}]
      - id: refund
        tags: [p1]
        turns: [{{user: refund please, expect: [{{icontains: "30 days"}}]}}]
      - id: order
        tags: [p1]
        turns: [{{user: order, expect: [{{contains: "A-1234"}}]}}]
"""


def _report(write_suite, agent, suite_gate="", **overrides):
    path = write_suite(SHOP.format(base=agent("deterministic"), cand=agent("deterministic_v2"), gate=suite_gate))
    return execute(plan([str(path)], **overrides))


def test_new_failures_and_fixes_come_first_with_divergence(write_suite, agent):
    report = _report(write_suite, agent)
    assert report["new_failures"] == ["price"]
    assert report["fixes"] == ["refund"]
    assert [e["key"] for e in report["conversations"]] == ["price", "refund", "order"]
    div = report["conversations"][0]["divergence"]
    assert div["turn"] == 2  # turn 1 replies are identical
    assert div["baseline_reply"] == "The Pro plan costs 49 USD per month."
    assert div["candidate_reply"] == "The Pro plan costs 59 USD per month."
    assert div["candidate_failed"] == ["contains '49 USD'"]
    assert report["conversations"][2]["divergence"] is None
    assert report["summary"]["baseline"]["pass_rate"] == pytest.approx(2 / 3)
    # default gate with a baseline: no drop in pass rate (one new failure, one fix -> equal)
    assert report["verdict"] == {"passed": True, "reasons": [], "notes": [], "gate": {"max_drop": 0.0}}


def test_gate_tag_rule_from_the_suite(write_suite, agent):
    report = _report(write_suite, agent, suite_gate="gate: {no_new_failures_tagged: [p0]}")
    assert report["verdict"]["passed"] is False
    assert report["verdict"]["reasons"] == ["new failures tagged p0: price"]


def test_command_line_gate_overrides(write_suite, agent):
    report = _report(write_suite, agent, suite_gate="gate: {min_pass_rate: 0.5}", gate={"min_pass_rate": 0.9})
    assert report["verdict"]["reasons"] == ["candidate pass rate 66.7% is below min_pass_rate 90.0%"]


def test_single_target_run(write_suite, agent):
    report = _report(write_suite, agent, suite_gate="gate: {max_drop: 0.1}", baseline=None,
                     candidate=agent("deterministic"))
    # No baseline given on the command line, so the suite's is used.
    assert set(report["targets"]) == {"baseline", "candidate"}
    path = write_suite("conversations: [{id: a, tags: [p0], turns: [{user: x, expect: [{equals: y}]}]}]",
                       name="solo.yaml")
    report = execute(plan([str(path)], candidate=agent("echo"), gate={"no_new_failures_tagged": ["p0"]}))
    assert set(report["targets"]) == {"candidate"}
    assert report["conversations"][0]["change"] is None
    assert report["verdict"]["reasons"] == ["new failures tagged p0: a"]


def test_gate_rules_directly():
    summary = {"baseline": {"pass_rate": 0.9, "p95_latency_ms": 10.0},
               "candidate": {"pass_rate": 0.8, "p95_latency_ms": 300.0}}
    entries = [{"key": "x", "tags": ["p0"], "change": "new_failure", "status": {"candidate": "fail"}}]
    verdict = apply_gate({"max_drop": 0.05, "p95_latency_ms": 200, "min_pass_rate": 0.8}, summary, entries, True)
    assert verdict["reasons"] == [
        # points, not percent: 90% -> 80% is a drop of 10 points (11% of the baseline)
        "pass rate dropped by 10.0 points (baseline 90.0% -> candidate 80.0%), more than max_drop 5.0 points",
        "candidate p95 latency 300 ms exceeds p95_latency_ms 200",
    ]
    assert apply_gate({"max_drop": 0.1, "p95_latency_ms": 300}, summary, entries, True)["passed"] is True
    no_base = apply_gate({"max_drop": 0.0}, summary, entries, False)
    assert no_base["passed"] and no_base["notes"] == ["max_drop not checked: no baseline"]
    unanswered = {"candidate": {"pass_rate": 0.0, "p95_latency_ms": None}}
    assert apply_gate({"p95_latency_ms": 500}, unanswered, [], False)["reasons"] == [
        "p95_latency_ms could not be checked: no turn of the candidate answered or timed out"
    ]


def test_errors_count_as_not_passing(write_suite, agent):
    path = write_suite("conversations: [{id: a, turns: [{user: x}]}, {id: b, turns: [{user: y}]}]")
    report = execute(plan([str(path)], candidate=agent("raising"), baseline=agent("echo")))
    assert report["summary"]["candidate"]["errors"] == 2
    assert report["new_failures"] == ["a", "b"]
    assert report["verdict"]["reasons"][0].startswith("pass rate dropped by 100.0 points")
    assert report["conversations"][0]["divergence"]["candidate_failed"] == [
        "turn 1: agent raised RuntimeError: agent exploded"
    ]


def test_helpers_build_rows():
    from tasks.regress.verdict import classify, divergence

    assert classify(None, _result("pass")) is None
    assert classify(_result("pass"), _result("error")) == "new_failure"
    assert classify(_result("fail"), _result("fail")) == "still_failing"
    same = divergence(_result("pass", replies=("a", "b")), _result("fail", replies=("a", "b"), failed_turn=2))
    assert same["turn"] == 2 and same["candidate_failed"] == ["contains 'x'"]
