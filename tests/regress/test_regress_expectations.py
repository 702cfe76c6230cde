from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.regress.expectations import (
    ExpectationSpecError,
    Observation,
    check,
    describe,
    parse_expectation,
    render_spec,
)
from tasks.regress.similarity import cosine, difflib_ratio

REPLY = "The Pro plan costs 49 USD per month."
OBS = Observation(REPLY, "pricing", 120.0, {"reply": REPLY, "slots": {"plan": "pro", "price": 49, "tags": ["a"]}})


def run(raw, obs=OBS, variables=None):
    return check(render_spec(parse_expectation(raw), variables or {}), obs)[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"equals": "  The Pro plan costs 49 USD per month. "}, True),
        ({"equals": "The Pro plan"}, False),
        ({"contains": "49 USD"}, True),
        ({"contains": "49 usd"}, False),
        ({"icontains": "49 usd"}, True),
        ({"contains-any": ["EUR", "USD"]}, True),
        ({"contains-any": ["EUR", "GBP"]}, False),
        ({"contains-all": ["Pro", "USD"]}, True),
        ({"contains-all": ["Pro", "EUR"]}, False),
        ({"icontains-any": ["usd", "eur"]}, True),
        ({"icontains-all": ["pro plan", "usd"]}, True),
        ({"icontains-all": ["pro plan", "eur"]}, False),
        ({"not-contains": "EUR"}, True),
        ({"not-contains": ["EUR", "USD"]}, False),
        ({"regex": r"\d+ USD"}, True),
        ({"regex": r"^\d+ USD"}, False),
        ({"starts-with": "The Pro"}, True),
        ({"starts-with": "Pro"}, False),
        ({"max-length": 36}, True),
        ({"max-length": 35}, False),
        ({"latency-ms": 150}, True),
        ({"latency-ms": 100}, False),
        ({"intent": "pricing"}, True),
        ({"intent": ["greet", "pricing"]}, True),
        ({"intent": "greet"}, False),
        ({"json-path": {"path": "$.slots.price", "equals": 49}}, True),
        ({"json-path": {"path": "$.slots.price", "equals": 59}}, False),
        ({"json-path": {"path": "$.slots.plan", "contains": "pr"}}, True),
        ({"json-path": {"path": "$.slots.tags", "contains": "a"}}, True),
        ({"json-path": "$.slots.plan"}, True),
        ({"json-path": "$.slots.missing"}, False),
        ({"similar": {"to": "The Pro plan costs 49 USD a month.", "threshold": 0.8}}, True),
        ({"similar": {"to": "Sorry, I cannot help with that.", "threshold": 0.5}}, False),
        ({"similar": {"to": "The Pro plan costs 49 USD a month.", "threshold": 0.8, "method": "difflib"}}, True),
    ],
)
def test_expectation_types(raw, expected):
    assert run(raw) is expected


def test_intent_missing_and_json_from_text_reply():
    no_intent = Observation('{"order": {"id": "A-1"}}', None, 1.0, None)
    spec = parse_expectation({"intent": "x"})
    assert check(spec, no_intent) == (False, "the agent reported no intent")
    assert run({"json-path": {"path": "$.order.id", "equals": "A-1"}}, no_intent)
    plain = Observation("not json", None, 1.0, None)
    assert check(parse_expectation({"json-path": "$.a"}), plain)[1].startswith("the reply is not structured")


def test_templated_values_render_with_variables():
    assert run({"contains": "{{ price }} USD"}, variables={"price": 49})
    assert not run({"contains": "{{ price }} USD"}, variables={"price": 59})
    rendered = render_spec(parse_expectation({"regex": "{{ n }} USD"}), {"n": 49})
    assert describe(rendered) == "regex '49 USD'"


def test_modifiers_parsed():
    spec = parse_expectation({"contains": "x", "optional": True, "weight": 3})
    assert spec == {"type": "contains", "value": "x", "optional": True, "weight": 3.0}
    assert describe(spec) == "contains 'x' (optional)"
    # A regex as its author wrote it: repr would double every backslash.
    assert describe(parse_expectation({"regex": r"\$390 per month"})) == r"regex '\$390 per month'"
    assert describe(parse_expectation({"not-contains": ["a\\b", "c"]})) == r"not-contains ['a\b', 'c']"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"contains": "a", "regex": "b"}, "exactly one type"),
        ({"weight": 2}, "exactly one type"),
        ({"contains-any": "a"}, "'contains-any' needs a non-empty list of strings"),
        ({"max-length": -1}, "'max-length' needs a positive number, got -1"),
        ({"regex": "(("}, "bad regex '((': missing ), unterminated subpattern at position 1"),
        ({"json-path": {"path": "$.[["}}, "bad JSON path '$.[['"),
        ({"json-path": {"path": "$.a", "equals": 1, "contains": 1}}, "either 'equals' or 'contains'"),
        ({"similar": {"to": "x", "method": "bert"}}, "'similar' method must be one of cosine, difflib"),
        ({"contains": "x", "weight": "heavy"}, "'weight' must be a number >= 0"),
        ({"contains": "x", "optional": "yes"}, "'optional' must be true or false"),
        ("contains", "expectation 'contains' needs a value"),
    ],
)
def test_bad_specs(raw, message):
    with pytest.raises(ExpectationSpecError, match=None) as info:
        parse_expectation(raw)
    assert message in str(info.value)


texts = st.text(max_size=60)


@given(texts, texts)
def test_similarity_is_symmetric_and_bounded(a, b):
    for measure in (cosine, difflib_ratio):
        score = measure(a, b)
        assert 0.0 <= score <= 1.0 + 1e-9
    assert cosine(a, b) == pytest.approx(cosine(b, a))


@given(st.text(min_size=1, max_size=60))
def test_similarity_of_identical_text_is_one(a):
    assert cosine(a, a) == pytest.approx(1.0)
    assert difflib_ratio(a, a) == pytest.approx(1.0)
