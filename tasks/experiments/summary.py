"""summary and best: ranked runs from the run index, the best run's gain, the history chart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from labmate.errors import NotFoundError
from labmate.settings import get_settings
from models import run_index
from models.db import session_scope
from tasks import mlflow_io
from tasks.experiments import charts, resolve, views
from tasks.experiments.sync import Experiment, ensure_fresh
from tasks.jobs import Replies

STATUS_ORDER = ("FINISHED", "RUNNING", "SCHEDULED", "FAILED", "KILLED")
KEY_METRICS = 3


def primary_metric(experiment: Experiment, keys: dict[str, int]) -> str:
    """labmate.toml's primary metric for the experiment, else its MLflow tag `labmate.primary_metric`,
    else the first metric its runs logged."""
    configured = get_settings().primary_metrics.get(experiment.name) or experiment.primary_metric
    if configured:
        return configured
    return min(keys, key=lambda k: (keys[k], k))


def varying_params(params: dict[str, dict[str, str]]) -> list[str]:
    keys = sorted({k for p in params.values() for k in p})
    return [k for k in keys if len({p.get(k) for p in params.values()}) > 1]


def key_metrics(metric: str, keys: dict[str, int]) -> list[str]:
    others = sorted(k for k in keys if k != metric)
    return [metric, *others][:KEY_METRICS]


def _ranked(
    experiment: Experiment, metric_word: str | None, limit: int, since_ms: int | None
) -> tuple[dict[str, int], dict[str, int], str, bool, list[tuple[run_index.RunRow, float]]]:
    ensure_fresh(experiment)
    with session_scope() as session:
        counts = run_index.counts_by_status(session, experiment.experiment_id)
        if not counts:
            raise NotFoundError(
                f"Experiment `{experiment.name}` has no runs yet.",
                hint="Runs show up here within a minute of being logged to MLflow.",
            )
        keys = run_index.metric_keys(session, experiment.experiment_id)
        if not keys:
            raise NotFoundError(
                f"Experiment `{experiment.name}` has {sum(counts.values())} run(s), but none logged a metric."
            )
        metric = resolve.metric(metric_word or primary_metric(experiment, keys), keys, experiment.name)
        ascending = resolve.lower_is_better(metric)
        ranked = run_index.top_runs(
            session,
            experiment_id=experiment.experiment_id,
            metric=metric,
            limit=limit,
            ascending=ascending,
            since=since_ms,
        )
    return counts, keys, metric, ascending, ranked


def _table(
    experiment: Experiment, ranked: list[tuple[run_index.RunRow, float]], metric: str, keys: dict[str, int]
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    ids = [row.run_id for row, _ in ranked]
    with session_scope() as session:
        params = run_index.params_of(session, ids)
        metrics = run_index.metrics_of(session, ids)
    varying = varying_params(params)
    shown_metrics = key_metrics(metric, keys)
    rows = []
    for row, _value in ranked:
        view = views.run_view(row, experiment.experiment_id)
        view["params"] = [{"key": k, "value": params[row.run_id].get(k, "–")} for k in varying]
        view["metrics"] = [{"key": k, "value": views.fmt(metrics[row.run_id].get(k))} for k in shown_metrics]
        rows.append(view)
    views.attach_decisions(rows)
    return rows, varying, shown_metrics


def _gain(experiment: Experiment, best: run_index.RunRow, value: float, metric: str, ascending: bool) -> dict[str, Any]:
    """The best run against the best of the runs that finished before it."""
    before = best.end_time or int(datetime.now(UTC).timestamp() * 1000)
    with session_scope() as session:
        previous = run_index.top_runs(
            session,
            experiment_id=experiment.experiment_id,
            metric=metric,
            limit=1,
            ascending=ascending,
            finished_before=before,
        )
    if not previous:
        return {"previous": None}
    prev_row, prev_value = previous[0]
    delta = value - prev_value
    better = delta < 0 if ascending else delta > 0
    return {
        "previous": prev_row.name or prev_row.run_id[:8],
        "previous_value": views.fmt(prev_value),
        "delta": views.signed(delta),
        "better": better,
    }


def _chart(experiment: Experiment, rows: list[dict[str, Any]], metric: str, kind: str) -> list[dict[str, str]]:
    ids = [row["run_id"] for row in rows]
    with session_scope() as session:
        steps = run_index.max_steps(session, ids, metric)
    histories = mlflow_io.metric_histories(ids, metric, steps=steps)
    series = [(row["name"], histories[row["run_id"]]) for row in rows]
    path = charts.chart_path(kind, f"{experiment.name}-{metric}")
    made = charts.history(series, metric=metric, title=f"{experiment.name}: {metric} of the top runs", path=path)
    return [{"path": str(made), "title": f"{experiment.name} · {metric}"}] if made else []


def summary(experiment_name: str, metric: str | None, top: int, understood: str = "") -> Replies:
    experiment = resolve.experiment(experiment_name)
    counts, keys, metric, ascending, ranked = _ranked(experiment, metric, top, None)
    total = sum(counts.values())
    context: dict[str, Any] = {
        "experiment": experiment.name,
        "experiment_url": views.experiment_url(experiment.experiment_id),
        "understood": understood,
        "total": total,
        "counts": [{"status": s.lower(), "count": counts[s]} for s in sorted(counts, key=_status_rank)],
        "metric": metric,
        "direction": "lower is better" if ascending else "higher is better",
        "runs": [],
        "varying": [],
        "gain": None,
        "users": [],
        "files": [],
    }
    if not ranked:
        context["empty_reason"] = f"No finished or running run has a value for `{metric}` yet."
        return [("exp_summary", context)]
    rows, varying, _shown = _table(experiment, ranked, metric, keys)
    best_row, best_value = ranked[0]
    context.update(
        runs=rows,
        varying=varying,
        best=rows[0],
        best_value=views.fmt(best_value),
        gain=_gain(experiment, best_row, best_value, metric, ascending),
        users=sorted({r["user"] for r in rows if r["user"]}),
        files=_chart(experiment, rows, metric, "summary"),
    )
    return [("exp_summary", context)]


def _status_rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def best(experiment_name: str, metric: str | None, since_ms: int | None, understood: str = "") -> Replies:
    experiment = resolve.experiment(experiment_name)
    _counts, keys, metric, ascending, ranked = _ranked(experiment, metric, 1, since_ms)
    if not ranked:
        window = f" since {views.when(since_ms):%Y-%m-%d}" if since_ms else ""
        raise NotFoundError(f"No run in `{experiment.name}`{window} has a value for `{metric}`.")
    rows, _varying, _shown = _table(experiment, ranked, metric, keys)
    with session_scope() as session:
        params = run_index.params_of(session, [rows[0]["run_id"]])[rows[0]["run_id"]]
    rows[0]["params"] = [{"key": k, "value": v} for k, v in sorted(params.items())]
    best_row, best_value = ranked[0]
    return [
        (
            "exp_best",
            {
                "experiment": experiment.name,
                "understood": understood,
                "metric": metric,
                "direction": "lower is better" if ascending else "higher is better",
                "run": rows[0],
                "value": views.fmt(best_value),
                "since": views.when(since_ms),
                "gain": _gain(experiment, best_row, best_value, metric, ascending),
            },
        )
    ]
