"""Sweeps: a grid of launches, `parallel` at a time, and one summary when the last one ends.

The start job posts the sweep's card (the runs' cards go in its thread) and sends the first `parallel`
runs to the `launch` queue as one Celery group. After that each run, when it ends, hands its slot to
the next waiting run (a conditional UPDATE, so two runs ending at once never start the same one), and
whoever ends the last run makes the summary due (again one conditional UPDATE). Both hand-offs go
through the job ledger's outbox, so a broker outage delays them and never loses them, and they hold
however the run ended: finished, failed, stopped, or given up by the reaper after its worker died.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from labmate import launch_text, outbox
from labmate.settings import get_settings
from models import jobs, launches
from models.db import session_scope
from tasks.jobs import Replies, keyed
from tasks.launches.run import RUN_TASK

log = logging.getLogger(__name__)

START_TASK = "labmate.sweeps.start"
SUMMARY_TASK = "labmate.sweeps.summary"
CARD = "sweep_card"
SUMMARY = "sweep_summary"
MAX_CHART_RUNS = 12


def card_key(sweep_id: int) -> str:
    return f"sweep:{sweep_id}"


def run_kwargs(launch: launches.Launch) -> dict[str, Any]:
    return {"launch_id": launch.id, "project": launch.project, "reply_to": launch.reply_to, "audit_id": None}


def _load(sweep_id: int) -> tuple[launches.Sweep, list[launches.Launch]]:
    with session_scope() as session:
        sweep = launches.get_sweep(session, sweep_id=sweep_id)
        if sweep is None:
            raise LookupError(f"sweep {sweep_id} does not exist")
        members = launches.members(session, sweep_id=sweep_id)
        session.expunge_all()
    return sweep, members


def _varying(sweep: launches.Sweep) -> list[str]:
    return [name for name, values in sweep.grid if len(values) > 1]


def card_view(sweep: launches.Sweep, members: list[launches.Launch]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for member in members:
        counts[member.status] = counts.get(member.status, 0) + 1
    varying = _varying(sweep)
    return {
        "id": sweep.id,
        "label": f"S{sweep.id}",
        "project": sweep.project,
        "entry_point": sweep.entry_point,
        "user": sweep.user,
        "size": sweep.size,
        "parallel": sweep.parallel,
        "grid": [{"name": name, "choices": ", ".join(values)} for name, values in sweep.grid],
        "counts": [{"status": s, "count": counts[s]} for s in (*launches.ACTIVE, *launches.ENDED) if s in counts],
        "ended": all(m.status in launches.ENDED for m in members),
        "runs": [
            {"label": m.label, "status": m.status, "params": ", ".join(f"{k}={m.params.get(k, '')}" for k in varying)}
            for m in members
        ],
    }


def start(sweep_id: int) -> Replies:
    """Post the sweep's card, then send its first `parallel` runs as one group on the `launch` queue."""
    sweep, members = _load(sweep_id)
    context = card_view(sweep, members)
    thread_ts = None
    try:
        thread_ts = outbox.deliver(sweep.reply_to, CARD, context, key=card_key(sweep_id), final=False)
    except outbox.DeliveryError as exc:
        log.warning("the card of sweep S%s isn't posted yet (%s); its runs' cards go in the channel", sweep_id, exc)
    if thread_ts and sweep.reply_to.get("source") == "slack" and not sweep.reply_to.get("thread_ts"):
        with session_scope() as session:
            launches.set_member_reply_to(session, sweep_id=sweep_id, reply_to={**sweep.reply_to, "thread_ts": thread_ts})
    taken: list[launches.Launch] = []
    with session_scope(write=True) as session:
        held = sum(1 for m in launches.members(session, sweep_id=sweep_id) if m.holds_slot and m.status in launches.ACTIVE)
        for _ in range(max(0, sweep.parallel - held)):
            launch = launches.take_next(session, sweep_id=sweep_id)
            if launch is None:
                break
            jobs.add_queued(session, key=launch.task_id, task=RUN_TASK, kwargs=run_kwargs(launch), audit_id=None)
            taken.append(launch)
        session.expunge_all()
    _send_group(taken)
    return [keyed(CARD, card_view(*_load(sweep_id)), key=card_key(sweep_id), reply_to=sweep.reply_to, final=False)]


def _send_group(taken: list[launches.Launch]) -> None:
    """One Celery group on the `launch` queue; what the broker doesn't take, the reaper sends later."""
    if not taken:
        return
    from celery import group

    from tasks.app import celery_app

    app = celery_app()
    try:
        group(
            app.signature(RUN_TASK, kwargs=run_kwargs(launch), task_id=launch.task_id, queue="launch") for launch in taken
        ).apply_async()
    except Exception as exc:
        log.warning("could not send sweep runs now (%s); the reaper sends them when the broker is back", exc)
        return
    with session_scope() as session:
        jobs.mark_sent(session, keys=[launch.task_id for launch in taken])


