"""summary and best: ranked runs from the run index, the best run's gain, the chart.

Each has two answers, made by separate functions: `summary_preview` (and `best_preview`) answer
from one bounded MLflow read of the newest runs while an experiment's index is still being built,
saying so; `summary` (and `best`) answer from the index. `first.answer` decides which to give.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from labmate.errors import NotFoundError
from labmate.settings import get_settings
from labmate.when import window_start
from models import run_index
from models.db import reading, session_scope
from models.run_index import RunRecord
from tasks import mlflow_io
from tasks.experiments import charts, first, resolve, views
from tasks.experiments.sync import Experiment, counts, ensure_fresh, owner_counts
from tasks.jobs import Replies

STATUS_ORDER = ("FINISHED", "RUNNING", "SCHEDULED", "FAILED", "KILLED")
KEY_METRICS = 3
SHOWN_USERS = 5
PREVIEW_RUNS = 1000
Interim = Callable[[str, dict[str, Any]], None] | None


def primary_metric(experiment: Experiment, keys: dict[str, tuple[int, int | None]]) -> str:
    """labmate.toml's primary metric for the experiment, else its MLflow tag `labmate.primary_metric`,
    else the first metric its runs logged -- its *child* runs when it has nested runs, so a metric
    only a grid search's parent logs doesn't hide the children."""
    configured = get_settings().primary_metrics.get(experiment.name) or experiment.primary_metric
    if configured:
        return configured
    children = {k: v[1] for k, v in keys.items() if v[1] is not None}
    first = children or {k: v[0] for k, v in keys.items()}
    return min(first, key=lambda k: (first[k], *_preference(k)))


def _metric(word: str | None, experiment: Experiment, keys: dict[str, tuple[int, int | None]]) -> str:
    """The metric typed, else the primary one; a configured primary metric no run logged says where it
    is configured (the person never typed it)."""
    if word:
        return resolve.metric(word, keys, experiment.name)
    if get_settings().primary_metrics.get(experiment.name):
        named_by = f"labmate.toml `[primary_metrics]` names it for `{experiment.name}`"
    elif experiment.primary_metric:
        named_by = "the experiment's MLflow tag `labmate.primary_metric` names it"
    else:
        named_by = ""
    return resolve.metric(primary_metric(experiment, keys), keys, experiment.name, named_by=named_by)


EVAL_WORDS = frozenset({"val", "valid", "validation", "test", "eval", "holdout"})


def _preference(metric: str) -> tuple[bool, bool, str]:
    """Among metrics first logged together (autolog logs a batch): held-out scores before training
    ones, and scores before costs (`mean_test_score` before `mean_fit_time`)."""
    words = {w.lower() for w in resolve.WORD.findall(metric)}
    return (not words & EVAL_WORDS, resolve.name_rule(metric) is not None, metric)


def varying_params(params: dict[str, dict[str, str]]) -> list[str]:
    keys = sorted({k for p in params.values() for k in p})
    return [k for k in keys if len({p.get(k) for p in params.values()}) > 1]


def owners(runs_by_user: dict[str, int]) -> dict[str, Any]:
    """The "Run by" line: the owners with the most runs first, then "and N others"."""
    named = sorted((u for u in runs_by_user if u), key=lambda u: (-runs_by_user[u], u))
    return {"users": named[:SHOWN_USERS], "other_users": max(len(named) - SHOWN_USERS, 0)}


def key_metrics(metric: str, keys: dict[str, Any] | list[str] | set[str]) -> list[str]:
    others = sorted(k for k in keys if k != metric)
    return [metric, *others][:KEY_METRICS]


def _direction_context(direction: resolve.Direction) -> dict[str, Any]:
    return {"direction": direction.text, "direction_source": direction.source, "direction_change": direction.change}


def _ranked(
    experiment: Experiment, metric_word: str | None, limit: int, since_ms: int | None, ascending: bool | None
) -> tuple[dict[str, int], dict[str, Any], str, resolve.Direction, list[tuple[run_index.RunRow, float]]]:
    status_counts = counts(experiment)
    if not status_counts:
        raise NotFoundError(
            f"Experiment `{experiment.name}` has no runs yet.",
            hint="Runs show up here within a minute of being logged to MLflow.",
        )
    store, eid = experiment.store, experiment.experiment_id
    with session_scope() as session:
        keys = run_index.metric_keys(session, store, eid)
        if not keys:
            raise NotFoundError(
                f"Experiment `{experiment.name}` has {sum(status_counts.values())} run(s), but none logged a metric."
            )
        metric = _metric(metric_word, experiment, keys)
        chosen = resolve.direction(experiment, metric, ascending)
        ranked = run_index.top_runs(
            session,
            store,
            experiment_id=eid,
            metric=metric,
            limit=limit,
            ascending=chosen.ascending,
            since=since_ms,
            leaves_only=keys[metric][1] is not None,
        )
    return status_counts, keys, metric, chosen, ranked


def _table(
    experiment: Experiment, ranked: list[tuple[run_index.RunRow, float]], metric: str, keys: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    ids = [row.run_id for row, _ in ranked]
    with session_scope() as session:
        params = run_index.params_of(session, experiment.store, ids)
        metrics = run_index.metrics_of(session, experiment.store, ids)
        groups = run_index.names_of(session, experiment.store, [r.parent_run_id or "" for r, _ in ranked])
    varying = varying_params(params)
    shown_metrics = key_metrics(metric, keys)
    rows = []
    for row, _value in ranked:
        view = views.run_view(row, experiment.experiment_id, groups)
        view["params"] = [{"key": k, "value": params[row.run_id].get(k, "–")} for k in varying]
        view["metrics"] = [{"key": k, "value": views.fmt(metrics[row.run_id].get(k))} for k in shown_metrics]
        view["latest"] = metrics[row.run_id].get(metric)
        rows.append(view)
    views.attach_decisions(rows)
    return rows, varying, shown_metrics


def _gain(
    experiment: Experiment, best: run_index.RunRow, value: float, metric: str, ascending: bool, leaves: bool
) -> dict[str, Any]:
    """The best run against the best of the runs that finished before it."""
    before = best.end_time or int(datetime.now(UTC).timestamp() * 1000)
    with session_scope() as session:
        previous = run_index.top_runs(
            session,
            experiment.store,
            experiment_id=experiment.experiment_id,
            metric=metric,
            limit=1,
            ascending=ascending,
            finished_before=before,
            leaves_only=leaves,
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


def chart(experiment: Experiment, rows: list[dict[str, Any]], metric: str, kind: str) -> list[dict[str, str]]:
    """The top runs' histories of the metric, or one bar per run when each logged it once. The
    file is reused while the runs' latest values are the same (no MLflow read, no drawing)."""
    ids = [row["run_id"] for row in rows]
    with session_scope() as session:
        steps = run_index.max_steps(session, experiment.store, ids, metric)
    title = f"{experiment.name}: {metric} of the top runs"
    content = [(row["run_id"], steps.get(row["run_id"]), row.get("latest")) for row in rows]
    path = charts.chart_path(kind, f"{experiment.name}-{metric}", content)
    if all(steps.get(i, 0) == 0 for i in ids):
        series = [(row["name"], [(0, row["latest"])] if row.get("latest") is not None else []) for row in rows]
    elif path.exists():
        series = [(row["name"], [(0, 0.0), (1, 0.0)]) for row in rows]  # reused as is
    else:
        histories = mlflow_io.metric_histories(ids, metric, steps=steps)
        series = [(row["name"], histories[row["run_id"]]) for row in rows]
    made = charts.history(series, metric=metric, title=title, path=path)
    return [{"path": str(made), "title": f"{experiment.name} · {metric}"}] if made else []


