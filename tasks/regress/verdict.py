"""Comparing baseline and candidate results and applying the gate."""

from __future__ import annotations

import math
from typing import Any

from tasks.regress.runner import PASS, first_failure

NEW_FAILURE, FIX, STILL_FAILING, PASSING = "new_failure", "fix", "still_failing", "passing"
_ORDER = {NEW_FAILURE: 0, FIX: 1, STILL_FAILING: 2, None: 3, PASSING: 4}


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(pct / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def default_gate(has_baseline: bool) -> dict[str, Any]:
    return {"max_drop": 0.0} if has_baseline else {"min_pass_rate": 1.0}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    total = len(results)
    passed = sum(r["status"] == PASS for r in results)
    failed = sum(r["status"] == "fail" for r in results)
    latencies = [lat for r in results for lat in r["latencies_ms"]]
    return {
        "total": total,
        "passed": passed,
        "failed": failed,
        "errors": total - passed - failed,
        "pass_rate": passed / total if total else 0.0,
        "p95_latency_ms": percentile(latencies, 95),
    }


def classify(baseline: dict[str, Any] | None, candidate: dict[str, Any]) -> str | None:
    if baseline is None:
        return None
    base_ok, cand_ok = baseline["status"] == PASS, candidate["status"] == PASS
    if base_ok and not cand_ok:
        return NEW_FAILURE
    if not base_ok and cand_ok:
        return FIX
    return PASSING if cand_ok else STILL_FAILING


def divergence(baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any] | None:
    """The first turn where the two targets' replies (or outcomes) differ, with what failed there."""
    base_turns, cand_turns = baseline["turns"], candidate["turns"]
    for index in range(max(len(base_turns), len(cand_turns))):
        base = base_turns[index] if index < len(base_turns) else None
        cand = cand_turns[index] if index < len(cand_turns) else None
        if _turn_signature(base) != _turn_signature(cand):
            return {
                "turn": index + 1,
                "user": (cand or base or {}).get("user"),
                "baseline_reply": base and base["reply"],
                "candidate_reply": cand and cand["reply"],
                "baseline_failed": _failed_in(base),
                "candidate_failed": _failed_in(cand),
                # The failure that decides the outcome may come in a later turn than the divergence.
                "baseline_first_failure": _failure_summary(baseline),
                "candidate_first_failure": _failure_summary(candidate),
            }
    return None


def _turn_signature(turn: dict[str, Any] | None) -> Any:
    if turn is None:
        return None
    return (turn["reply"], turn["error"], tuple(e["passed"] for e in turn["expectations"]))


def _failed_in(turn: dict[str, Any] | None) -> list[str]:
    if turn is None:
        return []
    failed = [e["description"] + (f" ({e['detail']})" if e["detail"] else "") for e in turn["expectations"]
              if not e["passed"] and not e["optional"]]
    if turn["error"]:
        failed.insert(0, turn["error"])
    return failed


def build_report(
    conversations: list[dict[str, Any]],
    results: dict[str, dict[str, dict[str, Any]]],
    targets: dict[str, str],
    gate: dict[str, Any],
) -> dict[str, Any]:
    """results: role -> conversation key -> result. Returns the JSON-ready report."""
    has_baseline = "baseline" in results
    entries = []
    for conv in conversations:
        key = conv["key"]
        cand = results["candidate"][key]
        base = results["baseline"][key] if has_baseline else None
        change = classify(base, cand)
        entry: dict[str, Any] = {
            "key": key,
            "id": conv["id"],
            "suite": conv.get("suite"),
            "tags": conv["tags"],
            "file": conv.get("file"),
            "line": conv.get("line"),
            "change": change,
            "status": {**({"baseline": base["status"]} if base else {}), "candidate": cand["status"]},
            "results": {**({"baseline": base} if base else {}), "candidate": cand},
            "divergence": None,
            "failure": _failure_summary(cand),
        }
        if base is not None and change in (NEW_FAILURE, FIX, STILL_FAILING):
            entry["divergence"] = divergence(base, cand)
        entries.append(entry)
    entries.sort(key=lambda e: _ORDER[e["change"]] if has_baseline else (e["status"]["candidate"] == PASS))
    summary = {role: summarize(list(by_key.values())) for role, by_key in results.items()}
    verdict = apply_gate(gate, summary, entries, has_baseline)
    return {
        "verdict": verdict,
        "targets": targets,
        "summary": summary,
        "new_failures": [e["key"] for e in entries if e["change"] == NEW_FAILURE],
        "fixes": [e["key"] for e in entries if e["change"] == FIX],
        "conversations": entries,
    }


def _failure_summary(result: dict[str, Any]) -> dict[str, Any] | None:
    turn, expectation = first_failure(result)
    if turn is None:
        return None
    return {
        "turn": turn["index"],
        "user": turn["user"],
        "reply": turn["reply"],
        "expectation": expectation["description"] if expectation else None,
        "detail": (expectation["detail"] if expectation else turn["error"]) or None,
    }


def apply_gate(
    gate: dict[str, Any], summary: dict[str, Any], entries: list[dict[str, Any]], has_baseline: bool
) -> dict[str, Any]:
    reasons: list[str] = []
    notes: list[str] = []
    cand = summary["candidate"]
    if "min_pass_rate" in gate and cand["pass_rate"] + 1e-9 < gate["min_pass_rate"]:
        reasons.append(
            f"candidate pass rate {cand['pass_rate']:.1%} is below min_pass_rate {gate['min_pass_rate']:.1%}"
        )
    if "max_drop" in gate:
        if has_baseline:
            drop = summary["baseline"]["pass_rate"] - cand["pass_rate"]
            if drop > gate["max_drop"] + 1e-9:
                reasons.append(
                    f"pass rate dropped by {drop * 100:.1f} points (baseline {summary['baseline']['pass_rate']:.1%} -> "
                    f"candidate {cand['pass_rate']:.1%}), more than max_drop {gate['max_drop'] * 100:.1f} points"
                )
        else:
            notes.append("max_drop not checked: no baseline")
    tags = set(gate.get("no_new_failures_tagged") or [])
    if tags:
        if has_baseline:
            hit = [e for e in entries if e["change"] == NEW_FAILURE and tags & set(e["tags"])]
        else:
            hit = [e for e in entries if e["status"]["candidate"] != PASS and tags & set(e["tags"])]
            notes.append("no baseline: every failing conversation with a gated tag counts as new")
        if hit:
            reasons.append(
                f"new failures tagged {', '.join(sorted(tags))}: {', '.join(e['key'] for e in hit)}"
            )
    if "p95_latency_ms" in gate:
        if cand["p95_latency_ms"] is None:
            reasons.append("p95_latency_ms could not be checked: no turn of the candidate answered or timed out")
        elif cand["p95_latency_ms"] > gate["p95_latency_ms"]:
            reasons.append(
                f"candidate p95 latency {cand['p95_latency_ms']:.0f} ms exceeds p95_latency_ms "
                f"{gate['p95_latency_ms']:g}"
            )
    return {"passed": not reasons, "reasons": reasons, "notes": notes, "gate": gate}
