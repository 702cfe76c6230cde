"""Benchmark `models.search.search` against a plain LIKE scan, on SQLite (FTS5) and PostgreSQL (tsvector + GIN).

    .venv/bin/python bench/bench_search.py                 # 1,000,000 decisions, both databases
    .venv/bin/python bench/bench_search.py --quick         # 50,000 decisions
    .venv/bin/python bench/bench_search.py --size 200000 --only sqlite

The SQLite file goes under /tmp (kept with --keep), the PostgreSQL data into a fresh schema of
LABMATE_TEST_POSTGRES_URL's database that is dropped at the end. See docs/perf/search.md.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from models import search as search_service
from models.db import engine_for, session_scope, upgrade

POSTGRES_URL = os.environ.get("LABMATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SEED = 20261129
BATCH = 50_000
NOW = datetime(2026, 11, 1, tzinfo=UTC)
SPAN_DAYS = 3 * 365

MODELS = [
    "bert-base", "roberta-large", "distilbert", "deberta-v3", "xgboost", "lightgbm", "catboost", "resnet50",
    "efficientnet-b3", "vit-small", "llama-7b", "mistral-7b", "t5-small", "gpt2", "sales-agent", "ranker",
    "retriever", "reranker", "churn-model", "fraud-detector", "logreg", "random-forest", "unet", "yolov8",
    "whisper-small", "clip", "sbert", "bm25-baseline", "two-tower", "wide-and-deep",
]
METRICS = [
    "val_f1", "val_loss", "accuracy", "precision", "recall", "auc", "roc_auc", "pr_auc", "ndcg", "mrr", "map",
    "bleu", "rouge", "perplexity", "latency", "p95_latency", "throughput", "calibration", "ece", "rmse", "mae",
    "mape", "log_loss", "top5_accuracy", "coverage", "hit_rate", "wer", "cer", "iou", "dice",
]
FEATURES = [
    "bigram", "trigram", "tfidf", "embedding", "user_age", "session_length", "click_rate", "price", "category",
    "country", "device", "hour_of_day", "day_of_week", "recency", "frequency", "monetary", "text_length",
    "sentiment", "topic", "query_length", "dwell_time", "position", "brand", "seller_rating", "discount",
]
VERBS = [
    "ship", "drop", "keep", "revert", "roll back", "promote", "retrain", "freeze", "deprecate", "adopt", "pin",
    "switch to", "pause", "extend", "fine-tune", "distill", "quantize", "prune", "ablate", "replace",
]
REASONS = [
    "because", "since", "as", "given that", "after we saw that", "now that", "even though", "although",
]
OUTCOMES = [
    "improved", "regressed", "stayed flat on", "overfit on", "leaked into", "dominated", "hurt", "helped",
    "stabilised", "degraded", "matched", "beat",
]
DATASETS = [
    "the holdout set", "the golden set", "last week's traffic", "the eval suite", "the shadow run", "the A/B test",
    "the canary", "the backfill", "the offline replay", "the red-team set", "the long-tail slice", "the EU slice",
]
TAGS = [
    "release", "features", "eval", "infra", "data", "labels", "serving", "training", "cost", "safety", "nlp",
    "vision", "ranking", "fraud", "churn", "ab-test", "rollback", "p0", "latency", "privacy", "gpu", "budget",
    "hiring", "docs", "oncall", "quality", "drift", "bias", "fairness", "retrieval",
]
SYLLABLES = [
    "ka", "lo", "mi", "ne", "tor", "vex", "qua", "zen", "dri", "pol", "mar", "sil", "ten", "ric", "bal", "dor",
    "fen", "gri", "hul", "jas", "ket", "lum", "nox", "pry", "sar", "tul", "urb", "vol", "wex", "yar",
]


def vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    """Project jargon: a few thousand pseudo-words (dataset, team, service and run nicknames)."""
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


@dataclass(frozen=True)
class Corpus:
    jargon: list[str]
    jargon_weights: list[float]
    authors: list[str]


def make_corpus(rng: random.Random) -> Corpus:
    jargon = vocabulary(rng)
    rng.shuffle(jargon)
    weights = [1.0 / (rank + 1) ** 1.07 for rank in range(len(jargon))]  # Zipf: few common, many rare
    authors = [f"U{rng.randrange(16**8):08X}" for _ in range(200)]
    return Corpus(jargon, weights, authors)


def sentence(rng: random.Random, corpus: Corpus) -> str:
    jargon = rng.choices(corpus.jargon, corpus.jargon_weights, k=rng.randint(1, 4))
    model = rng.choice(MODELS)
    parts = [
        f"{rng.choice(VERBS)} {model} v{rng.randint(1, 40)}",
        f"{rng.choice(REASONS)} {rng.choice(METRICS)} {rng.choice(OUTCOMES)} {rng.choice(DATASETS)}",
        f"by {rng.uniform(0.1, 9.9):.1f} pts",
    ]
    if rng.random() < 0.6:
        parts.append(f"and the {rng.choice(FEATURES)} features {rng.choice(OUTCOMES)} the {jargon[0]} pipeline")
    if rng.random() < 0.5:
        parts.append(f"see {' '.join(jargon[1:]) or jargon[0]} notes from {rng.choice(['dana', 'li', 'sam', 'ana', 'kofi'])}")
    if rng.random() < 0.3:
        parts.append(f"compare with {rng.choice(MODELS)} on {rng.choice(METRICS)}")
    return ", ".join(parts)


Row = tuple[int, str, str, str, datetime]


def rows(count: int, corpus: Corpus, seed: int) -> Iterator[tuple[Row, list[str]]]:
    rng = random.Random(seed)
    for i in range(1, count + 1):
        # Logged in order over three years, as a real log is (ids and times rise together).
        created = NOW - timedelta(seconds=SPAN_DAYS * 86400 * (count - i) / count + rng.randrange(3600))
        tags = rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3)))
        yield (i, sentence(rng, corpus), rng.choice(corpus.authors), "C0LAB", created), tags


def batches(count: int, corpus: Corpus) -> Iterator[tuple[list[Row], list[tuple[int, str]]]]:
    decisions: list[Row] = []
    tags: list[tuple[int, str]] = []
    for row, row_tags in rows(count, corpus, SEED):
        decisions.append(row)
        tags.extend((row[0], t) for t in row_tags)
        if len(decisions) >= BATCH:
            yield decisions, tags
            decisions, tags = [], []
    if decisions:
        yield decisions, tags


def sqlite_stamp(value: datetime) -> str:
    """The format SQLAlchemy's SQLite DateTime stores (so ORM reads and `since` filters agree)."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def load_sqlite(path: Path, count: int, corpus: Corpus) -> str:
    """Migrate, then bulk insert with the FTS insert trigger off and rebuild the FTS index once."""
    url = f"sqlite:///{path}"
    upgrade(url)
    engine_for(url).dispose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    trigger_sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='trigger' AND name='decisions_ai'").fetchone()[0]
    conn.execute("DROP TRIGGER decisions_ai")
    for decisions, tags in batches(count, corpus):
        with conn:
            conn.executemany(
                "INSERT INTO decisions (id, text, author, channel, created_at) VALUES (?, ?, ?, ?, ?)",
                [(i, t, a, c, sqlite_stamp(ts)) for i, t, a, c, ts in decisions],
            )
            conn.executemany("INSERT INTO decision_tags (decision_id, tag) VALUES (?, ?)", tags)
    with conn:
        conn.execute("INSERT INTO decisions_fts(decisions_fts) VALUES('rebuild')")
        conn.execute(trigger_sql)
    conn.execute("INSERT INTO decisions_fts(decisions_fts) VALUES('optimize')")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    return url


