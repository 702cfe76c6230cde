"""Big MLflow stores for the benchmarks, on SQLite or PostgreSQL, made fast and read back by MLflow.

MLflow creates its own schema (`MlflowClient(...).create_experiment` runs its migrations); the runs
are then bulk-inserted into MLflow's tables -- the rows `log_batch` writes: `runs`, `tags`
(`mlflow.user`, `mlflow.runName`, `mlflow.parentRunId` for nested runs), `params`, `metrics` (the
history) and `latest_metrics` -- in streamed batches (executemany on SQLite, COPY on PostgreSQL),
so 200,000 runs take a minute instead of hours through the client.

The mix is the hard case the issue names: 5 % RUNNING (no end time), 5 % FAILED (one step), the
rest FINISHED; every 50th run is a grid-search parent whose next 10 runs are its children.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

STEPS = 5
USERS = ("dana", "sam", "lee", "kim")
BATCH = 5_000
RUN_COLUMNS = (
    "run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status", "start_time",
    "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri", "experiment_id",
)  # fmt: skip


@dataclass
class Rows:
    runs: list[tuple] = field(default_factory=list)
    tags: list[tuple] = field(default_factory=list)
    params: list[tuple] = field(default_factory=list)
    metrics: list[tuple] = field(default_factory=list)
    latest: list[tuple] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def generate(
    experiment_id: str, count: int, *, start_ms: int, seed: int, running: float = 0.05, spacing_ms: int = 1_000
) -> Iterator[Rows]:
    """Rows for `count` runs in batches of BATCH runs (never all at once)."""
    rng = random.Random(seed)
    parent: str | None = None
    rows = Rows()
    for i in range(count):
        run_id = uuid.uuid4().hex
        start = start_ms + i * spacing_ms
        roll = rng.random()
        status = "RUNNING" if roll < running else "FAILED" if roll < running + 0.05 else "FINISHED"
        user = rng.choice(USERS)
        end = None if status == "RUNNING" else start + 900
        rows.runs.append(
            (run_id, f"run-{i}", "LOCAL", "bench", "", user, status, start, end, None, "", "active",
             f"/tmp/artifacts/{run_id}", int(experiment_id))
        )  # fmt: skip
        rows.tags += [("mlflow.user", user, run_id), ("mlflow.runName", f"run-{i}", run_id)]
        if i % 50 == 0:
            parent = run_id
        elif parent is not None and i % 50 <= 10:
            rows.tags.append(("mlflow.parentRunId", parent, run_id))
        alpha = rng.choice((1e-2, 1e-3, 1e-4, 3e-5))
        rows.params += [
            ("alpha", str(alpha), run_id),
            ("epochs", "5", run_id),
            ("ngram_max", str(rng.randint(1, 3)), run_id),
            ("seed", str(rng.randint(1, 5)), run_id),
        ]
        quality = rng.random()
        steps = 1 if status == "FAILED" else STEPS
        for step in range(1, steps + 1):
            ts = start + step * 100
            f1 = round(quality * step / STEPS, 6)
            values = {"train_loss": round(1 - f1, 6), "val_f1": f1, "val_accuracy": round(min(1.0, f1 + 0.05), 6)}
            for key, value in values.items():
                rows.metrics.append((key, value, ts, run_id, step, False))
                if step == steps:
                    rows.latest.append((key, value, ts, step, False, run_id))
        rows.ids.append(run_id)
        if len(rows.runs) >= BATCH:
            yield rows
            rows = Rows()
    if rows.runs:
        yield rows


def create_experiment(uri: str, name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=f"/tmp/artifacts/{name}")


def _sql_url(uri: str) -> str:
    return "postgresql://" + uri.split("://", 1)[1] if uri.startswith("postgresql") else uri


def insert(uri: str, experiment_id: str, count: int, *, start_ms: int | None = None, seed: int = 1,
           running: float = 0.05, spacing_ms: int = 1_000) -> list[str]:  # fmt: skip
    """Bulk-insert `count` runs into the experiment; returns their ids."""
    start_ms = start_ms if start_ms is not None else int(time.time() * 1000) - count * 1_000
    ids: list[str] = []
    batches = generate(experiment_id, count, start_ms=start_ms, seed=seed, running=running, spacing_ms=spacing_ms)
    if uri.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(uri.split("///", 1)[1]) as conn:
            conn.execute("PRAGMA synchronous=OFF")
            for rows in batches:
                conn.executemany(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({','.join('?' * 14)})", rows.runs)
                conn.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", rows.tags)
                conn.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", rows.params)
                conn.executemany(
                    "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                    rows.metrics,
                )
                conn.executemany(
                    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)",
                    rows.latest,
                )
                ids += rows.ids
            conn.execute("ANALYZE")
        return ids
    import psycopg

    with psycopg.connect(_sql_url(uri)) as conn:
        for rows in batches:
            with conn.cursor() as cur:
                for table, columns, data in (
                    ("runs", RUN_COLUMNS, rows.runs),
                    ("tags", ("key", "value", "run_uuid"), rows.tags),
                    ("params", ("key", "value", "run_uuid"), rows.params),
                    ("metrics", ("key", "value", "timestamp", "run_uuid", "step", "is_nan"), rows.metrics),
                    ("latest_metrics", ("key", "value", "timestamp", "step", "is_nan", "run_uuid"), rows.latest),
                ):
                    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in data:
                            copy.write_row(row)
            conn.commit()
            ids += rows.ids
        conn.autocommit = True
        conn.execute("ANALYZE")
    return ids


def postgres_database(admin_url: str, name: str) -> str:
    """A fresh PostgreSQL database for an MLflow store (dropped by `drop_postgres_database`)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_postgres_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
