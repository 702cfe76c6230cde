"""Loading and validating suite files into plain, picklable conversation dicts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tasks.regress import specs
from tasks.regress.errors import SuiteError
from tasks.regress.expectations import ExpectationSpecError, parse_expectation
from tasks.regress.templating import TemplateSyntaxError, referenced_variables
from tasks.regress.yaml_lines import AliasRefused, LineDict, item_line, line_of, load_yaml_with_lines, to_plain

SUITE_KEYS = ("suite", "description", "include", "targets", "gate", "vars", "options", "conversations")
CONVERSATION_KEYS = ("id", "tags", "vars", "turns", "repeat", "pass_rate", "min_score", "description")
CHECK_ORDER = ("id", "tags", "vars", "repeat", "pass_rate", "min_score", "turns")
"""Which problem of a conversation is reported first (after an unknown key)."""
TURN_KEYS = ("user", "expect", "capture")
TARGET_ROLES = ("baseline", "candidate")
GATE_KEYS = ("min_pass_rate", "max_drop", "no_new_failures_tagged", "p95_latency_ms")
OPTION_KEYS = ("timeout", "reply_path", "intent_path", "headers")
MAX_SUITE_MB = 2
MAX_SUITE_BYTES = MAX_SUITE_MB * 1024 * 1024
"""A suite file (and each file it includes) is read whole, in the Slack-facing process too: bounded."""
OPTION_PROBLEMS = {
    "timeout": "option 'timeout' must be a positive number of seconds",
    "reply_path": "option 'reply_path' must be a JSON path string, e.g. '$.reply'",
    "intent_path": "option 'intent_path' must be a JSON path string, e.g. '$.intent'",
    "headers": "option 'headers' must map header names to strings, e.g. {Authorization: 'Bearer …'}",
}


@dataclass
class Suite:
    name: str
    path: str
    conversations: list[dict[str, Any]]
    targets: dict[str, str] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> set[str]:
        return {tag for conv in self.conversations for tag in conv["tags"]}

    def select(self, tags: list[str] | None) -> list[dict[str, Any]]:
        if not tags:
            return list(self.conversations)
        wanted = set(tags)
        return [conv for conv in self.conversations if wanted & set(conv["tags"])]


def looks_like_suite(path: Path) -> bool:
    """Cheap check used by the pytest plugin: a top-level `conversations:` key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r"^conversations\s*:", text, re.MULTILINE) is not None


def load_suite(path: str | Path, within: list[Path] | None = None) -> Suite:
    """`within`: folders every included file must be in (a suite run from chat may read nothing else)."""
    root = Path(path)
    if not root.is_file():
        raise SuiteError("suite file not found", str(path))
    doc = _read(root)
    conversations: list[dict[str, Any]] = []
    _collect(root, doc, conversations, stack=[root.resolve()], inherited_vars={}, within=within, read={root.resolve()})
    if not conversations:
        raise SuiteError("empty suite: no conversations (add a 'conversations:' list)", str(root), 1)
    _check_unique_ids(conversations)
    suite = Suite(
        name=str(doc.get("suite") or root.stem),
        path=str(root),
        conversations=conversations,
        targets=_parse_targets(doc, root),
        options=_parse_options(doc, root),
    )
    if "gate" in doc:
        try:
            suite.gate = validate_gate(to_plain(doc["gate"]), suite.tags)
        except ValueError as exc:
            raise SuiteError(str(exc), str(root), line_of(doc, "gate")) from None
    return suite