def load_postgres(base: str, schema: str, count: int, corpus: Corpus) -> str:
    """Migrate a fresh schema, COPY the rows in with the GIN index dropped, then build it once."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}?options=-csearch_path%3D{schema}"
    upgrade(url)
    with psycopg.connect(base, options=f"-csearch_path={schema}") as conn:
        index_sql = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'ix_decisions_search'", (schema,)
        ).fetchone()
        conn.execute("DROP INDEX IF EXISTS ix_decisions_search")
        conn.execute("SET LOCAL synchronous_commit = off")
        for decisions, tags in batches(count, corpus):
            with conn.cursor().copy("COPY decisions (id, text, author, channel, created_at) FROM STDIN") as copy:
                for row in decisions:
                    copy.write_row(row)
            with conn.cursor().copy("COPY decision_tags (decision_id, tag) FROM STDIN") as copy:
                for tag_row in tags:
                    copy.write_row(tag_row)
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        if index_sql:
            conn.execute(index_sql[0])
        conn.execute("SELECT setval(pg_get_serial_sequence('decisions', 'id'), (SELECT max(id) FROM decisions))")
        conn.commit()
    with psycopg.connect(base, options=f"-csearch_path={schema}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE decisions")
        conn.execute("VACUUM ANALYZE decision_tags")
    return url


@dataclass(frozen=True)
class Query:
    text: str
    filters: search_service.Filters
    kind: str


def make_queries(corpus: Corpus, count: int = 200) -> list[Query]:
    """1-3 words: common domain words, mid-frequency and rare jargon; a quarter with filters."""
    rng = random.Random(SEED + 1)
    common = [*METRICS, *FEATURES, *[m.split("-")[0] for m in MODELS], "overfit", "regressed", "holdout", "canary"]
    mid = corpus.jargon[20:300]
    rare = corpus.jargon[1500:]
    queries: list[Query] = []
    for i in range(count):
        pick = rng.random()
        n = rng.choice((1, 1, 2, 2, 3))
        if pick < 0.4:
            words, kind = rng.sample(common, n), "common"
        elif pick < 0.75:
            words, kind = [rng.choice(mid), *rng.sample(common, n - 1)], "mid"
        else:
            words, kind = [rng.choice(rare), *rng.sample(mid + common, n - 1)], "rare"
        filters = search_service.Filters()
        if i % 4 == 0:
            choice = rng.random()
            if choice < 0.4:
                filters = search_service.Filters(tags=(rng.choice(TAGS),))
            elif choice < 0.7:
                filters = search_service.Filters(author=rng.choice(corpus.authors))
            else:
                filters = search_service.Filters(since=NOW - timedelta(days=rng.choice((7, 30, 90))))
            kind += "+filter"
        queries.append(Query(" ".join(w.replace("_", " ") if rng.random() < 0.2 else w for w in words), filters, kind))
    return queries


def like_search(url: str, query: Query, limit: int = 10) -> list[int]:
    """The baseline: every word as `text LIKE '%word%'` (ILIKE on PostgreSQL), newest first."""
    postgres = url.startswith("postgresql")
    op = "ILIKE" if postgres else "LIKE"
    params: dict[str, object] = {"limit": limit}
    clauses = []
    for i, word in enumerate(query.text.split()):
        clauses.append(f"d.text {op} :w{i}")
        params[f"w{i}"] = f"%{word}%"
    f = query.filters
    if f.author:
        clauses.append("d.author = :author")
        params["author"] = f.author
    if f.since:
        clauses.append("d.created_at >= :since")
        params["since"] = f.since if postgres else sqlite_stamp(f.since)
    for i, tag in enumerate(f.tags):
        clauses.append(f"EXISTS (SELECT 1 FROM decision_tags t{i} WHERE t{i}.decision_id = d.id AND t{i}.tag = :tag{i})")
        params[f"tag{i}"] = tag
    sql = f"SELECT d.id FROM decisions d WHERE {' AND '.join(clauses)} ORDER BY d.created_at DESC, d.id DESC LIMIT :limit"
    with session_scope(url) as session:
        return [int(r[0]) for r in session.execute(text(sql), params)]


def fts_search(url: str, query: Query) -> list[int]:
    with session_scope(url) as session:
        return [h.decision.id for h in search_service.search(session, query=query.text, filters=query.filters)]


def timed(fn: Callable[[str, Query], list[int]], url: str, queries: list[Query]) -> tuple[list[float], list[int]]:
    times, found = [], []
    for q in queries:
        started = perf_counter()
        ids = fn(url, q)
        times.append((perf_counter() - started) * 1000)
        found.append(len(ids))
    return times, found


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def report(name: str, url: str, queries: list[Query], like_queries: int) -> None:
    timed(fts_search, url, queries[:20])  # warm the cache and the connection pool
    fts_times, fts_found = timed(fts_search, url, queries)
    like_subset = queries[:like_queries]
    like_times, _ = timed(like_search, url, like_subset)
    print(f"\n== {name}: {len(queries)} queries (LIKE baseline on the first {len(like_subset)})")
    print(f"   search  median {statistics.median(fts_times):8.2f} ms   p95 {p95(fts_times):8.2f} ms   "
          f"max {max(fts_times):8.2f} ms   queries with hits {sum(1 for n in fts_found if n)}/{len(queries)}")
    print(f"   LIKE    median {statistics.median(like_times):8.2f} ms   p95 {p95(like_times):8.2f} ms   "
          f"max {max(like_times):8.2f} ms")
    by_kind: dict[str, list[float]] = {}
    for q, t in zip(queries, fts_times, strict=True):
        by_kind.setdefault(q.kind, []).append(t)
    for kind, values in sorted(by_kind.items()):
        print(f"   search {kind:<14} n={len(values):3d}  median {statistics.median(values):8.2f} ms  p95 {p95(values):8.2f} ms")
    slowest = sorted(zip(fts_times, queries, strict=True), key=lambda x: -x[0])[:5]
    for t, q in slowest:
        print(f"   slow: {t:8.2f} ms  {q.text!r} {q.filters}")


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="decisions to load (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="50,000 decisions")
    parser.add_argument("--queries", type=int, default=200, help="queries in the mix (default 200)")
    parser.add_argument("--like-queries", type=int, default=200, help="how many of them also run as LIKE (slow)")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="benchmark one database")
    parser.add_argument("--candidates", type=int, help="rank only the newest N matches (default: every match, a top-10 of the whole log)")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file and the PostgreSQL schema")
    args = parser.parse_args(argv)
    size = 50_000 if args.quick else args.size
    if args.candidates is not None:
        search_service.CANDIDATES = args.candidates
    rng = random.Random(SEED)
    corpus = make_corpus(rng)
    queries = make_queries(corpus, args.queries)
    cap = search_service.CANDIDATES
    print("ranking every match (top 10 of the whole log)" if cap is None else f"ranking the newest {cap:,} matches")
    print(f"{size:,} decisions, {len(corpus.jargon):,} jargon words + {len(MODELS) + len(METRICS) + len(FEATURES)} "
          f"model/metric/feature names, {len(queries)} queries")

    if args.only in (None, "sqlite"):
        path = Path(tempfile.gettempdir()) / f"labmate-bench-{size}-{uuid.uuid4().hex[:6]}.db"
        started = perf_counter()
        url = load_sqlite(path, size, corpus)
        print(f"SQLite: loaded into {path} in {perf_counter() - started:.1f} s "
              f"({path.stat().st_size / 1e6:.0f} MB)")
        try:
            report("SQLite FTS5", url, queries, args.like_queries)
        finally:
            engine_for(url).dispose()
            if not args.keep:
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)

    if args.only in (None, "postgres"):
        schema = "bench_" + uuid.uuid4().hex[:8]
        started = perf_counter()
        url = ""
        try:
            url = load_postgres(POSTGRES_URL, schema, size, corpus)
            print(f"PostgreSQL: loaded into schema {schema} in {perf_counter() - started:.1f} s")
            report("PostgreSQL tsvector/GIN", url, queries, args.like_queries)
        finally:
            if url:
                engine_for(url).dispose()
            if not args.keep:
                import psycopg

                with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                    admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

