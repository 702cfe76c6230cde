from models import search
from models.db import session_scope
from models.decision import NewDecision, create


def _roundtrip(url: str) -> None:
    with session_scope(url) as s:
        create(s, new=NewDecision(text="drop bigram features, they overfit", author="U1", tags=("features",)))
        create(s, new=NewDecision(text="ship the candidate", author="U2"))
    with session_scope(url) as s:
        hits = search.search(s, query="bigram overfit")
        assert [h.decision.text for h in hits] == ["drop bigram features, they overfit"]
        assert search.search(s, query="ship", filters=search.Filters(tags=("features",))) == []


def test_sqlite_search_roundtrip(migrated):
    _roundtrip(migrated)


def test_postgres_search_roundtrip(postgres_url):
    _roundtrip(postgres_url)
