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


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
) + "conversations:\n  - {id: a, turns: [{user: x}]}\n"


@pytest.mark.parametrize(
    ("text", "line", "alias"),
    [
        (LAUGHS, 2, "a"),  # "billion laughs": 9 levels of 9 aliases each
        ("conversations:\n  - &c {id: a, turns: [{user: x}]}\n  - <<: *c\n    id: b\n", 3, "c"),
        ("vars: {v: &v hi}\nconversations:\n  - {id: a, vars: {w: *v}, turns: [{user: x}]}\n", 3, "v"),
    ],
)
def test_yaml_aliases_are_refused_with_file_and_line(write_suite, text, line, alias):
    path = write_suite(text)
    assert str(_error(path)) == (f"{path}:{line}: YAML aliases are not supported in suites (found *{alias}); write "
                                 "the value out, or share it with `vars:` or `include:`")


def test_an_included_file_with_an_alias_is_refused_too(write_suite):
    write_suite("conversations:\n  - &c {id: b, turns: [{user: x}]}\n  - *c\n", name="parts/inner.yaml")
    path = write_suite("include: parts/inner.yaml\nconversations: [{id: a, turns: [{user: x}]}]\n")
    err = _error(path)
    assert (err.path, err.line) == (str(path.parent / "parts" / "inner.yaml"), 3)


def test_a_suite_file_over_2_mb_is_refused_without_parsing_it(write_suite):
    body = "conversations:\n" + "".join(f"  - {{id: c{i}, turns: [{{user: x}}]}}\n" for i in range(80_000))
    assert len(body) > 2 * 1024 * 1024
    path = write_suite(body)
    assert str(_error(path)) == (f"{path}: the file is larger than 2 MB, the limit for a suite file; split it into "
                                 "files that `include:` each other")
    under = write_suite("conversations:\n  - {id: a, turns: [{user: x}]}\n" + "#" * (2 * 1024 * 1024 - 100) + "\n",
                        name="under.yaml")
    assert [c["id"] for c in load_suite(under).conversations] == ["a"]


def test_an_included_file_over_2_mb_is_refused(write_suite):
    write_suite("conversations: []\n" + "#" * (2 * 1024 * 1024) + "\n", name="big.yaml")
    path = write_suite("include: big.yaml\nconversations: [{id: a, turns: [{user: x}]}]\n")
    assert str(_error(path)) == (f"{path.parent / 'big.yaml'}: the file is larger than 2 MB, the limit for a suite "
                                 "file; split it into files that `include:` each other")


def test_a_file_included_twice_is_refused(write_suite):
    """Each file is read once: a tree of repeated includes would otherwise read the same files without end."""
    write_suite("vars: {v: 1}\n", name="shared.yaml")
    write_suite("include: [shared.yaml]\n", name="mid.yaml")
    path = write_suite("include: [mid.yaml, shared.yaml]\nconversations: [{id: a, turns: [{user: x}]}]\n")
    err = _error(path)
    assert str(err) == f"{path}:1: shared.yaml is included twice in this suite; include each file once"


def test_deeply_nested_yaml_is_refused(write_suite):
    path = write_suite("conversations: " + "[" * 100_000 + "\n")
    assert str(_error(path)) == f"{path}: the YAML is nested too deeply"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("{headers: x}", "1: option 'headers' must map header names to strings, e.g. {Authorization: 'Bearer …'}"),
        ("{headers: {X-Count: 3}}",
         "1: option 'headers' must map header names to strings, e.g. {Authorization: 'Bearer …'}"),
        ("{reply_path: 3}", "1: option 'reply_path' must be a JSON path string, e.g. '$.reply'"),
        ("{intent_path: [a]}", "1: option 'intent_path' must be a JSON path string, e.g. '$.intent'"),
        ("{intent_path: '$[['}", "1: option 'intent_path': bad JSON path '$[[': Parse error at 1:2 near token [ ([)"),
    ],
)
def test_options_of_the_wrong_type_are_refused(write_suite, options, expected):
    path = write_suite(f"options: {options}\nconversations: [{{id: a, turns: [{{user: x}}]}}]\n")
    assert str(_error(path)) == f"{path}:{expected}"


def test_typed_options_are_kept(write_suite):
    path = write_suite("options: {reply_path: '$.r', intent_path: null, headers: {Authorization: Bearer t}}\n"
                       "conversations: [{id: a, turns: [{user: x}]}]\n")
    assert load_suite(path).options == {"reply_path": "$.r", "intent_path": None, "headers": {"Authorization": "Bearer t"}}


def test_repeat_is_bounded(write_suite):
    path = write_suite("conversations:\n  - id: a\n    repeat: 100000000\n    turns: [{user: x}]\n")
    assert str(_error(path)) == f"{path}:3: conversation 'a': 'repeat' must be an integer from 1 to 1000"
    ok = write_suite("conversations:\n  - id: a\n    repeat: 1000\n    turns: [{user: x}]\n", name="ok.yaml")
    assert load_suite(ok).conversations[0]["repeat"] == 1000
