"""Conversations, turns and expectations are validated by pydantic models (tasks/regress/specs.py), with
the messages, files and lines the hand-written checks gave (these cases were compared with them)."""

from __future__ import annotations

import pytest

from tasks.regress import specs
from tasks.regress.errors import SuiteError
from tasks.regress.suite import load_suite

HEAD = "conversations:\n  - id: a\n"
TURN = HEAD + "    turns:\n      - user: x\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEAD + "    turns: [{user: x}]\n    colour: red\n",
         "4: unknown conversation key 'colour'; valid keys: id, tags, vars, turns, repeat, pass_rate, min_score, description"),
        ("conversations:\n  - turns: [{user: x}]\n", "2: a conversation needs an 'id' (letters, digits, '_', '-', '.')"),
        ("conversations:\n  - id: true\n    turns: [{user: x}]\n", "2: a conversation needs an 'id'"),
        (HEAD + "    tags: [1, 2]\n    turns: [{user: x}]\n", "3: conversation 'a': 'tags' must be a list of strings"),
        (HEAD + "    vars: [1]\n    turns: [{user: x}]\n", "3: conversation 'a': 'vars' must be a mapping"),
        (HEAD + "    repeat: '3'\n    turns: [{user: x}]\n", "3: conversation 'a': 'repeat' must be an integer from 1 to 1000"),
        (HEAD + "    pass_rate: 2\n    turns: [{user: x}]\n", "3: conversation 'a': 'pass_rate' must be between 0 and 1"),
        (HEAD + "    repeat: 0\n    turns: []\n    tags: [1]\n", "5: conversation 'a': 'tags' must be a list of strings"),
        (HEAD + "    turns: []\n", "3: conversation 'a' has no turns"),
        (TURN + "        expect: {contains: y}\n", "5: conversation 'a', turn 1: 'expect' must be a list"),
        (TURN + "        capture: [a]\n", "5: conversation 'a', turn 1: 'capture' must map variable names to regexes"),
        (TURN + "        bogus: 1\n", "5: conversation 'a', turn 1: unknown turn key 'bogus'; valid keys: user, expect, capture"),
        (HEAD + "    turns:\n      - user: 3\n", "4: conversation 'a', turn 1: a turn needs a 'user:' message"),
        (TURN + "        expect: [{json-path: {path: '$.a', foo: 1}}]\n",
         "5: conversation 'a', turn 1: 'json-path' accepts path, equals, contains; unexpected: foo"),
        (TURN + "        expect: [{latency-ms: true}]\n", "5: conversation 'a', turn 1: 'latency-ms' needs a positive number, got True"),
    ],
)
def test_messages_name_the_file_and_line(write_suite, text: str, expected: str) -> None:
    path = write_suite(text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}:{expected}"), str(info.value)


def test_expectations_are_a_discriminated_union_of_typed_models() -> None:
    spec = specs.ADAPTER.validate_python({"type": "json-path", "value": {"path": "$.a", "equals": None}})
    assert isinstance(spec, specs.JsonPathExpectation) and isinstance(spec.value, specs.JsonPath)
    assert spec.as_dict() == {"type": "json-path", "value": {"path": "$.a", "equals": None}, "optional": False,
                              "weight": 1.0}
    similar = specs.ADAPTER.validate_python({"type": "similar", "value": "hi", "weight": 2})
    assert similar.as_dict()["value"] == {"to": "hi", "threshold": 0.8, "method": "cosine"}
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        specs.ConversationSpec.model_validate({"id": "a", "turns": [{}], "colour": 1})


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("targets: {baseline: a:b, judge: x}\n", "1: unknown target role 'judge'; valid roles: baseline, candidate"),
        ("targets: {baseline: null}\n", "1: target 'baseline' must be a URI string"),
        ("options: {timeout: true}\n", "1: option 'timeout' must be a positive number of seconds"),
        ("options: {tiemout: 3}\n", "1: unknown option 'tiemout'; valid options: timeout, reply_path, intent_path, headers"),
        ("gate: {min_pass_rate: null}\n", "1: gate min_pass_rate must be a number between 0 and 1, got None"),
        ("gate: {p95_latency_ms: '3', no_new_failures_tagged: [1]}\n",
         "1: gate p95_latency_ms must be a positive number, got '3'"),
        ("gate: {no_new_failures_tagged: [1]}\n", "1: gate no_new_failures_tagged must be a list of tags"),
    ],
)
def test_targets_options_and_gate_messages(write_suite, head: str, expected: str) -> None:
    path = write_suite(head + "conversations:\n  - id: a\n    tags: [p0]\n    turns: [{user: x}]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value) == f"{path}:{expected}"
