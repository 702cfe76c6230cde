"""Running one conversation against one target: the independent unit of work.

`run_conversation` takes and returns plain values only, so a Celery task (or a process pool
worker) can call it unchanged. `run_batch` runs many in one supervised thread (see timeouts.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from jinja2 import TemplateError

from tasks.regress.expectations import Observation, check, describe, render_spec, shown
from tasks.regress.targets import AgentOutputError, load_target, normalize_output
from tasks.regress.templating import render
from tasks.regress.timeouts import TurnTimeout, Watch, supervise

DEFAULT_TIMEOUT_S = 10.0
PASS, FAIL, ERROR = "pass", "fail", "error"
Job = tuple[dict[str, Any], str, dict[str, Any]]  # (conversation, target uri, options)


def run_conversation(
    conversation: dict[str, Any], target: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run a parsed conversation (a dict from `load_suite`) against a target URI.

    options: timeout (seconds per turn), reply_path / intent_path / headers (HTTP targets),
    tracking_uri (MLflow). Loading errors raise TargetLoadError; everything the agent does wrong
    (raise, hang, odd output) ends up in the result with status "error".
    """
    return run_batch([(conversation, target, options or {})])[0]


def run_suite_conversation(
    suite_path: str, conversation_id: str, target: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Same as run_conversation, addressed by suite file and conversation id."""
    from tasks.regress.suite import load_suite

    suite = load_suite(suite_path)
    for conversation in suite.conversations:
        if conversation["id"] == conversation_id:
            return run_conversation(conversation, target, {**suite.options, **(options or {})})
    raise KeyError(f"no conversation {conversation_id!r} in {suite_path}")


def run_batch(
    jobs: list[Job], on_result: Callable[[int, dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Run jobs in order; a turn that overruns its timeout errors that conversation only."""
    agents = {(uri, repr(sorted(opts.items()))): load_target(uri, opts) for _, uri, opts in jobs}
    results: list[dict[str, Any]] = [{} for _ in jobs]
    next_index = 0

    def emit(index: int, result: dict[str, Any]) -> None:
        results[index] = result
        if on_result:
            on_result(index, result)

    while next_index < len(jobs):
        watch = Watch()

        def work(watch: Watch, start: int = next_index) -> None:
            for index in range(start, len(jobs)):
                conversation, uri, opts = jobs[index]
                agent = agents[(uri, repr(sorted(opts.items())))]
                watch.context = {"index": index, "turns": [], "started": time.perf_counter()}
                result = _run_conversation(conversation, uri, agent, opts, watch)
                if watch.abandoned:
                    return
                emit(index, result)

        try:
            supervise(work, watch)
            next_index = len(jobs)
        except TurnTimeout as exc:
            context = watch.context
            conversation, uri, _ = jobs[context["index"]]
            emit(context["index"], _timeout_result(conversation, uri, context, str(exc)))
            next_index = context["index"] + 1
    return results


def _timeout_result(conversation: dict[str, Any], target: str, context: dict[str, Any], message: str) -> dict[str, Any]:
    turns = [dict(turn) for turn in context["turns"]]
    timeout = turns[-1]["timeout"] if turns else None
    if turns:
        turns[-1]["error"] = f"turn {turns[-1]['index']}: timeout: {message}"
        turns[-1]["latency_ms"] = timeout * 1000 if timeout else None
    for turn in turns:
        turn.pop("timeout", None)
    return {
        "conversation_id": conversation["id"],
        "target": target,
        "status": ERROR,
        "error": turns[-1]["error"] if turns else f"timeout: {message}",
        "score": 0.0,
        "runs": context.get("run", 0) + 1,
        "passed_runs": context.get("passed_runs", 0),
        "turns": turns,
        # The turn that timed out took at least its timeout: a p95 gate must see it.
        "latencies_ms": [turn["latency_ms"] for turn in turns if turn["latency_ms"] is not None],
        "duration_ms": (time.perf_counter() - context["started"]) * 1000,
    }


def _run_conversation(
    conversation: dict[str, Any], target: str, agent: Any, options: dict[str, Any], watch: Watch
) -> dict[str, Any]:
    timeout = options.get("timeout", DEFAULT_TIMEOUT_S)
    started = time.perf_counter()
    runs = []
    for run in range(conversation.get("repeat", 1)):
        watch.context.update(run=run, passed_runs=sum(r["status"] == PASS for r in runs))
        runs.append(_run_once(conversation, agent, timeout, watch))
    passed_runs = sum(run["status"] == PASS for run in runs)
    rate = passed_runs / len(runs)
    if rate + 1e-9 >= conversation.get("pass_rate", 1.0) and passed_runs:
        status, shown = PASS, runs[0]
    else:
        shown = next(run for run in runs if run["status"] != PASS)
        status = shown["status"]
    return {
        "conversation_id": conversation["id"],
        "target": target,
        "status": status,
        "error": shown["error"],
        "score": shown["score"],
        "runs": len(runs),
        "passed_runs": passed_runs,
        "turns": shown["turns"],
        "latencies_ms": [turn["latency_ms"] for run in runs for turn in run["turns"] if turn["latency_ms"] is not None],
        "duration_ms": (time.perf_counter() - started) * 1000,
    }


def _run_once(conversation: dict[str, Any], agent: Any, timeout: float | None, watch: Watch) -> dict[str, Any]:
    variables = dict(conversation.get("vars") or {})
    messages: list[dict[str, str]] = []
    turns: list[dict[str, Any]] = []
    watch.context["turns"] = turns
    total_weight = passed_weight = 0.0
    error: str | None = None
    for index, turn in enumerate(conversation["turns"], start=1):
        record: dict[str, Any] = {
            "index": index,
            "user": turn["user"],
            "reply": None,
            "intent": None,
            "latency_ms": None,
            "expectations": [],
            "error": None,
            "timeout": timeout,
        }
        turns.append(record)
        try:
            record["user"] = render(turn["user"], variables)
        except TemplateError as exc:
            error = record["error"] = f"turn {index}: template error in user message: {exc}"
            break
        messages.append({"role": "user", "content": record["user"]})
        try:
            raw, elapsed = watch.call(agent, list(messages), timeout)
            output = normalize_output(raw)
        except AgentOutputError as exc:
            error = record["error"] = f"turn {index}: bad output: {exc}"
            break
        except Exception as exc:  # an agent failing is a result, not a crash
            error = record["error"] = f"turn {index}: agent raised {type(exc).__name__}: {exc}"
            break
        record["reply"], record["intent"] = output.reply, output.intent
        record["latency_ms"] = elapsed * 1000
        obs = Observation(output.reply, output.intent, elapsed * 1000, output.data)
        for spec in turn["expect"]:
            try:
                spec = render_spec(spec, variables)
                ok, detail = check(spec, obs)
            except TemplateError as exc:
                ok, detail = False, f"template error: {exc}"
            record["expectations"].append(
                {
                    "description": describe(spec),
                    "type": spec["type"],
                    "passed": ok,
                    "optional": spec["optional"],
                    "weight": spec["weight"],
                    "detail": detail,
                }
            )
            if not spec["optional"]:
                total_weight += spec["weight"]
                passed_weight += spec["weight"] if ok else 0.0
        captured_all = _capture(turn.get("capture") or {}, output.reply, variables, record)
        messages.append({"role": "assistant", "content": output.reply})
        if not captured_all:
            break
    for record in turns:
        record.pop("timeout", None)
    score = passed_weight / total_weight if total_weight else 1.0
    if error is not None:
        status = ERROR
    elif any(not e["passed"] and e["type"] == "capture" for t in turns for e in t["expectations"]):
        status = FAIL
    else:
        status = PASS if score + 1e-9 >= conversation.get("min_score", 1.0) else FAIL
    return {"status": status, "error": error, "score": score, "turns": turns}


def _capture(capture: dict[str, str], reply: str, variables: dict[str, Any], record: dict[str, Any]) -> bool:
    for name, pattern in capture.items():
        match = re.search(pattern, reply)
        if match is None:
            record["expectations"].append(
                {
                    "description": f"capture {name} by {shown(pattern)}",
                    "type": "capture",
                    "passed": False,
                    "optional": False,
                    "weight": 0.0,
                    "detail": "no match; later turns need this variable",
                }
            )
            return False
        groups = match.groupdict()
        if name in groups:
            variables[name] = groups[name]
        elif match.re.groups:
            variables[name] = match.group(1)
        else:
            variables[name] = match.group(0)
    return True


def first_failure(result: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The first turn that failed or errored, and the first required expectation that failed in it."""
    for turn in result["turns"]:
        if turn["error"]:
            return turn, None
        for expectation in turn["expectations"]:
            if not expectation["passed"] and not expectation["optional"]:
                return turn, expectation
    return None, None
