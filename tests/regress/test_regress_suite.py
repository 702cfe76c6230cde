from __future__ import annotations

import pickle

import pytest

from tasks.regress.errors import SuiteError
from tasks.regress.expectations import EXPECTATION_TYPES
from tasks.regress.suite import load_suite, looks_like_suite


def test_loads_conversations_with_vars_tags_and_normalized_expectations(write_suite):
    path = write_suite("""
        suite: shop
        targets: {baseline: a:b, candidate: c:d}
        gate: {min_pass_rate: 0.9, no_new_failures_tagged: [p0]}
        vars: {plan: Pro, who: Dana}
        conversations:
          - id: price
            tags: [p0, pricing]
            vars: {who: Sam}
            turns:
              - user: "Price of {{ plan }} for {{ who }}?"
                expect:
                  - contains: "49"
                  - icontains-any: [usd, eur]
                    optional: true
                    weight: 2
    """)
    suite = load_suite(path)
    assert suite.name == "shop"
    assert suite.targets == {"baseline": "a:b", "candidate": "c:d"}
    assert suite.gate == {"min_pass_rate": 0.9, "no_new_failures_tagged": ["p0"]}
    (conv,) = suite.conversations
    assert conv["vars"] == {"plan": "Pro", "who": "Sam"}
    assert conv["tags"] == ["p0", "pricing"]
    assert conv["line"] == 6
    assert conv["turns"][0]["expect"] == [
        {"type": "contains", "value": "49", "optional": False, "weight": 1.0},
        {"type": "icontains-any", "value": ["usd", "eur"], "optional": True, "weight": 2.0},
    ]
    # Plain data only: the runner's input must survive pickling (Celery, process pools).
    assert pickle.loads(pickle.dumps(conv)) == conv
    assert type(conv) is dict and type(conv["turns"]) is list


def test_include_is_relative_to_including_file_and_inherits_vars(write_suite):
    write_suite("""
        vars: {greeting: hello}
        conversations:
          - id: inner
            turns: [{user: "{{ greeting }} {{ plan }}"}]
    """, name="parts/inner.yaml")
    path = write_suite("""
        include: [parts/inner.yaml]
        vars: {plan: Pro}
        conversations:
          - id: outer
            turns: [{user: hi}]
    """)
    suite = load_suite(path)
    assert [c["id"] for c in suite.conversations] == ["inner", "outer"]
    assert suite.conversations[0]["vars"] == {"plan": "Pro", "greeting": "hello"}
    assert suite.conversations[0]["file"].endswith("inner.yaml")


def test_tag_selection(write_suite):
    path = write_suite("""
        conversations:
          - {id: a, tags: [p0], turns: [{user: x}]}
          - {id: b, tags: [p1], turns: [{user: x}]}
    """)
    assert [c["id"] for c in load_suite(path).select(["p1"])] == ["b"]


def _error(path) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return info.value


def test_malformed_yaml_names_file_and_line(write_suite):
    path = write_suite("""
        conversations:
          - id: a
            turns:
              - user: "unterminated
          - id: b
    """)
    err = _error(path)
    assert err.path == str(path)
    assert err.line == 4
    assert str(err) == (
        f"{path}:4: malformed YAML: found unexpected end of stream (while scanning a quoted scalar)"
    )


def test_unknown_expectation_type_lists_valid_types(write_suite):
    path = write_suite("""
        conversations:
          - id: a
            turns:
              - user: hi
                expect:
                  - contains: hello
                  - sounds-like: hello
    """)
    err = _error(path)
    assert err.line == 7
    assert "unknown expectation type 'sounds-like'" in str(err)
    assert "valid types: " + ", ".join(EXPECTATION_TYPES) in str(err)
    assert "conversation 'a', turn 1" in str(err)


def test_bad_regex_says_which_and_why(write_suite):
    path = write_suite("""
        conversations:
          - id: a
            turns:
              - user: hi
                expect:
                  - regex: "order (\\\\d+"
    """)
    err = _error(path)
    assert err.line == 6
    assert "bad regex 'order (\\\\d+'" in str(err)
    assert "missing ), unterminated subpattern" in str(err)


def test_bad_capture_regex(write_suite):
    path = write_suite("""
        conversations:
          - id: a
            turns:
              - user: hi
                capture: {order: "[a-"}
    """)
    err = _error(path)
    assert "bad regex '[a-' in capture 'order'" in str(err) and err.line == 5


def test_include_cycle_is_detected(write_suite):
    write_suite("""
        include: a.yaml
        conversations: [{id: b, turns: [{user: x}]}]
    """, name="b.yaml")
    path = write_suite("""
        include: [b.yaml]
        conversations: [{id: a, turns: [{user: x}]}]
    """, name="a.yaml")
    err = _error(path)
    assert "include cycle: a.yaml -> b.yaml -> a.yaml" in str(err)
    assert err.path.endswith("b.yaml") and err.line == 1


def test_missing_include(write_suite):
    path = write_suite("""
        include: [nope.yaml]
        conversations: [{id: a, turns: [{user: x}]}]
    """)
    assert "included file not found: nope.yaml" in str(_error(path))


@pytest.mark.parametrize("text", ["", "conversations: []\n", "targets: {candidate: a:b}\n"])
def test_empty_suite(write_suite, text):
    err = _error(write_suite(text))
    assert "empty suite" in str(err)


def test_gate_naming_unknown_tag(write_suite):
    path = write_suite("""
        gate:
          no_new_failures_tagged: [p0, p9]
        conversations:
          - {id: a, tags: [p0, smoke], turns: [{user: x}]}
    """)
    err = _error(path)
    assert err.line == 2
    assert "gate names unknown tag 'p9'" in str(err)
    assert "tags used in the suite: p0, smoke" in str(err)


def test_conversation_without_turns(write_suite):
    path = write_suite("""
        conversations:
          - id: ok
            turns: [{user: x}]
          - id: lonely
            tags: [p1]
    """)
    err = _error(path)
    assert err.line == 4
    assert "conversation 'lonely' has no turns" in str(err)


def test_undefined_variable_is_caught_at_load_time(write_suite):
    path = write_suite("""
        conversations:
          - id: a
            turns:
              - user: hi
                capture: {order_id: "#(\\\\d+)"}
              - user: "status of {{ order_id }} for {{ customer }}"
    """)
    err = _error(path)
    assert "conversation 'a', turn 2: undefined variable 'customer'" in str(err)
    assert err.line == 6


def test_duplicate_ids_and_unknown_keys(write_suite):
    dup = write_suite("""
        conversations:
          - {id: a, turns: [{user: x}]}
          - {id: a, turns: [{user: y}]}
    """, name="dup.yaml")
    assert "duplicate conversation id 'a'" in str(_error(dup))
    typo = write_suite("""
        conversations:
          - {id: a, turnz: [{user: x}]}
    """, name="typo.yaml")
    assert "unknown conversation key 'turnz'" in str(_error(typo))


def test_expectation_value_errors(write_suite):
    path = write_suite("""
        conversations:
          - id: a
            turns:
              - user: x
                expect:
                  - similar: {to: "hello", threshold: 1.5}
    """)
    assert "'similar' threshold must be between 0 and 1, got 1.5" in str(_error(path))


def test_looks_like_suite(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("conversations:\n  - id: a\n")
    other = tmp_path / "o.yaml"
    other.write_text("services:\n  conversations: 3\n")
    assert looks_like_suite(suite) and not looks_like_suite(other)