def validate_gate(gate: Any, known_tags: set[str]) -> dict[str, Any]:
    """Checks a gate mapping (from a suite or the command line); raises ValueError."""
    if not isinstance(gate, dict):
        raise ValueError("'gate' must be a mapping")
    unknown = set(gate) - set(GATE_KEYS)
    if unknown:
        raise ValueError(f"unknown gate key {sorted(unknown)[0]!r}; valid keys: {', '.join(GATE_KEYS)}")
    try:
        spec = specs.GateSpec.model_validate(gate)
    except ValidationError as exc:
        key, _ = specs.first_problem(exc, ("min_pass_rate", "max_drop", "p95_latency_ms", "no_new_failures_tagged"))
        if key == "p95_latency_ms":
            raise ValueError(f"gate p95_latency_ms must be a positive number, got {gate[key]!r}") from None
        if key == "no_new_failures_tagged":
            raise ValueError("gate no_new_failures_tagged must be a list of tags") from None
        raise ValueError(f"gate {key} must be a number between 0 and 1, got {gate[key]!r}") from None
    for tag in spec.no_new_failures_tagged:
        if tag not in known_tags:
            raise ValueError(
                f"gate names unknown tag {tag!r} in no_new_failures_tagged; "
                f"tags used in the suite: {', '.join(sorted(known_tags)) or 'none'}"
            )
    if "no_new_failures_tagged" in gate:
        gate = {**gate, "no_new_failures_tagged": list(spec.no_new_failures_tagged)}
    return dict(gate)


def _read(path: Path) -> LineDict:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SUITE_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read suite: {exc}", str(path)) from None
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(f"the file is larger than {MAX_SUITE_MB} MB, the limit for a suite file; split it into "
                         "files that `include:` each other", str(path))
    try:
        doc = load_yaml_with_lines(text)
    except AliasRefused as exc:
        raise SuiteError(f"YAML aliases are not supported in suites (found *{exc.anchor}); write the value out, or "
                         "share it with `vars:` or `include:`", str(path), exc.problem_mark.line + 1) from None
    except RecursionError:
        raise SuiteError("the YAML is nested too deeply", str(path)) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        mark = getattr(exc, "problem_mark", None)
        context_mark = getattr(exc, "context_mark", None)
        if mark is None or (
            ("end of stream" in problem or "<stream end>" in problem) and context_mark is not None
        ):
            mark = context_mark  # e.g. an unterminated quote: point at where it opened, not at EOF
        line = mark.line + 1 if mark is not None else None
        content_lines = [n for n, text_line in enumerate(text.splitlines(), start=1) if text_line.strip()]
        if line is not None and content_lines and line > content_lines[-1]:
            line = content_lines[-1]  # "found <stream end>": point at the last line with content
        message = f"malformed YAML: {problem}" + (f" ({context})" if context else "")
        raise SuiteError(message, str(path), line) from None
    if doc is None:
        raise SuiteError("empty suite: the file has no content", str(path), 1)
    if not isinstance(doc, dict):
        raise SuiteError("a suite must be a mapping with a 'conversations:' list", str(path), 1)
    unknown = [key for key in doc if key not in SUITE_KEYS]
    if unknown:
        raise SuiteError(
            f"unknown suite key {unknown[0]!r}; valid keys: {', '.join(SUITE_KEYS)}",
            str(path),
            line_of(doc, str(unknown[0])),
        )
    return doc


def _collect(
    path: Path,
    doc: LineDict,
    out: list[dict[str, Any]],
    stack: list[Path],
    inherited_vars: dict[str, Any],
    within: list[Path] | None = None,
    read: set[Path] | None = None,
) -> None:
    """`read`: every file of the suite so far; each is read once (a second include of one would only repeat
    its conversation ids, and a tree of repeated includes would read files without end)."""
    read = read if read is not None else set()
    file_vars = doc.get("vars", {})
    if not isinstance(file_vars, dict):
        raise SuiteError("'vars' must be a mapping", str(path), line_of(doc, "vars"))
    scope_vars = {**inherited_vars, **to_plain(file_vars)}
    includes = doc.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        raise SuiteError(
            "'include' must be a file name or a list of them", str(path), line_of(doc, "include")
        )
    for index, name in enumerate(includes):
        line = item_line(includes, index, line_of(doc, "include"))
        if not isinstance(name, str):
            raise SuiteError("'include' entries must be file names", str(path), line)
        target = (path.parent / name).resolve()
        if target in stack:
            chain = " -> ".join(p.name for p in [*stack[stack.index(target) :], target])
            raise SuiteError(f"include cycle: {chain}", str(path), line)
        if within is not None and not any(target == f or f in target.parents for f in within):
            raise SuiteError(f"included file is outside the suites folder: {name}", str(path), line)
        if not target.is_file():
            raise SuiteError(f"included file not found: {name}", str(path), line)
        if target in read:
            raise SuiteError(f"{name} is included twice in this suite; include each file once", str(path), line)
        read.add(target)
        _collect(target, _read(target), out, [*stack, target], scope_vars, within, read)
    conversations = doc.get("conversations", [])
    if conversations is None:
        conversations = []
    if not isinstance(conversations, list):
        raise SuiteError("'conversations' must be a list", str(path), line_of(doc, "conversations"))
    for index, raw in enumerate(conversations):
        line = item_line(conversations, index, line_of(doc, "conversations"))
        out.append(_parse_conversation(raw, path, line, scope_vars))


