"""The watch poll: runs of watched experiments that ended since the last poll, announced once each.

One poll (a beat job, every minute):
1. per watched experiment, the run index is brought up to date (an incremental sync: only what changed
   in MLflow); MLflow unreachable: logged, the watch is left as it was, the next poll tries again;
2. the runs that ended since the watch last looked (an index range scan on end time, with a look-back
   for clocks that disagree) and that have no notice yet get one notice row each, and the run that
   beats the experiment's best on its primary metric a `best` row. Rows are written *before* anything
   is delivered, under a unique (watch, run, change): whichever poll writes a row first owns it;
3. more than `watch_group_over` runs at once share one grouped message;
4. every notice row not yet delivered (this poll's and any a dead worker left) is delivered under its
   message key through the keyed outbox, which posts a key once.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from labmate.launch_text import number
from labmate.launch_text import took as took_text
from labmate.settings import get_settings
from models import launches, run_activity, run_index
from models import watch as watches
from models.db import session_scope
from models.errors import KnowledgeBaseError
from tasks import mlflow_io
from tasks.experiments import resolve, sync, views
from tasks.experiments.summary import primary_metric
from tasks.experiments.sync import Experiment
from tasks.jobs import keyed

log = logging.getLogger(__name__)

LOOKBACK_MS = sync.CLOCK_SLACK_MS
"""A run's start and end times are its training machine's clock: runs that ended this long before the last
poll are looked at again (their notice rows say whether they were announced). The index sync re-reads as
far back, so a run it catches is one the poll looks at."""
MAX_RUNS = 2000
BUILD_BUDGET_S = 20.0
FULL_SYNC_AFTER = timedelta(minutes=5)
PENDING_FOR = timedelta(days=1)
GROUP_SHOWN = 10
ERROR_LINES = 12
ICONS = {"FINISHED": ":white_check_mark:", "FAILED": ":x:", "KILLED": ":octagonal_sign:"}


@dataclass(frozen=True)
class WatchRow:
    id: int
    experiment_id: str
    experiment: str
    since_ms: int
    created_ms: int
    reply_to: dict[str, Any]


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def poll(now: datetime | None = None) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """One poll of every watch of this tracking store: the replies to deliver, and their message keys."""
    now = now or datetime.now(UTC)
    store = mlflow_io.store()
    with session_scope() as session:
        rows = [
            WatchRow(w.id, w.experiment_id, w.experiment, w.since_ms, _ms(_aware(w.created_at)), dict(w.reply_to))
            for w in watches.all_watches(session, store=store)
        ]
    log.info("watch poll: %d watch(es) of %d experiment(s)", len(rows), len({r.experiment_id for r in rows}))
    by_experiment: dict[str, list[WatchRow]] = defaultdict(list)
    for row in rows:
        by_experiment[row.experiment_id].append(row)
    for experiment_id, watched in by_experiment.items():
        try:
            experiment = _experiment(experiment_id, watched[0].experiment, store)
            ended_since = min(row.since_ms for row in watched) - LOOKBACK_MS
            if experiment is None or not catch_up(experiment, ended_since=ended_since):
                continue
            for row in watched:
                notice(row, experiment, now)
        except Exception as exc:
            _failed(watched, exc)
    replies, keys = pending_replies(now)
    log.info("watch poll: done, %d message(s) to deliver", len(replies))
    return replies, keys


def _experiment(experiment_id: str, name: str, store: str) -> Experiment | None:
    found = mlflow_io.experiment_by_id(experiment_id)
    if found is None:
        log.warning("watched experiment %s (%s) is gone from MLflow; its watch waits", name, experiment_id)
        return None
    return Experiment(
        found["experiment_id"], found["name"], found.get("primary_metric"),
        tuple(sorted((found.get("directions") or {}).items())), store=store,
    )  # fmt: skip


def catch_up(experiment: Experiment, *, ended_since: int | None = None) -> bool:
    """The experiment's index, current for what a poll needs: built in steps while it is new (no notices
    until it is ready); then the runs that started or ended since the index last saw them, read from
    MLflow in one query and written to the index with its counts (`sync.write`: an answer right after a
    notice agrees with it). The rest of a sync (running runs' new metrics, deleted runs, the freshness) is
    the periodic sync's, unless it hasn't run for FULL_SYNC_AFTER: then a whole one.

    `ended_since`: the caller has read every run that ended before this (ms) already (a watch's last poll);
    the index's own mark is used when it is later."""
    if not sync.progress(experiment).ready:
        return bool(sync.build(experiment, budget_s=BUILD_BUDGET_S))
    store, eid = experiment.store, experiment.experiment_id
    with session_scope() as session:
        state = run_index.sync_state(session, store, eid)
        assert state is not None
        stale = datetime.now(UTC) - _aware(state.synced_at) > FULL_SYNC_AFTER
        since_start = state.max_start_time - LOOKBACK_MS
        since_end = max(state.synced_ms - sync.CLOCK_SLACK_MS, ended_since or 0)
    if stale:
        sync.refresh(experiment)
        return True
    read_ms = _ms(datetime.now(UTC))
    records = mlflow_io.run_reader().changed(eid, since_start, since_end)
    with session_scope(write=True) as session:
        sync.write(session, experiment, records, read_ms=read_ms)  # and the counts: answers agree with the notices
        state = run_index.sync_state(session, store, eid)
        if state is not None and records:
            state.max_start_time = max(state.max_start_time, max(r.start_time for r in records))
    return True


def _failed(watched: list[WatchRow], exc: Exception) -> None:
    """MLflow (or the index) could not be read: logged, nobody is told, the next poll tries again from
    where this one would have started (the watch's `since_ms` stays)."""
    try:
        with session_scope() as session:
            count = max(watches.poll_failed(session, watch_id=row.id) for row in watched)
    except Exception:
        count = 0
    what = "the knowledge base" if isinstance(exc, KnowledgeBaseError) else "MLflow"
    log.warning(
        "watch poll of %s: could not read %s (%s: %s); %s poll(s) in a row, trying again next time",
        watched[0].experiment, what, type(exc).__name__, exc, count,
    )


def notice(row: WatchRow, experiment: Experiment, now: datetime) -> int:
    """Write the notice rows of one watch's newly ended runs; returns how many were new."""
    store, eid = experiment.store, experiment.experiment_id
    window = max(row.since_ms - LOOKBACK_MS, row.created_ms)
    with session_scope(write=True) as session:
        ended = run_activity.ended_since(session, store, experiment_id=eid, since_ms=window, limit=MAX_RUNS)
        known = _noticed(session, row.id, [r.run_id for r in ended])
        fresh = [r for r in ended if r.run_id not in known]
        rows = _rows(session, row, experiment, fresh, now) if fresh else []
        new = watches.claim_notices(session, rows)
        watches.polled(session, watch_id=row.id, since_ms=_ms(now), now=now)
    return new


def _noticed(session: Any, watch_id: int, run_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(run_ids), 500):
        found.update(
            session.scalars(
                select(watches.WatchNotice.run_id).where(
                    watches.WatchNotice.watch_id == watch_id,
                    watches.WatchNotice.run_id.in_(run_ids[i : i + 500]),
                    watches.WatchNotice.change != watches.BEST,
                )
            )
        )
    return found


def _rows(
    session: Any, row: WatchRow, experiment: Experiment, runs: list[run_index.RunRow], now: datetime
) -> list[dict[str, Any]]:
    store = experiment.store
    ids = [r.run_id for r in runs]
    keys = run_index.metric_keys(session, store, experiment.experiment_id)
    metric = primary_metric(experiment, keys) if keys else None
    metrics = run_index.metrics_of(session, store, ids)
    failed = [r.run_id for r in runs if r.status != "FINISHED"]
    errors = _errors(session, store, failed)
    grouped = len(runs) > get_settings().watch_group_over
    stamp = _ms(now)
    notices = []
    for run in runs:
        context = _run_context(run, experiment, metric, metrics.get(run.run_id, {}), errors.get(run.run_id))
        key = f"watch:{row.id}:group:{stamp}" if grouped else f"watch:{row.id}:{run.run_id}:{run.status}"
        notices.append({"watch_id": row.id, "run_id": run.run_id, "change": run.status, "message_key": key,
                        "context": context})  # fmt: skip
    best = _new_best(session, experiment, metric, keys, runs, metrics) if metric else None
    if best is not None:
        key = f"watch:{row.id}:group:{stamp}" if grouped else f"watch:{row.id}:{best['run_id']}:best"
        notices.append({"watch_id": row.id, "run_id": best["run_id"], "change": watches.BEST, "message_key": key,
                        "context": best})  # fmt: skip
    return notices


def _run_context(
    run: run_index.RunRow, experiment: Experiment, metric: str | None, metrics: dict[str, float | None],
    error: str | None,
) -> dict[str, Any]:  # fmt: skip
    names = sorted(metrics, key=lambda k: (k != metric, k))[:3]
    took = ((run.end_time or run.start_time) - run.start_time) / 1000 if run.start_time else 0.0
    return {
        "run_id": run.run_id,
        "short": run.run_id[:8],
        "name": run.name or run.run_id[:8],
        "status": run.status.lower(),
        "icon": ICONS.get(run.status, ""),
        "user": run.user,
        "experiment": experiment.name,
        "url": views.run_url(experiment.experiment_id, run.run_id),
        "took": took_text(max(took, 0.0)),
        "metrics": [{"key": k, "value": _shown(metrics[k])} for k in names],
        "primary": metric or "",
        "primary_value": metrics.get(metric) if metric else None,
        "error": error if run.status != "FINISHED" else None,
    }


def _shown(value: float | None) -> str:
    """A metric as the run logged it: the index keeps a NaN as no value (the metric's row says it was
    logged) and MLflow's SQL stores an infinity as the largest float."""
    return "NaN" if value is None else views.fmt(value)


def _errors(session: Any, store: str, run_ids: list[str]) -> dict[str, str]:
    """The last lines of why each failed run failed: the output labmate kept for runs launched from chat,
    else an error tag the training code set. Runs with neither get an honest 'no error text'."""
    if not run_ids:
        return {}
    found: dict[str, str] = {}
    for launch in session.scalars(select(launches.Launch).where(launches.Launch.mlflow_run_id.in_(run_ids))):
        text = (launch.output_tail or launch.reason or "").strip()
        if text:
            found[str(launch.mlflow_run_id)] = text
    tags = run_activity.tags_of(session, store, [r for r in run_ids if r not in found], run_index.ERROR_TAGS)
    for run_id, values in tags.items():
        text = next((values[k] for k in run_index.ERROR_TAGS if values.get(k)), "")
        if text.strip():
            found[run_id] = text.strip()
    return {run_id: "\n".join(text.splitlines()[-ERROR_LINES:])[-1500:] for run_id, text in found.items()}


def _new_best(
    session: Any, experiment: Experiment, metric: str, keys: dict[str, Any], runs: list[run_index.RunRow],
    metrics: dict[str, dict[str, float | None]],
) -> dict[str, Any] | None:  # fmt: skip
    """The best of these newly finished runs, when it beats every other finished run of the experiment."""
    direction = resolve.direction(experiment, metric, None)
    leaves = keys.get(metric, (0, None))[1] is not None
    candidates = [
        (r, metrics.get(r.run_id, {}).get(metric)) for r in runs if r.status == "FINISHED"
    ]
    scored = [(r, float(v)) for r, v in candidates if v is not None and math.isfinite(views.logged(v))]
    if not scored:
        return None
    run, value = min(scored, key=lambda item: item[1]) if direction.ascending else max(scored, key=lambda item: item[1])
    batch = {r.run_id for r in runs}
    others = run_index.top_runs(
        session, experiment.store, experiment_id=experiment.experiment_id, metric=metric, limit=len(batch) + 1,
        ascending=direction.ascending, finished_before=2**62, leaves_only=leaves,
    )  # fmt: skip
    previous = next(((r, v) for r, v in others if r.run_id not in batch), None)
    if previous is None:
        return None
    prev_row, prev_value = previous
    better = value < prev_value if direction.ascending else value > prev_value
    if not better:
        return None
    return {
        "run_id": run.run_id,
        "name": run.name or run.run_id[:8],
        "user": run.user,
        "experiment": experiment.name,
        "url": views.run_url(experiment.experiment_id, run.run_id),
        "metric": metric,
        "value": number(value),
        "direction": direction.text,
        "previous": prev_row.name or prev_row.run_id[:8],
        "previous_url": views.run_url(experiment.experiment_id, prev_row.run_id),
        "previous_value": number(prev_value),
        "delta": f"{value - prev_value:+.4g}",
    }


# --- delivery ----------------------------------------------------------------------------------


def pending_replies(now: datetime | None = None) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Every notice not yet delivered (within a day), one reply per message key, oldest first."""
    now = now or datetime.now(UTC)
    with session_scope(write=True) as session:
        rows = [r for r in watches.pending(session, limit=5000) if _aware(r.created_at) >= now - PENDING_FOR]
        by_key: dict[str, list[watches.WatchNotice]] = defaultdict(list)
        for r in rows:
            by_key[r.message_key].append(r)
        settled = _settled(session, list(by_key))
        for state in (watches.DELIVERED, watches.UNDELIVERED):
            keys = [k for k, v in settled.items() if v == state]
            watches.mark_delivered(session, message_keys=keys, state=state)
        for key, state in settled.items():
            if state == watches.UNDELIVERED:
                log.error("watch notice %s: Slack refused it for good; not offered again", key)
            by_key.pop(key, None)
        targets = {w.id: (dict(w.reply_to), w.experiment) for w in watches.all_watches(session)}
        replies = []
        for key, members in by_key.items():
            target = targets.get(members[0].watch_id)
            if target is None:
                continue
            reply_to, experiment = target
            template, context = render_context(key, [(m.change, dict(m.context)) for m in members], experiment)
            replies.append(keyed(template, context, key=key, reply_to=reply_to, final=True))
    return replies, list(by_key)


def _settled(session: Any, keys: list[str]) -> dict[str, str]:
    """Message keys the delivery ledger has settled: posted (delivered) or refused for good (undelivered:
    a channel the bot can't post in must not hold back every later notice)."""
    from models import deliveries

    found: dict[str, str] = {}
    for i in range(0, len(keys), 500):
        rows = session.execute(
            select(deliveries.DeliveryRecord.key, deliveries.DeliveryRecord.state).where(
                deliveries.DeliveryRecord.key.in_(keys[i : i + 500]),
                deliveries.DeliveryRecord.state.in_((deliveries.POSTED, deliveries.UNDELIVERED)),
            )
        )
        for key, state in rows:
            found[key] = watches.DELIVERED if state == deliveries.POSTED else watches.UNDELIVERED
    return found


def render_context(key: str, members: Iterable[tuple[str, dict[str, Any]]], experiment: str) -> tuple[str, dict[str, Any]]:
    members = list(members)
    if ":group:" not in key:
        change, context = members[0]
        return ("watch_best" if change == watches.BEST else "watch_notice"), context
    runs = [c for change, c in members if change != watches.BEST]
    best = next((c for change, c in members if change == watches.BEST), None)
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        counts[run["status"]] += 1
    runs.sort(key=lambda r: (r["status"] == "finished", r["name"].casefold(), r["run_id"]))
    shown = runs[:GROUP_SHOWN]
    return "watch_group", {
        "experiment": experiment,
        "total": len(runs),
        "counts": [{"status": s, "count": counts[s]} for s in ("finished", "failed", "killed") if counts.get(s)],
        "runs": shown,
        "more": len(runs) - len(shown),
        "best": best,
    }


def delivered(keys: list[str]) -> None:
    with session_scope() as session:
        watches.mark_delivered(session, message_keys=keys)
