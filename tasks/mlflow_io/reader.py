"""Reading runs out of a tracking store in pages, for the run index. Two readers, one interface:

* `SqlReader`, for stores MLflow keeps in SQLite or PostgreSQL (`sqlite:///…`, `postgresql://…`):
  plain SELECTs on MLflow's own tables (`runs`, `latest_metrics`, `params`, `tags`), read-only.
  `search_runs` turns every tag, param and metric into Python entities and pages by OFFSET; for
  the index that costs ~0.5 s per 1,000 runs, where these queries take ~25 ms (docs/perf/
  experiments.md). The tables are checked once per store; if they are not the shape this code
  knows, the client reader is used instead.
* `ClientReader`, for everything else (an `mlflow server` over HTTP, Databricks): MLflow's client.

Pages are keyset pages: a build can stop after any page and resume from its cursor. The SQL
reader walks MLflow's primary key (`run_uuid`), so each page costs the same however far the build
is (ordering by start time made every page scan and sort the whole experiment: 149 s for 200k
runs); the client reader pages on (start_time, run_id). Runs created while a build runs may fall
before its cursor; the build's first sync reads every run started since the build began.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from models.run_index import RunRecord

log = logging.getLogger(__name__)

SKIPPED_TAGS = ("mlflow.log-model.history",)
IN_CHUNK = 500
RUNNING = ("RUNNING", "SCHEDULED")
Cursor = tuple[int, str]


class Reader:
    """The interface the sync uses. `running_changed` returns None when the store can't tell cheaply
    which running runs logged something new (the sync then refreshes a bounded batch per pass)."""

    ordered_by_id = False
    """Whether `page` walks run ids (the cursor's run id is the key) or (start_time, run_id)."""

    def count(self, experiment_id: str) -> int | None:
        return None

    def page(self, experiment_id: str, after: Cursor | None, size: int) -> list[RunRecord]:
        raise NotImplementedError

    def changed(self, experiment_id: str, started_since: int, ended_since: int) -> list[RunRecord]:
        raise NotImplementedError

    def running_changed(self, experiment_id: str, since_ms: int) -> list[str] | None:
        return None

    def records(self, experiment_id: str, run_ids: Sequence[str]) -> list[RunRecord]:
        raise NotImplementedError

    def deleted_ids(self, experiment_id: str) -> set[str]:
        raise NotImplementedError

    def newest(self, experiment_id: str, count: int) -> list[RunRecord]:
        raise NotImplementedError


def _value(value: Any, is_nan: Any = False) -> float | None:
    if is_nan or value is None:
        return None
    number = float(value)
    return None if number != number else number


class SqlReader(Reader):
    RUN_COLUMNS = "run_uuid, experiment_id, name, status, user_id, start_time, end_time, lifecycle_stage"

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def _query(self, sql: str, params: dict[str, Any]) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def _with_data(self, runs: list[Any]) -> list[RunRecord]:
        from sqlalchemy import bindparam, text

        records: dict[str, RunRecord] = {}
        for run_id, experiment_id, name, status, user, start, end, stage in runs:
            records[run_id] = RunRecord(
                run_id=run_id,
                experiment_id=str(experiment_id),
                name=name or "",
                status=status or "",
                user=user or "",
                start_time=int(start or 0),
                end_time=int(end) if end is not None else None,
                deleted=stage == "deleted",
            )
        ids = list(records)
        statements = {
            "metrics": text(
                "SELECT run_uuid, key, value, step, timestamp, is_nan FROM latest_metrics WHERE run_uuid IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            "params": text("SELECT run_uuid, key, value FROM params WHERE run_uuid IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            "tags": text("SELECT run_uuid, key, value FROM tags WHERE run_uuid IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
        }
        with self.engine.connect() as conn:
            for i in range(0, len(ids), IN_CHUNK):
                chunk = ids[i : i + IN_CHUNK]
                for run_id, key, value, step, ts, is_nan in conn.execute(statements["metrics"], {"ids": chunk}):
                    records[run_id].metrics[key] = (_value(value, is_nan), int(step or 0), int(ts or 0))
                for run_id, key, value in conn.execute(statements["params"], {"ids": chunk}):
                    records[run_id].params[key] = value or ""
                for run_id, key, value in conn.execute(statements["tags"], {"ids": chunk}):
                    if key not in SKIPPED_TAGS:
                        records[run_id].tags[key] = value or ""
        for record in records.values():
            record.user = record.tags.get("mlflow.user") or record.user
        return list(records.values())

    def count(self, experiment_id: str) -> int | None:
        rows = self._query(
            "SELECT COUNT(*) FROM runs WHERE experiment_id = :e AND lifecycle_stage = 'active'",
            {"e": int(experiment_id)},
        )
        return int(rows[0][0])

    def page(self, experiment_id: str, after: Cursor | None, size: int) -> list[RunRecord]:
        """The next `size` runs by run id after the cursor's run id (its start time is ignored)."""
        _start, run_id = after or (-1, "")
        runs = self._query(
            f"SELECT {self.RUN_COLUMNS} FROM runs WHERE run_uuid > :r AND experiment_id = :e "
            "AND lifecycle_stage = 'active' ORDER BY run_uuid LIMIT :n",
            {"e": int(experiment_id), "r": run_id, "n": size},
        )
        return self._with_data(runs)

    ordered_by_id = True

    def changed(self, experiment_id: str, started_since: int, ended_since: int) -> list[RunRecord]:
        runs = self._query(
            f"SELECT {self.RUN_COLUMNS} FROM runs WHERE experiment_id = :e AND lifecycle_stage = 'active' "
            "AND (start_time >= :s OR end_time >= :x)",
            {"e": int(experiment_id), "s": started_since, "x": ended_since},
        )
        return self._with_data(runs)

    def running_changed(self, experiment_id: str, since_ms: int) -> list[str] | None:
        """Running runs of the experiment with a metric value logged at or after `since_ms`: one
        grouped query, whatever the number of running runs."""
        rows = self._query(
            "SELECT r.run_uuid FROM runs r JOIN latest_metrics m ON m.run_uuid = r.run_uuid "
            "WHERE r.experiment_id = :e AND r.status IN ('RUNNING', 'SCHEDULED') AND r.lifecycle_stage = 'active' "
            "GROUP BY r.run_uuid HAVING MAX(m.timestamp) >= :s",
            {"e": int(experiment_id), "s": since_ms},
        )
        return [r[0] for r in rows]

    def records(self, experiment_id: str, run_ids: Sequence[str]) -> list[RunRecord]:
        from sqlalchemy import bindparam, text

        statement = text(f"SELECT {self.RUN_COLUMNS} FROM runs WHERE run_uuid IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        ids = list(run_ids)
        runs: list[Any] = []
        with self.engine.connect() as conn:
            for i in range(0, len(ids), IN_CHUNK):
                runs += list(conn.execute(statement, {"ids": ids[i : i + IN_CHUNK]}))
        return self._with_data(runs)

    def deleted_ids(self, experiment_id: str) -> set[str]:
        rows = self._query(
            "SELECT run_uuid FROM runs WHERE experiment_id = :e AND lifecycle_stage = 'deleted'",
            {"e": int(experiment_id)},
        )
        return {r[0] for r in rows}

    def newest(self, experiment_id: str, count: int) -> list[RunRecord]:
        runs = self._query(
            f"SELECT {self.RUN_COLUMNS} FROM runs WHERE experiment_id = :e AND lifecycle_stage = 'active' "
            "ORDER BY start_time DESC LIMIT :n",
            {"e": int(experiment_id), "n": count},
        )
        return self._with_data(runs)

    def experiments(self, *, name: str | None = None, experiment_id: str | None = None) -> list[dict[str, Any]]:
        """Active experiments (all, or the one with this name or id) with their tags, as
        `mlflow_io` describes them: a question about runs never needs MLflow imported."""
        if experiment_id is not None and not experiment_id.isdigit():
            return []  # MLflow's ids in SQL stores are integers; the client answers the same
        where, params = "lifecycle_stage = 'active'", {}
        if name is not None:
            where, params = where + " AND name = :n", {"n": name}
        elif experiment_id is not None:
            where, params = where + " AND experiment_id = :e", {"e": int(experiment_id)}
        rows = self._query(f"SELECT experiment_id, name FROM experiments WHERE {where} ORDER BY experiment_id", params)
        found = {str(e): {"experiment_id": str(e), "name": n, "tags": {}} for e, n in rows}
        if not found:
            return []
        tags = "SELECT experiment_id, key, value FROM experiment_tags"
        if len(found) == 1:
            tags, params = tags + " WHERE experiment_id = :e", {"e": int(next(iter(found)))}
        else:
            params = {}
        for experiment, key, value in self._query(tags, params):
            if str(experiment) in found:
                found[str(experiment)]["tags"][key] = value or ""
        return list(found.values())

    def find(self, prefix: str, name: str, experiment_ids: Sequence[str] | None, limit: int = 20) -> list[RunRecord]:
        """Runs whose id starts with `prefix` (when given) or whose name is `name`, any lifecycle."""
        from sqlalchemy import bindparam, text

        where = []
        params: dict[str, Any] = {"n": limit}
        if prefix:
            where.append("(run_uuid >= :lo AND run_uuid < :hi)")
            params.update(lo=prefix, hi=prefix + "g")
        if name:
            where.append("name = :name")
            params["name"] = name
        sql = f"SELECT {self.RUN_COLUMNS} FROM runs WHERE ({' OR '.join(where)})"
        statement: Any
        if experiment_ids is not None:
            sql += " AND experiment_id IN :exps"
            params["exps"] = [int(e) for e in experiment_ids]
            statement = text(sql + " LIMIT :n").bindparams(bindparam("exps", expanding=True))
        else:
            statement = text(sql + " LIMIT :n")
        with self.engine.connect() as conn:
            runs = list(conn.execute(statement, params))
        return self._with_data(runs)


class ClientReader(Reader):
    """Through MLflow's client (REST for an `mlflow server`)."""

    PAGE = 1000

    def __init__(self, client: Any, to_record: Any) -> None:
        self.client = client
        self.to_record = to_record

    def _search(self, experiment_id: str, filter_string: str, **kwargs: Any) -> list[RunRecord]:
        from mlflow.entities import ViewType

        records: list[RunRecord] = []
        token = None
        limit = kwargs.pop("max_results", None)
        while True:
            size = min(self.PAGE, limit - len(records)) if limit else self.PAGE
            page = self.client.search_runs(
                [experiment_id],
                filter_string,
                run_view_type=kwargs.get("view", ViewType.ACTIVE_ONLY),
                max_results=size,
                order_by=kwargs.get("order_by"),
                page_token=token,
            )
            records.extend(self.to_record(run) for run in page)
            token = page.token
            if not token or (limit and len(records) >= limit):
                return records

    def page(self, experiment_id: str, after: Cursor | None, size: int) -> list[RunRecord]:
        start, run_id = after or (-1, "")
        order = ["attributes.start_time ASC"]
        found = self._search(
            experiment_id, f"attributes.start_time >= {max(start, 0)}", order_by=order, max_results=size
        )
        fresh = [r for r in found if (r.start_time, r.run_id) > (start, run_id)]
        if found and not fresh and len(found) >= size:
            # more runs share one start time than a page holds: read that millisecond whole
            same = self._search(experiment_id, f"attributes.start_time = {start}")
            fresh = sorted((r for r in same if r.run_id > run_id), key=lambda r: r.run_id)
        return sorted(fresh, key=lambda r: (r.start_time, r.run_id))

    def changed(self, experiment_id: str, started_since: int, ended_since: int) -> list[RunRecord]:
        found = {r.run_id: r for r in self._search(experiment_id, f"attributes.start_time >= {started_since}")}
        for r in self._search(experiment_id, f"attributes.end_time >= {ended_since}"):
            found[r.run_id] = r
        return list(found.values())

    def records(self, experiment_id: str, run_ids: Sequence[str]) -> list[RunRecord]:
        records: list[RunRecord] = []
        ids = list(run_ids)
        for i in range(0, len(ids), 100):
            quoted = ", ".join(f"'{r}'" for r in ids[i : i + 100])
            records.extend(self._search(experiment_id, f"attributes.run_id IN ({quoted})"))
        return records

    def deleted_ids(self, experiment_id: str) -> set[str]:
        from mlflow.entities import ViewType

        return {r.run_id for r in self._search(experiment_id, "", view=ViewType.DELETED_ONLY)}

    def newest(self, experiment_id: str, count: int) -> list[RunRecord]:
        return self._search(experiment_id, "", max_results=count)


MLFLOW_TABLES = {
    "runs": {"run_uuid", "experiment_id", "name", "status", "user_id", "start_time", "end_time", "lifecycle_stage"},
    "latest_metrics": {"run_uuid", "key", "value", "step", "timestamp", "is_nan"},
    "params": {"run_uuid", "key", "value"},
    "tags": {"run_uuid", "key", "value"},
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "experiment_tags": {"experiment_id", "key", "value"},
}


@lru_cache(maxsize=4)
def sql_engine(tracking_uri: str) -> Any | None:
    """An engine on the store's own database, or None when the store isn't one we read directly."""
    if tracking_uri.startswith("sqlite:///"):
        from sqlalchemy import create_engine

        engine = create_engine(tracking_uri, connect_args={"timeout": 30})
    elif tracking_uri.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        from sqlalchemy import create_engine

        url = "postgresql+psycopg://" + tracking_uri.split("://", 1)[1]
        engine = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    else:
        return None
    try:
        from sqlalchemy import inspect

        inspector = inspect(engine)
        for table, columns in MLFLOW_TABLES.items():
            have = {c["name"] for c in inspector.get_columns(table)}
            if not columns <= have:
                log.warning("MLflow's table %s lacks %s; reading through the client", table, columns - have)
                return None
    except Exception:
        log.warning("could not inspect the MLflow store's tables; reading through the client", exc_info=True)
        return None
    return engine
