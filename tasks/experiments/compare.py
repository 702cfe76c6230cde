"""compare: param differences, metric deltas against the first run, overlaid histories."""

from __future__ import annotations

from typing import Any

from labmate.errors import NotFoundError
from models.run_index import RunRecord
from tasks import mlflow_io
from tasks.experiments import charts, resolve, views
from tasks.jobs import Replies

MAX_CHARTS = 4


def _label(record: RunRecord) -> str:
    return record.name or record.run_id[:8]


def param_differences(records: list[RunRecord]) -> list[dict[str, Any]]:
    keys = sorted({k for r in records for k in r.params})
    return [
        {"key": k, "values": [r.params.get(k, "–") for r in records]}
        for k in keys
        if len({r.params.get(k) for r in records}) > 1
    ]


def metric_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    keys = sorted({k for r in records for k in r.metrics})
    rows = []
    first = records[0]
    for key in keys:
        base = first.metrics.get(key, (None, 0, 0))[0]
        cells = []
        for i, record in enumerate(records):
            value = record.metrics.get(key, (None, 0, 0))[0]
            delta = "" if i == 0 or value is None or base is None else views.signed(value - base)
            cells.append({"value": views.fmt(value), "delta": delta})
        rows.append({"key": key, "cells": cells})
    return rows


def compare(refs: list[str], understood: str = "") -> Replies:
    records = [resolve.run(ref) for ref in refs]
    if len({r.run_id for r in records}) < len(records):
        raise NotFoundError("Two of those names point at the same run; name different runs.")
    for record in records:
        if not record.metrics:
            raise NotFoundError(
                f"Run `{_label(record)}` ({record.run_id[:12]}) has no metrics to compare.",
                hint="It may have failed before logging anything; `runs <experiment> status:failed` lists those.",
            )
    shared = sorted(set.intersection(*(set(r.metrics) for r in records)))
    files = []
    for metric in shared[:MAX_CHARTS]:
        steps = {r.run_id: r.metrics[metric][1] for r in records}
        histories = mlflow_io.metric_histories([r.run_id for r in records], metric, steps=steps)
        series = [(_label(r), histories[r.run_id]) for r in records]
        if sum(len(points) for _, points in series) <= len(series):
            continue  # single values: the table says it all
        path = charts.chart_path("compare", metric)
        made = charts.history(
            series, metric=metric, title=f"{metric}: " + " vs ".join(_label(r) for r in records), path=path
        )
        if made:
            files.append({"path": str(made), "title": metric})
    runs = [
        views.run_view(r, r.experiment_id)
        for r in records
    ]
    views.attach_decisions(runs)
    return [
        (
            "exp_compare",
            {
                "understood": understood,
                "runs": runs,
                "params": param_differences(records),
                "metrics": metric_rows(records),
                "files": files,
            },
        )
    ]