def after_end(launch: launches.Launch) -> None:
    """A run of a sweep ended: its slot goes to the next waiting run; after the last, the summary is due."""
    from tasks.maintenance import send_stored

    sweep_id = launch.sweep_id
    if sweep_id is None:
        return
    keys: list[str] = []
    with session_scope(write=True) as session:
        if launches.release_slot(session, launch_id=launch.id):
            following = launches.take_next(session, sweep_id=sweep_id)
            if following is not None:
                jobs.add_queued(
                    session, key=following.task_id, task=RUN_TASK, kwargs=run_kwargs(following), audit_id=None
                )
                keys.append(following.task_id)
    # A transaction of its own, after the end was committed: the last two runs ending at once can't
    # each see the other still running.
    with session_scope(write=True) as session:
        sweep = launches.get_sweep(session, sweep_id=sweep_id)
        if sweep is not None and launches.claim_summary(session, sweep_id=sweep_id):
            key = sweep.summary_job or str(uuid.uuid4())
            jobs.add_queued(
                session, key=key, task=SUMMARY_TASK,
                kwargs={"sweep_id": sweep_id, "reply_to": sweep.reply_to, "audit_id": None}, audit_id=None,
            )
            keys.append(key)
    send_stored(keys)


def summary(sweep_id: int) -> Replies:
    """The best configuration, a table of every run, a chart, and why the failed ones failed."""
    from tasks.experiments import charts, resolve
    from tasks.mlflow_io import launch as mlflow_launch

    sweep, members = _load(sweep_id)
    varying = _varying(sweep)
    logged = sorted({k for m in members for k in (m.metrics or {})})
    experiment_id = next((m.experiment_id for m in members if m.experiment_id), None)
    experiment = members[0].experiment if members else ""
    primary = mlflow_launch.primary_metric(experiment, experiment_id, logged) if experiment_id else None
    ascending = resolve.lower_is_better(primary) if primary else False
    rows = []
    for m in members:
        value = (m.metrics or {}).get(primary) if primary else None
        rows.append({
            "label": m.label,
            "status": m.status,
            "params": ", ".join(f"{k}={m.params.get(k, '')}" for k in varying) or "(same params)",
            "value": launch_text.number(value),
            "raw": value,
            "run_short": (m.mlflow_run_id or "")[:8],
            "reason": m.reason,
            "stopped_by": m.stopped_by or "",
            "last_line": (m.output_tail or "").strip().splitlines()[-1][:300] if (m.output_tail or "").strip() else "",
        })
    finished = [r for r, m in zip(rows, members, strict=True) if m.status == launches.FINISHED and r["raw"] is not None]
    best = (min if ascending else max)(finished, key=lambda r: r["raw"]) if finished else None
    best_member = next((m for m in members if best and m.label == best["label"]), None)
    context: dict[str, Any] = {
        **card_view(sweep, members),
        "metric": primary or "",
        "direction": "lower is better" if ascending else "higher is better",
        "table": rows,
        "best": best,
        "best_params": [{"key": k, "value": v} for k, v in (best_member.params.items() if best_member else [])],
        "failures": [r for r in rows if r["status"] in (launches.FAILED, launches.KILLED)],
        "files": [],
    }
    if primary:
        ranked = sorted(
            (m for m in members if m.mlflow_run_id and m.status == launches.FINISHED),
            key=lambda m: ((m.metrics or {}).get(primary) or 0) * (1 if ascending else -1),
        )[:MAX_CHART_RUNS]
        series = []
        for m in ranked:
            try:
                series.append((f"{m.label} " + ", ".join(f"{k}={m.params.get(k)}" for k in varying),
                               mlflow_launch.history(m.mlflow_run_id or "", primary)))
            except Exception:
                log.warning("no history of %s for %s", primary, m.label, exc_info=True)
        path = get_settings().charts_dir / f"sweep-S{sweep_id}-{primary}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        made = charts.history(series, metric=primary, title=f"S{sweep_id} {sweep.project}: {primary}", path=path)
        if made:
            context["files"] = [{"path": str(made), "title": f"S{sweep_id} · {primary}"}]
    card = card_view(sweep, members)
    return [
        keyed(SUMMARY, context, key=f"{card_key(sweep_id)}:summary", reply_to=sweep.reply_to, final=True),
        keyed(CARD, card, key=card_key(sweep_id), reply_to=sweep.reply_to, final=True),
    ]
