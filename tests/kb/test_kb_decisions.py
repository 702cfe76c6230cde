"""Decisions: create, get, supersede, links, lookups by source and by MLflow ref."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models import decision as decisions
from models import search
from models.db import session_scope
from models.decision import LinkRef, NewDecision
from models.errors import NotFound

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RUN_A = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
RUN_B = "ffeeddccbbaa99887766554433221100"


def _create(url: str, text: str, **kwargs: object) -> int:
    with session_scope(url) as s:
        return decisions.create(s, new=NewDecision(text=text, author=str(kwargs.pop("author", "U1")), **kwargs)).id


def test_create_then_get_round_trips_every_field(kb_url):
    with session_scope(kb_url) as s:
        made = decisions.create(
            s,
            new=NewDecision(
                text="ship sales-agent v3: +4 pts val_f1",
                author="U42",
                channel="C7",
                tags=("release", "nlp", "release"),
                links=(LinkRef("run", RUN_A), LinkRef("model", "sales-agent/3"), LinkRef("run", RUN_A)),
                permalink="https://example.slack.com/archives/C7/p1",
                source_ts="1700000000.000100",
                created_at=T0,
            ),
        )
        assert made.id is not None
        made_id = made.id
    with session_scope(kb_url) as s:
        got = decisions.get(s, decision_id=made_id)
        assert got.text == "ship sales-agent v3: +4 pts val_f1"
        assert (got.author, got.channel) == ("U42", "C7")
        assert got.tag_names == ["nlp", "release"]  # de-duplicated, ordered by tag
        assert [(link.kind, link.ref, link.status) for link in got.links] == [
            ("run", RUN_A, "pending"),
            ("model", "sales-agent/3", "pending"),
        ]
        assert got.permalink == "https://example.slack.com/archives/C7/p1"
        assert got.source_ts == "1700000000.000100"
        assert got.created_at.replace(tzinfo=got.created_at.tzinfo or UTC) == T0
        assert got.superseded_by is None


def test_get_unknown_id_raises_not_found(kb_url):
    with session_scope(kb_url) as s, pytest.raises(NotFound, match="#999"):
        decisions.get(s, decision_id=999)


def test_get_many_keeps_the_requested_order_and_skips_unknown(kb_url):
    ids = [_create(kb_url, f"decision number {i}") for i in range(3)]
    with session_scope(kb_url) as s:
        got = decisions.get_many(s, ids=[ids[2], 12345, ids[0]])
        assert [d.id for d in got] == [ids[2], ids[0]]
        assert decisions.get_many(s, ids=[]) == []


def test_supersede_links_old_to_new_and_search_shows_the_replacement(kb_url):
    old_id = _create(kb_url, "drop the bigram features, they overfit", tags=("features",), created_at=T0)
    with session_scope(kb_url) as s:
        old, new = decisions.supersede(
            s,
            old_id=old_id,
            new=NewDecision(text="keep the bigram features after all: the overfit was a leak", author="U1"),
        )
        assert old.superseded_by == new.id
        new_id = new.id
    with session_scope(kb_url) as s:
        assert decisions.get(s, decision_id=old_id).superseded_by == new_id
        assert decisions.get(s, decision_id=new_id).superseded_by is None
        hits = search.search(s, query="bigram")
        by_id = {h.decision.id: h for h in hits}
        assert set(by_id) == {old_id, new_id}
        assert by_id[old_id].replacement is not None
        assert by_id[old_id].replacement.id == new_id
        assert by_id[new_id].replacement is None
        # A search only the old text matches still brings the replacement along.
        only_old = search.search(s, query="drop")
        assert [h.decision.id for h in only_old] == [old_id]
        assert only_old[0].replacement is not None
        assert only_old[0].replacement.text.startswith("keep the bigram")


def test_supersede_unknown_decision_raises_not_found_and_writes_nothing(kb_url):
    with pytest.raises(NotFound), session_scope(kb_url) as s:
        decisions.supersede(s, old_id=77, new=NewDecision(text="replacement", author="U1"))
    with session_scope(kb_url) as s:
        assert search.latest(s) == []


def test_link_results_are_recorded(kb_url):
    decision_id = _create(kb_url, "promote the ranker", links=(LinkRef("run", RUN_A), LinkRef("experiment", "ranker")))
    with session_scope(kb_url) as s:
        run_link, exp_link = decisions.get(s, decision_id=decision_id).links
        decisions.set_link_result(s, link_id=run_link.id, status="ok", detail={"experiment_id": "3", "summary": "f1 0.91"})
        decisions.set_link_result(s, link_id=exp_link.id, status="missing", detail={"missing": True})
    with session_scope(kb_url) as s:
        run_link, exp_link = decisions.get(s, decision_id=decision_id).links
        assert (run_link.status, run_link.detail) == ("ok", {"experiment_id": "3", "summary": "f1 0.91"})
        assert (exp_link.status, exp_link.detail) == ("missing", {"missing": True})
    with session_scope(kb_url) as s, pytest.raises(NotFound):
        decisions.set_link_result(s, link_id=10_000, status="ok", detail={})


def test_find_by_source_matches_channel_and_ts(kb_url):
    made = _create(kb_url, "log this message", channel="C1", source_ts="1700000000.000200")
    _create(kb_url, "another message", channel="C2", source_ts="1700000000.000200")
    with session_scope(kb_url) as s:
        found = decisions.find_by_source(s, channel="C1", source_ts="1700000000.000200")
        assert found is not None
        assert found.id == made
        assert decisions.find_by_source(s, channel="C1", source_ts="1700000000.000999") is None
        assert decisions.find_by_source(s, channel="C3", source_ts="1700000000.000200") is None


def test_linked_to_groups_by_ref_newest_first(kb_url):
    older = _create(kb_url, "older on run a", links=(LinkRef("run", RUN_A),), created_at=T0)
    newer = _create(kb_url, "newer on run a", links=(LinkRef("run", RUN_A),), created_at=T0 + timedelta(days=1))
    on_b = _create(kb_url, "on run b", links=(LinkRef("run", RUN_B),), created_at=T0)
    _create(kb_url, "an experiment named like run a", links=(LinkRef("experiment", RUN_A),), created_at=T0)
    with session_scope(kb_url) as s:
        found = decisions.linked_to(s, kind="run", refs=[RUN_A, RUN_B, "0" * 32])
        assert {ref: [d.id for d in ds] for ref, ds in found.items()} == {RUN_A: [newer, older], RUN_B: [on_b]}
        assert decisions.linked_to(s, kind="run", refs=[]) == {}


def test_deleting_a_decision_cascades_to_tags_and_links_and_clears_superseded_by(kb_url):
    from sqlalchemy import func, select

    old_id = _create(kb_url, "old", tags=("a",), links=(LinkRef("run", RUN_A),))
    with session_scope(kb_url) as s:
        _, new = decisions.supersede(s, old_id=old_id, new=NewDecision(text="new", author="U1", tags=("b",)))
        new_id = new.id
    with session_scope(kb_url) as s:
        s.delete(decisions.get(s, decision_id=new_id))
    with session_scope(kb_url) as s:
        assert decisions.get(s, decision_id=old_id).superseded_by is None
        assert s.scalar(select(func.count()).select_from(decisions.DecisionTag)) == 1
        assert s.scalar(select(func.count()).select_from(decisions.DecisionLink)) == 1
