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


def compare(refs: list[str], understood: str = "", experiment: str | None = None) -> Replies:
    records = resolve.runs(refs, experiment)
    if len({r.run_id for r in records}) < len(records):
        raise NotFoundError("Two of those names point at the same run; name different runs.")
    empty = [r for r in records if not r.metrics]
    with_metrics = [r for r in records if r.metrics]
    shared = sorted(set.intersection(*(set(r.metrics) for r in with_metrics))) if len(with_metrics) > 1 else []
    files = []
    for metric in shared[:MAX_CHARTS]:
        steps = {r.run_id: r.metrics[metric][1] for r in with_metrics}
        title = f"{metric}: " + " vs ".join(_label(r) for r in with_metrics)
        content = [(r.run_id, r.metrics[metric]) for r in with_metrics]
        path = charts.chart_path("compare", metric, content)
        if all(step == 0 for step in steps.values()):
            series = [(_label(r), [(0, r.metrics[metric][0])] if r.metrics[metric][0] is not None else [])
                      for r in with_metrics]  # fmt: skip
        else:
            histories = mlflow_io.metric_histories([r.run_id for r in with_metrics], metric, steps=steps)
            series = [(_label(r), histories[r.run_id]) for r in with_metrics]
        made = charts.history(series, metric=metric, title=title, path=path)
        if made:
            files.append({"path": str(made), "title": metric})
    runs = [views.run_view(r, r.experiment_id, {r.run_id: r.name for r in records}) for r in records]
    for view, record in zip(runs, records, strict=True):
        view["no_metrics"] = not record.metrics
    views.attach_decisions(runs)
    return [
        (
            "exp_compare",
            {
                "understood": understood,
                "runs": runs,
                "params": param_differences(records),
                "metrics": metric_rows(records) if with_metrics else [],
                "files": files,
                "no_metrics": [_label(r) for r in empty],
            },
        )
    ]
