"""find and runs: conditions checked against the experiment's names, answered from the run index.

`find` shows the equivalent MLflow filter (to paste into the MLflow UI) but runs on the index, so
a param condition is an index range scan instead of MLflow's text comparison over every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from labmate.errors import NotFoundError, UsageError
from labmate.when import window_start
from models import run_index
from models.db import reading, session_scope
from tasks.experiments import first, resolve, views
from tasks.experiments.sync import Experiment, counts, ensure_fresh
from tasks.jobs import Replies

ATTRIBUTES = {
    "status": "status",
    "run_name": "run_name",
    "name": "run_name",
    "run_id": "run_id",
    "user": "user_id",
    "user_id": "user_id",
    "start_time": "start_time",
    "end_time": "end_time",
}
PREFIXES = {
    "metrics": "metrics",
    "metric": "metrics",
    "params": "params",
    "param": "params",
    "tags": "tags",
    "tag": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
}
TIMES = ("start_time", "end_time")
NUMERIC_ONLY = {"metrics", *TIMES}
Interim = Callable[[str, dict[str, Any]], None] | None


@dataclass(frozen=True)
class Names:
    metrics: set[str]
    params: set[str]
    tags: set[str]


@dataclass(frozen=True)
class Resolved:
    kind: str  # metrics, params, tags, attributes
    key: str
    op: str
    value: str
    numeric: bool
    shown: str = ""  # the value as typed, when it is not `value` (a date for a time in milliseconds)

    @property
    def mlflow(self) -> str:
        """The MLflow filter clause, or "" when MLflow can't evaluate it (numeric params)."""
        if self.kind == "params" and self.numeric and self.op not in ("=", "!="):
            return ""
        value = self.value if self.kind == "metrics" or self.key in TIMES else f"'{self.value}'"
        if self.kind == "attributes" and self.key == "status":
            value = f"'{self.value.upper()}'"
        return f"{self.kind}.`{self.key}` {self.op} {value}"

    @property
    def clause(self) -> run_index.Clause:
        return run_index.Clause(self.kind, self.key, self.op, self.value, self.numeric)

    def text(self) -> str:
        return f"{self.key} {self.op} {self.shown or self.value}"


def names(experiment: Experiment) -> Names:
    with session_scope() as session:
        eid, store = experiment.experiment_id, experiment.store
        return Names(
            set(run_index.metric_keys(session, store, eid)),
            set(run_index.param_keys(session, store, eid)),
            set(run_index.tag_keys(session, store, eid)),
        )


def resolve_condition(condition: Any, known: Names, experiment: str) -> Resolved:
    prefix, dot, rest = condition["name"].partition(".")
    kind = PREFIXES.get(prefix.lower()) if dot else None
    name = rest if kind else condition["name"]
    pools = {"metrics": known.metrics, "params": known.params, "tags": known.tags, "attributes": set(ATTRIBUTES)}
    if kind is None:
        kind = next((k for k, pool in pools.items() if name in pool), None)
    if kind is None or name not in pools[kind]:
        everything = set().union(*pools.values()) if kind is None else pools[kind]
        found = resolve.closest(name, everything)
        suggestion = " Did you mean " + " or ".join(f"`{f}`" for f in found) + "?" if found else ""
        raise NotFoundError(
            f"`{experiment}` has no metric, param, tag or attribute `{name}`.{suggestion}",
            hint=f"Metrics: {', '.join(sorted(known.metrics)[:8]) or 'none'}; params: "
            f"{', '.join(sorted(known.params)[:8]) or 'none'}.",
        )
    key = ATTRIBUTES[name] if kind == "attributes" else name
    op, value, numeric = condition["op"], condition["value"], condition["numeric"]
    shown = ""
    if kind == "attributes" and key in TIMES and not numeric:
        shown, value, numeric = value, _epoch_ms(name, value), True
    if (kind == "metrics" or key in NUMERIC_ONLY) and not numeric:
        raise UsageError(
            f"`{name}` is a number; compare it to a number, not `{value}`.", hint=f"e.g. `where {name} > 0.8`"
        )
    if kind == "metrics" and op == "LIKE":
        raise UsageError(f"`like` compares text; `{name}` is a metric.", hint=f"e.g. `where {name} >= 0.8`")
    if kind in ("tags", "attributes") and key not in NUMERIC_ONLY and op in ("<", "<=", ">", ">="):
        raise UsageError(f"`{name}` is text; compare it with `=`, `!=` or `like`.", hint=f"e.g. `where {name} = value`")
    return Resolved(kind, key, op, value, numeric, shown)


