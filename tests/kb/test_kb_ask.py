"""`ask` about past decisions, on both databases: labmate's own example questions are answered, and
every answer says only true things about the decisions it lists (or doesn't)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from bot import grammar
from bot.grammar.decisions import DecideArgs
from bot.grammar.questions import interpret
from bot.handlers import decisions as handlers
from bot.messages.render import TEMPLATES, render
from bot.origin import Origin, Reply
from labmate.errors import UsageError
from models import decision as decisions
from models import search
from models.db import session_scope

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
ORIGIN = Origin(user="U1", channel="C1")


def _backticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def decision_examples() -> list[str]:
    """The questions about past decisions labmate itself suggests: ask_unknown's, the `ask` verb's
    examples and details (help), and the hint of an empty `ask`. Those it reads as questions about
    runs are tested with the run questions (tests/experiments/test_exp_grammar.py)."""
    template = (TEMPLATES / "ask_unknown.json.j2").read_text()
    examples = _backticked(template.split("*Past decisions*:")[1].split('"}}')[0])
    spec = grammar.lookup("ask")
    assert spec is not None
    examples += [e.removeprefix("ask ") for e in spec.examples]
    examples += [e.removeprefix("@labmate ") for e in _backticked(spec.details) if e.startswith("@labmate ")]
    with pytest.raises(UsageError) as empty:
        grammar.parse("ask", now=NOW)
    examples += [e.removeprefix("ask ") for e in _backticked(empty.value.message)]
    return [q for q in dict.fromkeys(examples) if interpret(q, NOW) is None]


def suggested_decisions() -> list[str]:
    """The decisions labmate suggests logging: `decide`'s help examples and the one `labmate demo` prints."""
    spec = grammar.lookup("decide")
    assert spec is not None
    demo = re.search(r'labmate say \\"(decide [^"\\]+)\\"', (ROOT / "labmate/cli.py").read_text())
    assert demo, "labmate demo no longer suggests a decision"
    return [*spec.examples, demo.group(1).replace("{report.model_name}", "sales-agent")]


@pytest.fixture
def suggested_log(kb_url: str) -> str:
    with session_scope(kb_url) as s:
        for command in suggested_decisions():
            handlers.decide(grammar.parse(command, now=NOW).args, ORIGIN, s)  # type: ignore[arg-type]
    return kb_url


def _matched(s: Session, words: list[str], ids: list[int]) -> dict[int, set[str]]:
    return {i: set(found) for i, found in search.words_matched(s, words=words, ids=ids).items()}


def assert_truthful(s: Session, reply: Reply, words: list[str]) -> None:
    """What the reply says about each decision holds, measured by the search itself."""
    hits = reply.context.get("hits", [])
    ids = [h["id"] for h in hits]
    matched = _matched(s, words, ids)
    if reply.template == "decisions":  # "Decisions matching <the question>": all of its words
        assert hits and all(matched[i] == set(words) for i in ids), matched
    elif reply.template == "ask_decisions" and reply.context["how"] == "linked":
        kinds = tuple(dict.fromkeys(k for w in words if (k := handlers.LINK_WORDS.get(w.lower()))))
        rest = reply.context["words"]
        assert hits and rest == [w for w in words if w.lower() not in handlers.LINK_WORDS]
        assert reply.context["links"] == " and ".join(f"{'an' if k == 'experiment' else 'a'} {k}" for k in kinds)
        for hit in hits:
            assert {link["kind"] for link in hit["links"]} >= set(kinds), hit["links"]
            assert matched[hit["id"]] >= set(rest)
    elif reply.template == "ask_decisions":  # "No decision mentions all of …; these mention some"
        assert hits and reply.context["words"] == words
        everything = [d.id for d in search.latest(s, limit=1000)]
        assert not any(found == set(words) for found in _matched(s, words, everything).values())
        counts = [len(h["mentions"]) for h in hits]
        assert counts == sorted(counts, reverse=True) and all(counts)
        assert all(set(h["mentions"]) == matched[h["id"]] for h in hits)
    else:  # "No decision mentions (any of) …"
        assert reply.template == "ask_unknown"
        everything = [d.id for d in search.latest(s, limit=1000)]
        assert not any(_matched(s, words, everything).values())
    rendered = render(reply.template, reply.context)
    json.dumps(rendered.payload())


def _ask(url: str, question: str) -> tuple[Reply, list[str]]:
    with session_scope(url) as s:
        reply = handlers.ask(grammar.parse(f"ask {question}", now=NOW).args, ORIGIN, s)  # type: ignore[arg-type]
        words = handlers.question_words(question)
        assert_truthful(s, reply, words)
    return reply, words


def test_the_examples_are_about_decisions_and_there_are_some() -> None:
    examples = decision_examples()
    assert "what did we decide about the candidate model?" in examples
    assert "why did we pick the candidate model?" in examples
    assert "why did we drop bigrams?" in examples