def _parse_conversation(raw: Any, path: Path, line: int | None, scope_vars: dict[str, Any]) -> dict[str, Any]:
    file = str(path)
    if not isinstance(raw, dict):
        raise SuiteError("a conversation must be a mapping with 'id' and 'turns'", file, line)
    try:
        spec = specs.ConversationSpec.model_validate(raw)
    except ValidationError as exc:
        key, problem = specs.first_problem(exc, CHECK_ORDER)
        raise _conversation_error(raw, key, problem, file, line) from None
    conv_id = str(spec.id)
    turns_raw = raw["turns"]
    variables = {**scope_vars, **to_plain(spec.vars)}
    known = set(variables)
    turns = []
    for index, turn_raw in enumerate(turns_raw):
        turn_line = item_line(turns_raw, index, line)
        turns.append(_parse_turn(turn_raw, conv_id, index + 1, file, turn_line, known))
    return {
        "id": conv_id,
        "tags": list(spec.tags),
        "vars": variables,
        "repeat": spec.repeat,
        "pass_rate": float(spec.pass_rate),
        "min_score": float(spec.min_score),
        "turns": turns,
        "file": file,
        "line": line,
    }


def _conversation_error(raw: dict[str, Any], key: str, problem: str, file: str, line: int | None) -> SuiteError:
    if problem == "unknown":
        return SuiteError(f"unknown conversation key {key!r}; valid keys: {', '.join(CONVERSATION_KEYS)}", file,
                          line_of(raw, key, line))
    if key == "id":
        return SuiteError("a conversation needs an 'id' (letters, digits, '_', '-', '.')", file, line_of(raw, "id", line))
    conv_id = str(raw.get("id"))
    if key == "turns":
        return SuiteError(
            f"conversation {conv_id!r} has no turns (add a 'turns:' list with at least one 'user:' message)",
            file,
            line_of(raw, "turns", line),
        )
    what = {
        "tags": "'tags' must be a list of strings",
        "vars": "'vars' must be a mapping",
        "repeat": f"'repeat' must be an integer from 1 to {specs.MAX_REPEAT}",
        "pass_rate": "'pass_rate' must be between 0 and 1",
        "min_score": "'min_score' must be between 0 and 1",
    }.get(key, f"{key!r} is not valid")
    return SuiteError(f"conversation {conv_id!r}: {what}", file, line_of(raw, key))


