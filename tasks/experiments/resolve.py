"""User words -> MLflow things, or a message naming the closest real ones."""

from __future__ import annotations

import difflib
import re

from labmate.errors import NotFoundError
from models.run_index import RunRecord
from tasks import mlflow_io
from tasks.experiments.sync import Experiment

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
LOWER_IS_BETTER = re.compile(r"(loss|error|err$|^err|mae|mse|rmse|perplexity|latency|wer|cer|time|duration)", re.I)


def closest(word: str, names: list[str] | set[str], n: int = 3) -> list[str]:
    pool = list(names)
    found = difflib.get_close_matches(word, pool, n=n, cutoff=0.5)
    if not found:
        found = [name for name in pool if word.lower() in name.lower()][:n]
    return found


def _suggest(found: list[str]) -> str:
    return " Did you mean " + " or ".join(f"`{f}`" for f in found) + "?" if found else ""


def experiment(name: str) -> Experiment:
    found = mlflow_io.experiment_by_name(name)
    if found is None:
        names = mlflow_io.experiment_names()
        suggestion = _suggest(closest(name, names))
        listing = "" if suggestion or not names else f" Experiments: {', '.join(f'`{n}`' for n in sorted(names)[:10])}."
        raise NotFoundError(f"MLflow has no experiment `{name}`.{suggestion}{listing}")
    return Experiment(found["experiment_id"], found["name"], found.get("primary_metric"))


def metric(name: str, keys: list[str] | set[str], experiment_name: str) -> str:
    if name in keys:
        return name
    lowered = {k.lower(): k for k in keys}
    if name.lower() in lowered:
        return lowered[name.lower()]
    shown = ", ".join(f"`{k}`" for k in sorted(keys)[:10])
    raise NotFoundError(
        f"No run in `{experiment_name}` logged a metric `{name}`.{_suggest(closest(name, keys))}",
        hint=f"Its metrics: {shown}.",
    )


def lower_is_better(metric_name: str) -> bool:
    return bool(LOWER_IS_BETTER.search(metric_name))


def run(ref: str) -> RunRecord:
    """A full run id, a unique id prefix or a run name -> the run (deleted runs refused)."""
    if RUN_ID.match(ref.lower()):
        record = mlflow_io.get_record(ref.lower())
        matches = [record] if record else []
    else:
        matches = mlflow_io.find_records(ref)
    if not matches:
        raise NotFoundError(
            f"No run has the id, id prefix or name `{ref}`.",
            hint="Copy the id from the run's page, or use `runs <experiment>` to list runs.",
        )
    if len(matches) > 1:
        shown = ", ".join(f"`{m.run_id[:12]}` ({m.name or 'unnamed'})" for m in matches[:8])
        raise NotFoundError(f"`{ref}` matches {len(matches)} runs: {shown}. Use a longer id prefix.")
    record = matches[0]
    if record.deleted:
        raise NotFoundError(
            f"Run `{record.name or record.run_id}` ({record.run_id[:12]}) was deleted in MLflow; restore it to use it."
        )
    return record