@pytest.mark.parametrize("question", decision_examples())
def test_every_example_question_about_decisions_finds_the_suggested_decision(suggested_log: str, question: str) -> None:
    """`what did we decide about the candidate model?` (labmate's own example, after logging the decision
    `labmate demo` suggests) said "No decision mentions “candidate”, “model”", and a decision did."""
    reply, _ = _ask(suggested_log, question)
    assert reply.template in ("decisions", "ask_decisions"), question
    shown = json.dumps(render(reply.template, reply.context).blocks, ensure_ascii=False)
    expected = "drop the bigram features" if "bigram" in question else "ship the candidate"
    assert expected in shown, (question, shown)


def test_a_model_named_in_the_question_is_read_as_the_decision_s_model_link(suggested_log: str) -> None:
    reply, _ = _ask(suggested_log, "what did we decide about the candidate model?")
    assert (reply.template, reply.context["how"], reply.context["words"]) == ("ask_decisions", "linked", ["candidate"])
    header = render(reply.template, reply.context).blocks[0]["text"]["text"]
    assert header == "*Decisions that link a model and mention* “candidate”"
    reply, _ = _ask(suggested_log, "what about the models?")
    assert render(reply.template, reply.context).blocks[0]["text"]["text"] == "*Latest decisions that link a model*"
    with session_scope(suggested_log) as s:
        with_a_model = [d.text for d in search.latest(s) if any(link.kind == "model" for link in d.links)]
    assert [h["text"] for h in reply.context["hits"]] == with_a_model and len(with_a_model) == 2


def test_when_no_decision_mentions_every_word_those_that_mention_some_are_listed_and_said_to(suggested_log: str) -> None:
    with session_scope(suggested_log) as s:
        decisions.create(s, new=decisions.NewDecision(text="drop the bigram tokenizer", author="U2"))
    reply, _ = _ask(suggested_log, "why did we drop the bigram features and the weather?")
    assert (reply.template, reply.context["how"]) == ("ask_decisions", "some")
    assert [(h["text"], h["mentions"]) for h in reply.context["hits"]] == [
        ("drop the bigram features, they overfit", ["drop", "bigram", "features"]),
        ("drop the bigram tokenizer", ["drop", "bigram"]),
    ]
    message = render(reply.template, reply.context)
    assert message.blocks[0]["text"]["text"] == (
        "No decision mentions all of “drop”, “bigram”, “features”, “weather”; "
        "these mention some of them, those that mention the most first:"
    )
    assert message.blocks[2]["elements"][0]["text"].endswith(" · mentions “drop”, “bigram”, “features”")


def test_a_question_no_decision_mentions_says_so(suggested_log: str) -> None:
    reply, _ = _ask(suggested_log, "what about the weather forecast?")
    assert reply.template == "ask_unknown"
    text = render(reply.template, reply.context).blocks[0]["text"]["text"]
    assert text.startswith("No decision mentions any of “weather”, “forecast”, and it isn't a question about runs")
    # a contraction is one word: "what's" searched for "s", "didn't" for "didn"
    reply, _ = _ask(suggested_log, "what's the weather and why didn't it rain?")
    text = render(reply.template, reply.context).blocks[0]["text"]["text"]
    assert text.startswith("No decision mentions any of “weather”, “rain”, and it isn't a question about runs"), text
    reply, _ = _ask(suggested_log, "??")
    assert render(reply.template, reply.context).blocks[0]["text"]["text"].startswith(
        "That isn't a question about runs, so I can't answer it.")


def test_link_filters_and_the_words_each_decision_matches(kb_url: str) -> None:
    with session_scope(kb_url) as s:
        linked = decisions.create(s, new=decisions.NewDecision(
            text="ship the candidate", author="U1", tags=("release",),
            links=(decisions.LinkRef("model", "sales-agent@candidate"),),
        )).id
        plain = decisions.create(s, new=decisions.NewDecision(text="ship the candidates later", author="U1")).id
    with session_scope(kb_url) as s:
        by_link = search.Filters(links=("model",))
        assert [h.decision.id for h in search.search(s, query="candidate", filters=by_link)] == [linked]
        assert [d.id for d in search.latest(s, filters=by_link)] == [linked]
        assert search.search(s, query="candidate", filters=search.Filters(links=("run",))) == []
        found = search.words_matched(s, words=["candidate", "release", "weather", "Ship", "ship"], ids=[linked, plain])
        assert found == {linked: ["candidate", "release", "Ship"], plain: ["candidate", "Ship"]}
        assert search.words_matched(s, words=["candidate"], ids=[]) == {}


def test_the_suggested_decisions_are_decisions() -> None:
    parsed = [grammar.parse(c, now=NOW).args for c in suggested_decisions()]
    assert all(isinstance(a, DecideArgs) for a in parsed)
    assert parsed[-1] == DecideArgs("ship the candidate", ("release",), (("model", "sales-agent@candidate"),))
