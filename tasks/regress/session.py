"""One regression run: suites + targets + gate -> jobs -> report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.regress.errors import NoCandidate, RegressError, SuiteError
from tasks.regress.execution import Job, OnResult, run_jobs
from tasks.regress.suite import Suite, load_suite, validate_gate
from tasks.regress.verdict import build_report, default_gate


@dataclass
class Plan:
    conversations: list[dict[str, Any]]
    targets: dict[str, str]
    gate: dict[str, Any]
    options_by_key: dict[str, dict[str, Any]] = field(default_factory=dict)

    suite_options: list[dict[str, Any]] = field(default_factory=list)
    """Each suite's own options, before the caller's (a worker adds its tracking URI)."""

    def digest(self) -> str:
        """The conversations and the suites' options, whatever files they came from (a suite and its
        includes): a regression run from chat checks each chunk runs the suite it was asked to."""
        # not the file's path: the bot names it as the suites listing shows it, the workers resolved
        conversations = [{k: v for k, v in conv.items() if k != "file"} for conv in self.conversations]
        content = json.dumps([conversations, self.suite_options], sort_keys=True, default=str)
        return hashlib.sha256(content.encode()).hexdigest()

    def jobs(self) -> list[Job]:
        return [
            (role, conv, uri, self.options_by_key[conv["key"]])
            for conv in self.conversations
            for role, uri in self.targets.items()
        ]


def _strictest(gates: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for gate in gates:
        for key, value in gate.items():
            if key not in merged:
                merged[key] = list(value) if isinstance(value, list) else value
            elif key == "min_pass_rate":
                merged[key] = max(merged[key], value)
            elif key in ("max_drop", "p95_latency_ms"):
                merged[key] = min(merged[key], value)
            else:
                merged[key] = sorted(set(merged[key]) | set(value))
    return merged


def plan(
    suite_paths: list[str],
    candidate: str | None = None,
    baseline: str | None = None,
    tags: list[str] | None = None,
    gate: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    within: list[Path] | None = None,
) -> Plan:
    """`within`: the folders the suites' included files must be in (chat); None: anywhere (the CLI)."""
    if not suite_paths:
        raise SuiteError("no suite given")
    suites: list[Suite] = [load_suite(path, within) for path in suite_paths]
    targets = {
        "baseline": baseline or _agreed(suites, "baseline"),
        "candidate": candidate or _agreed(suites, "candidate"),
    }
    if not targets["candidate"]:
        raise NoCandidate("no candidate target: pass --candidate or set targets.candidate in the suite")
    if not targets["baseline"]:
        del targets["baseline"]
    known_tags = set().union(*(suite.tags for suite in suites))
    try:
        merged_gate = _strictest([suite.gate for suite in suites])
        if gate:
            merged_gate.update(validate_gate(gate, known_tags))
    except ValueError as exc:
        raise RegressError(str(exc)) from None
    if not merged_gate:
        merged_gate = default_gate("baseline" in targets)
    conversations: list[dict[str, Any]] = []
    options_by_key: dict[str, dict[str, Any]] = {}
    for suite in suites:
        for conv in suite.select(tags):
            key = f"{suite.name}/{conv['id']}" if len(suites) > 1 else conv["id"]
            if key in options_by_key:
                raise SuiteError(f"two suites are both named {suite.name!r}; rename one ('suite:' key)", suite.path)
            conversations.append({**conv, "suite": suite.name, "key": key})
            options_by_key[key] = {**suite.options, **(options or {})}
    if not conversations:
        raise SuiteError(f"no conversation is tagged {', '.join(tags or [])}; tags: {', '.join(sorted(known_tags))}")
    return Plan(conversations, targets, merged_gate, options_by_key, [suite.options for suite in suites])


def _agreed(suites: list[Suite], role: str) -> str | None:
    named = {suite.targets[role] for suite in suites if role in suite.targets}
    if len(named) > 1:
        raise RegressError(f"the suites name different {role} targets ({', '.join(sorted(named))}); pass --{role}")
    return named.pop() if named else None


def execute(run_plan: Plan, workers: int = 1, on_result: OnResult | None = None) -> dict[str, Any]:
    results: dict[str, dict[str, dict[str, Any]]] = {role: {} for role in run_plan.targets}
    for role, result in run_jobs(run_plan.jobs(), workers, on_result):
        results[role][result["conversation_key"]] = result
    return build_report(run_plan.conversations, results, run_plan.targets, run_plan.gate)
