"""`watch <experiment>`: the experiment checked against MLflow (the closest names when it isn't there), the
watch stored, and the experiment's run index started so the first poll has something to read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from labmate.quoting import quote
from models import run_index
from models import watch as watches
from models.db import session_scope
from tasks.experiments import resolve, sync, views
from tasks.experiments.summary import primary_metric
from tasks.jobs import Replies


def add(experiment_name: str, channel: str, reply_to: dict[str, Any]) -> Replies:
    """The watch is stored last: a step after it that failed (the index's build meeting a locked or
    unreachable database) ran the job again, and the person who had just asked read "Already watching"."""
    experiment = resolve.experiment(experiment_name)
    target = {k: v for k, v in reply_to.items() if k not in ("audit", "ephemeral", "response_url", "thread_ts")}
    target["channel"] = channel
    now = datetime.now(UTC)
    ready = sync.progress(experiment).ready or bool(sync.build(experiment, budget_s=20.0))
    best = current_best(experiment) if ready else None
    with session_scope() as session:
        watch, new = watches.add(
            session, store=experiment.store, experiment_id=experiment.experiment_id, experiment=experiment.name,
            channel=channel, reply_to=target, user=str(reply_to.get("user", "")), since_ms=int(now.timestamp() * 1000),
        )  # fmt: skip
        since = watch.created_at
    here = channel == reply_to.get("channel")
    return [("watch_added", {
        "experiment": experiment.name,
        "experiment_url": views.experiment_url(experiment.experiment_id),
        "channel": channel,
        "here": here,
        # notices are Slack messages: a terminal that watches "here" is shown none, and must not be promised them
        "terminal": reply_to.get("source") != "slack",
        "recent": f"runs {quote(experiment.name)} since:1d",
        # as it must be typed to stop this watch: the name quoted if it has spaces, the channel when it isn't here
        "unwatch": f"unwatch {quote(experiment.name)}" + ("" if here else f" {channel}"),
        "new": new,
        "since": since,
        "best": best,
        "indexing": not ready,
    })]  # fmt: skip


def current_best(experiment: sync.Experiment) -> dict[str, Any] | None:
    """The experiment's best finished run on its primary metric (what a new run must beat)."""
    with session_scope() as session:
        keys = run_index.metric_keys(session, experiment.store, experiment.experiment_id)
        if not keys:
            return None
        metric = primary_metric(experiment, keys)
        if metric not in keys:
            return None
        direction = resolve.direction(experiment, metric, None)
        top = run_index.top_runs(
            session, experiment.store, experiment_id=experiment.experiment_id, metric=metric, limit=1,
            ascending=direction.ascending, finished_before=2**62, leaves_only=keys[metric][1] is not None,
        )  # fmt: skip
    if not top:
        return None
    row, value = top[0]
    return {"metric": metric, "direction": direction.text, "name": row.name or row.run_id[:8], "value": f"{value:.4g}",
            "url": views.run_url(experiment.experiment_id, row.run_id), "user": row.user}  # fmt: skip