def _parse_turn(
    raw: Any, conv_id: str, number: int, file: str, line: int | None, known: set[str]
) -> dict[str, Any]:
    where = f"conversation {conv_id!r}, turn {number}"
    if not isinstance(raw, dict) or not isinstance(raw.get("user"), str):
        raise SuiteError(f"{where}: a turn needs a 'user:' message", file, line)
    try:
        spec = specs.TurnSpec.model_validate(raw)
    except ValidationError as exc:
        key, problem = specs.first_problem(exc, TURN_KEYS)
        if problem == "unknown":
            raise SuiteError(f"{where}: unknown turn key {key!r}; valid keys: {', '.join(TURN_KEYS)}", file,
                             line_of(raw, key, line)) from None
        if key == "expect":
            raise SuiteError(f"{where}: 'expect' must be a list", file, line_of(raw, "expect", line)) from None
        raise SuiteError(f"{where}: 'capture' must map variable names to regexes", file,
                         line_of(raw, "capture")) from None
    _check_variables(spec.user, known, where, file, line_of(raw, "user", line))
    expect_raw = raw.get("expect") or []
    expect = []
    for index, spec_raw in enumerate(expect_raw):
        spec_line = item_line(expect_raw, index, line)
        try:
            parsed = parse_expectation(to_plain(spec_raw))
        except ExpectationSpecError as exc:
            raise SuiteError(f"{where}: {exc}", file, spec_line) from None
        _check_variables(parsed["value"], known, where, file, spec_line)
        expect.append(parsed)
    capture = raw.get("capture", {})
    for name, pattern in capture.items():
        cap_line = line_of(capture, str(name), line)
        if not isinstance(name, str) or not name.isidentifier():
            raise SuiteError(f"{where}: capture name {name!r} is not a valid variable name", file, cap_line)
        if not isinstance(pattern, str):
            raise SuiteError(f"{where}: capture {name!r} needs a regex string", file, cap_line)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SuiteError(
                f"{where}: bad regex {pattern!r} in capture {name!r}: {exc}", file, cap_line
            ) from None
    known.update(capture)
    return {"user": spec.user, "expect": expect, "capture": dict(capture)}


def _check_variables(value: Any, known: set[str], where: str, file: str, line: int | None) -> None:
    try:
        names = referenced_variables(value)
    except TemplateSyntaxError as exc:
        raise SuiteError(f"{where}: bad template: {exc.message}", file, line) from None
    missing = sorted(names - known)
    if missing:
        raise SuiteError(
            f"{where}: undefined variable {missing[0]!r} (define it in 'vars' or capture it in an earlier turn)",
            file,
            line,
        )


def _check_unique_ids(conversations: list[dict[str, Any]]) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for conv in conversations:
        first = seen.get(conv["id"])
        if first is not None:
            raise SuiteError(
                f"duplicate conversation id {conv['id']!r} (first at {first['file']}:{first['line']})",
                conv["file"],
                conv["line"],
            )
        seen[conv["id"]] = conv


def _parse_targets(doc: LineDict, path: Path) -> dict[str, str]:
    targets = doc.get("targets", {})
    if not isinstance(targets, dict):
        raise SuiteError(
            "'targets' must map baseline/candidate to target URIs", str(path), line_of(doc, "targets")
        )
    try:
        specs.TargetsSpec.model_validate(targets)
    except ValidationError as exc:
        role, problem = specs.first_problem(exc, TARGET_ROLES)
        if problem == "unknown":
            raise SuiteError(f"unknown target role {role!r}; valid roles: {', '.join(TARGET_ROLES)}", str(path),
                             line_of(targets, role)) from None
        raise SuiteError(f"target {role!r} must be a URI string", str(path), line_of(targets, role)) from None
    return dict(targets)


def _parse_options(doc: LineDict, path: Path) -> dict[str, Any]:
    options = doc.get("options", {})
    if not isinstance(options, dict):
        raise SuiteError("'options' must be a mapping", str(path), line_of(doc, "options"))
    try:
        specs.OptionsSpec.model_validate(options)
    except ValidationError as exc:
        key, problem = specs.first_problem(exc, OPTION_KEYS)
        if problem == "unknown":
            raise SuiteError(f"unknown option {key!r}; valid options: {', '.join(OPTION_KEYS)}", str(path),
                             line_of(options, key)) from None
        if problem == "value_error":  # a reply_path / intent_path that is a string but not a JSON path
            raise SuiteError(f"option {key!r}: {specs.SpecMessage.of(exc)}", str(path), line_of(options, key)) from None
        raise SuiteError(OPTION_PROBLEMS.get(key, f"option {key!r} is not valid"), str(path),
                         line_of(options, key)) from None
    return to_plain(options)