def summary_text(
    experiment: Experiment, metric: str | None, top: int, understood: str = "", ascending: bool | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Everything of the final summary but the chart: the context and its ranked rows."""
    ensure_fresh(experiment)
    with reading():
        return _summary_text(experiment, metric, top, understood, ascending)


def _summary_text(
    experiment: Experiment, metric: str | None, top: int, understood: str, ascending: bool | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    status_counts, keys, metric, chosen, ranked = _ranked(experiment, metric, top, None, ascending)
    total = sum(status_counts.values())
    runs_by_user = owner_counts(experiment)
    context: dict[str, Any] = {
        "experiment": experiment.name,
        "experiment_url": views.experiment_url(experiment.experiment_id),
        "understood": understood,
        "total": total,
        "counts": [{"status": s.lower(), "count": status_counts[s]} for s in sorted(status_counts, key=_status_rank)],
        "metric": metric,
        **_direction_context(chosen),
        "runs": [],
        "varying": [],
        "gain": None,
        **owners(runs_by_user),
        "files": [],
        "preview": None,
    }
    if not ranked:
        context["empty_reason"] = f"No finished or running run has a value for `{metric}` yet."
        return context, []
    rows, varying, _shown = _table(experiment, ranked, metric, keys)
    best_row, best_value = ranked[0]
    context.update(
        runs=rows,
        varying=varying,
        best=rows[0],
        best_value=views.fmt(best_value),
        gain=_gain(experiment, best_row, best_value, metric, chosen.ascending, keys[metric][1] is not None),
    )
    return context, rows


def summary_final(
    experiment: Experiment, metric: str | None, top: int, understood: str = "", ascending: bool | None = None
) -> Replies:
    context, rows = summary_text(experiment, metric, top, understood, ascending)
    if rows:
        context["files"] = chart(experiment, rows, context["metric"], "summary")
    return [("exp_summary", context)]


def _status_rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def _preview_rank(
    experiment: Experiment, records: list[RunRecord], metric_word: str | None, ascending: bool | None, limit: int
) -> tuple[str, resolve.Direction, list[tuple[RunRecord, float]]]:
    keys: dict[str, tuple[int, int | None]] = {}
    for r in records:
        for key, (_v, _s, ts) in r.metrics.items():
            first_ts, child_ts = keys.get(key, (ts, None))
            if r.parent_run_id:
                child_ts = ts if child_ts is None else min(child_ts, ts)
            keys[key] = (min(first_ts, ts), child_ts)
    if not keys:
        raise NotFoundError(f"The newest runs of `{experiment.name}` logged no metric yet.")
    metric = _metric(metric_word, experiment, keys)
    chosen = resolve.direction(experiment, metric, ascending)
    parents = {r.parent_run_id for r in records if r.parent_run_id} if keys[metric][1] is not None else set()
    candidates = [
        (r, r.metrics[metric][0])
        for r in records
        if metric in r.metrics and r.metrics[metric][0] is not None and abs(r.metrics[metric][0]) < sys.float_info.max  # type: ignore[arg-type]
        and r.status not in run_index.FAILED_STATUSES
        and r.run_id not in parents
    ]  # fmt: skip
    candidates.sort(key=lambda item: (item[1] if chosen.ascending else -item[1], item[0].start_time))  # type: ignore[operator]
    return metric, chosen, [(r, float(v)) for r, v in candidates[:limit]]  # type: ignore[arg-type]


def _preview_rows(experiment: Experiment, ranked: list[tuple[RunRecord, float]], metric: str) -> list[dict[str, Any]]:
    params = {r.run_id: r.params for r, _ in ranked}
    varying = varying_params(params)
    names = {r.run_id: r.name for r, _ in ranked}
    rows = []
    for record, _value in ranked:
        view = views.run_view(record, experiment.experiment_id, names)
        view["params"] = [{"key": k, "value": record.params.get(k, "–")} for k in varying]
        shown = key_metrics(metric, record.metrics)
        view["metrics"] = [{"key": k, "value": views.fmt(record.metrics.get(k, (None, 0, 0))[0])} for k in shown]
        rows.append(view)
    return rows


def summary_preview(
    experiment: Experiment, metric_word: str | None, top: int, understood: str = "", ascending: bool | None = None
) -> tuple[str, dict[str, Any]]:
    """The first answer about an experiment whose index isn't built: the best of its newest runs
    (one bounded MLflow read), and how far the index is."""
    source = mlflow_io.run_reader()
    records = source.newest(experiment.experiment_id, PREVIEW_RUNS)
    expected = source.count(experiment.experiment_id)
    if not records:
        raise NotFoundError(f"Experiment `{experiment.name}` has no runs yet.")
    metric, chosen, ranked = _preview_rank(experiment, records, metric_word, ascending, top)
    rows = _preview_rows(experiment, ranked, metric)
    return (
        "exp_summary",
        {
            "experiment": experiment.name,
            "experiment_url": views.experiment_url(experiment.experiment_id),
            "understood": understood,
            "total": expected if expected is not None else len(records),
            "counts": [],
            "metric": metric,
            **_direction_context(chosen),
            "runs": rows,
            "varying": varying_params({r.run_id: r.params for r, _ in ranked}),
            "best": rows[0] if rows else None,
            "best_value": views.fmt(ranked[0][1]) if ranked else "",
            "gain": {"previous": None},
            **owners(Counter(r.user for r in records if not r.deleted)),
            "files": [],
            "empty_reason": f"None of the newest {len(records):,} runs has a value for `{metric}` yet.",
            "preview": first.preview_note(experiment, len(records), expected),
        },
    )


def summary(
    experiment_name: str,
    metric: str | None,
    top: int,
    understood: str = "",
    ascending: bool | None = None,
    interim: Interim = None,
) -> Replies:
    experiment = resolve.experiment(experiment_name)
    return first.answer(
        experiment,
        lambda: summary_final(experiment, metric, top, understood, ascending),
        lambda: summary_preview(experiment, metric, top, understood, ascending),
        interim,
        understood,
    )


def best_final(
    experiment: Experiment, metric: str | None, since_ms: int | None, understood: str = "", ascending: bool | None = None
) -> Replies:
    ensure_fresh(experiment)
    with reading():
        return _best_final(experiment, metric, since_ms, understood, ascending)


def _best_final(
    experiment: Experiment, metric: str | None, since_ms: int | None, understood: str, ascending: bool | None
) -> Replies:
    _counts, keys, metric, chosen, ranked = _ranked(experiment, metric, 1, since_ms, ascending)
    if not ranked:
        window = f" since {window_start(views.when(since_ms))}" if since_ms else ""
        raise NotFoundError(f"No run in `{experiment.name}`{window} has a value for `{metric}`.")
    rows, _varying, _shown = _table(experiment, ranked, metric, keys)
    with session_scope() as session:
        params = run_index.params_of(session, experiment.store, [rows[0]["run_id"]])[rows[0]["run_id"]]
    rows[0]["params"] = [{"key": k, "value": v} for k, v in sorted(params.items())]
    best_row, best_value = ranked[0]
    return [
        (
            "exp_best",
            {
                "experiment": experiment.name,
                "understood": understood,
                "metric": metric,
                **_direction_context(chosen),
                "run": rows[0],
                "value": views.fmt(best_value),
                "since": views.when(since_ms),
                "gain": _gain(experiment, best_row, best_value, metric, chosen.ascending, keys[metric][1] is not None),
                "preview": None,
            },
        )
    ]


def best_preview(
    experiment: Experiment, metric_word: str | None, since_ms: int | None, understood: str = "",
    ascending: bool | None = None,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    source = mlflow_io.run_reader()
    records = [r for r in source.newest(experiment.experiment_id, PREVIEW_RUNS) if not since_ms or r.start_time >= since_ms]
    expected = source.count(experiment.experiment_id)
    metric, chosen, ranked = _preview_rank(experiment, records, metric_word, ascending, 1)
    if not ranked:
        raise NotFoundError(f"None of the newest runs of `{experiment.name}` has a value for `{metric}` yet.")
    rows = _preview_rows(experiment, ranked, metric)
    rows[0]["params"] = [{"key": k, "value": v} for k, v in sorted(ranked[0][0].params.items())]
    return (
        "exp_best",
        {
            "experiment": experiment.name,
            "understood": understood,
            "metric": metric,
            **_direction_context(chosen),
            "run": rows[0],
            "value": views.fmt(ranked[0][1]),
            "since": views.when(since_ms),
            "gain": {"previous": None},
            "preview": first.preview_note(experiment, len(records), expected),
        },
    )


def best(
    experiment_name: str,
    metric: str | None,
    since_ms: int | None,
    understood: str = "",
    ascending: bool | None = None,
    interim: Interim = None,
) -> Replies:
    experiment = resolve.experiment(experiment_name)
    return first.answer(
        experiment,
        lambda: best_final(experiment, metric, since_ms, understood, ascending),
        lambda: best_preview(experiment, metric, since_ms, understood, ascending),
        interim,
        understood,
    )