def _epoch_ms(name: str, value: str) -> str:
    """A date or a date and time, in UTC unless it names its zone -> MLflow's milliseconds since 1970."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"`{name}` is a time: compare it to a date, or a date and time in UTC (`2026-11-01`, "
            f"`2026-11-01T09:30`), or to milliseconds since 1970; not `{value}`.",
            hint=f"e.g. `where {name} > 2026-11-01`",
        ) from None
    return str(int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000))


def find(
    experiment_name: str,
    conditions: list[dict[str, Any]],
    order_by: str | None,
    ascending: bool | None,
    limit: int,
    understood: str = "",
    interim: Interim = None,
) -> Replies:
    experiment = resolve.experiment(experiment_name)
    return first.answer(
        experiment,
        lambda: find_final(experiment, conditions, order_by, ascending, limit, understood),
        None,
        interim,
        understood,
    )


def find_final(
    experiment: Experiment,
    conditions: list[dict[str, Any]],
    order_by: str | None,
    ascending: bool | None,
    limit: int,
    understood: str = "",
) -> Replies:
    ensure_fresh(experiment)
    with reading():
        return _find(experiment, conditions, order_by, ascending, limit, understood)


def _find(
    experiment: Experiment,
    conditions: list[dict[str, Any]],
    order_by: str | None,
    ascending: bool | None,
    limit: int,
    understood: str,
) -> Replies:
    known = names(experiment)
    resolved = [resolve_condition(c, known, experiment.name) for c in conditions]
    order = ""
    metric = None
    asc = False
    if order_by:
        metric = resolve.metric(order_by.removeprefix("metrics."), known.metrics, experiment.name)
        asc = resolve.direction(experiment, metric, ascending).ascending
        order = f"metrics.`{metric}` {'ASC' if asc else 'DESC'}"
    clauses = [r.mlflow for r in resolved if r.mlflow]
    local = [r for r in resolved if not r.mlflow]
    with session_scope() as session:
        found, total = run_index.find_runs(
            session,
            experiment.store,
            experiment_id=experiment.experiment_id,
            clauses=[r.clause for r in resolved],
            order_metric=metric,
            ascending=asc,
            limit=limit,
        )
        ids = [r.run_id for r in found]
        metrics = run_index.metrics_of(session, experiment.store, ids)
        groups = run_index.names_of(session, experiment.store, [r.parent_run_id or "" for r in found])
    rows = []
    for row in found:
        view = views.run_view(row, experiment.experiment_id, groups)
        keys = sorted(metrics[row.run_id], key=lambda k: (k != metric, k))[:3]
        view["metrics"] = [{"key": k, "value": views.fmt(metrics[row.run_id][k])} for k in keys]
        rows.append(view)
    views.attach_decisions(rows)
    return [
        (
            "exp_runs",
            {
                "title": f"Runs in {experiment.name}",
                "understood": understood,
                "query": " and ".join(r.text() for r in resolved) or "all runs",
                "mlflow_filter": " and ".join(clauses),
                "local_filter": " and ".join(r.text() for r in local),
                "order": order,
                "runs": rows,
                "total": total,
            },
        )
    ]


def runs(
    experiment_name: str,
    status: str | None,
    since_ms: int | None,
    user: str | None,
    tags: list[list[str]],
    understood: str = "",
    interim: Interim = None,
) -> Replies:
    experiment = resolve.experiment(experiment_name)
    return first.answer(
        experiment,
        lambda: runs_final(experiment, status, since_ms, user, tags, understood),
        None,
        interim,
        understood,
    )


def runs_final(
    experiment: Experiment,
    status: str | None,
    since_ms: int | None,
    user: str | None,
    tags: list[list[str]],
    understood: str = "",
) -> Replies:
    ensure_fresh(experiment)
    with reading():
        return _runs(experiment, status, since_ms, user, tags, understood)


def _runs(
    experiment: Experiment,
    status: str | None,
    since_ms: int | None,
    user: str | None,
    tags: list[list[str]],
    understood: str,
) -> Replies:
    if not counts(experiment):
        raise NotFoundError(f"Experiment `{experiment.name}` has no runs yet.")
    with session_scope() as session:
        eid, store = experiment.experiment_id, experiment.store
        found, total = run_index.list_runs(
            session,
            store,
            experiment_id=eid,
            status=status,
            since=since_ms,
            user=user,
            tags=[(k, v) for k, v in tags],
        )
        metrics = run_index.metrics_of(session, store, [r.run_id for r in found])
        groups = run_index.names_of(session, store, [r.parent_run_id or "" for r in found])
    rows = []
    for row in found:
        view = views.run_view(row, eid, groups)
        view["metrics"] = [{"key": k, "value": views.fmt(v)} for k, v in sorted(metrics[row.run_id].items())[:3]]
        rows.append(view)
    views.attach_decisions(rows)
    parts = [f"status {status.lower()}" if status else "", f"by {user}" if user else ""]
    parts += [f"since {window_start(views.when(since_ms))}" if since_ms else ""]
    parts += [f"tag {k}={v}" for k, v in tags]
    return [
        (
            "exp_runs",
            {
                "title": f"Runs in {experiment.name}",
                "understood": understood,
                "query": ", ".join(p for p in parts if p) or "all runs",
                "mlflow_filter": "",
                "local_filter": "",
                "order": "",
                "runs": rows,
                "total": total,
            },
        )
    ]
