"""The daily digest: one message per configured channel at its local time, about the last day.

What it says: per experiment the runs started, finished and failed, the new bests; the launches and
sweeps asked for from chat; the decisions logged; clean-up proposals pending (`cleanup_pending`, from
the clean-up feature); one chart (runs ended per experiment). Regression verdicts are not recorded yet,
so it says nothing about them. A quiet day is one line, or nothing (`quiet = "none"`).

Posted once per (channel, local day) whatever runs it: the job inserts the day's `digests` row first (a
unique key, so of two beat processes, or a beat and `labmate digest --now`, one wins) and delivers under
the key `digest:<channel>:<day>` through the keyed outbox.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from labmate.launch_text import aware
from labmate.settings import DigestChannel, get_settings
from models import decision as decisions
from models import launches, run_activity, run_index
from models import watch as watches
from models.db import session_scope
from tasks import mlflow_io
from tasks.experiments import charts, resolve, sync, views
from tasks.experiments.summary import primary_metric
from tasks.experiments.sync import Experiment
from tasks.jobs import keyed
from tasks.watch.poll import catch_up

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
CATCH_UP = timedelta(days=7)
SHOWN_DECISIONS = 5
SHOWN_EXPERIMENTS = 15
SHOWN_BESTS = 8
NOT_IN_CHANNEL = "not_in_channel"


def cleanup_pending(channel: str | None) -> list[dict[str, Any]]:
    """The team's clean-up proposals still waiting for an answer (tasks/cleanup), one line each:
    `{"owner": <Slack id or MLflow user>, "runs": <runs left to answer>, "experiment": <name>}`."""
    from models import cleanup as proposals

    with session_scope() as session:
        waiting = []
        for proposal in proposals.open_proposals(session):
            pending = [c for c in proposals.candidates(session, proposal_id=proposal.id) if c.state == proposals.PENDING]
            if pending:
                waiting.append({"owner": proposal.recipient or proposal.owner, "runs": len(pending), "experiment": proposal.experiment})
        return waiting


@dataclass(frozen=True)
class Due:
    channel: DigestChannel
    day: str


def local_day(channel: DigestChannel, now: datetime) -> tuple[str, bool]:
    """The channel's local date, and whether its digest time has come today."""
    local = now.astimezone(ZoneInfo(channel.timezone))
    hour, minute = (int(x) for x in channel.at.split(":"))
    return local.date().isoformat(), local.time() >= time(hour, minute)


def window(channel: DigestChannel, day: str, now: datetime, *, up_to_now: bool = False) -> tuple[datetime, datetime]:
    """The span the channel's digest of `day` covers: from where its last posted digest ended (the day
    before's digest time, for a first one) to `day`'s digest time (or `now`, if sooner), or to `now`
    for `labmate digest --now`. Fixed by the day, not by when the job runs, so a late post, a day beat
    was down or a clock change neither skips nor repeats anything; at most CATCH_UP back."""
    zone = ZoneInfo(channel.timezone)
    hour, minute = (int(x) for x in channel.at.split(":"))
    at = time(hour, minute)
    local_day = date.fromisoformat(day)
    until = now if up_to_now else min(now, datetime.combine(local_day, at, tzinfo=zone).astimezone(UTC))
    with session_scope() as session:
        last = watches.last_covered(session, channel=channel.channel, before_day=day)
    since = aware(last) if last is not None else datetime.combine(local_day - DAY, at, tzinfo=zone).astimezone(UTC)
    return max(since, until - CATCH_UP), until


def due(now: datetime | None = None) -> list[Due]:
    """Configured channels whose digest time has come today and whose digest of today isn't claimed."""
    now = now or datetime.now(UTC)
    found = []
    with session_scope() as session:
        for channel in get_settings().digest.channels:
            day, time_has_come = local_day(channel, now)
            if time_has_come and watches.digest_of(session, channel=channel.channel, day=day) is None:
                found.append(Due(channel, day))
    return found


def _experiments() -> tuple[list[Experiment], str]:
    """Every experiment of the tracking store, its index brought up to date; MLflow unreachable: the
    experiments already indexed, as they were (and a note saying so)."""
    from tasks.mlflow_io.regressions import EXPERIMENT as REGRESSIONS  # labmate's own reports: not the team's runs

    store = mlflow_io.store()
    try:
        found = [
            Experiment(e["experiment_id"], e["name"], e.get("primary_metric"),
                       tuple(sorted((e.get("directions") or {}).items())), store=store)
            for e in mlflow_io.experiments() if e["name"] != REGRESSIONS
        ]  # fmt: skip
    except Exception as exc:
        log.warning("digest: MLflow unreachable (%s); using the run index as it is", exc)
        indexed = [e for e, ready, _due in sync.indexed_experiments(store) if ready and e.name != REGRESSIONS]
        return indexed, "MLflow could not be reached: run counts are as of the last sync."
    note = ""
    for experiment in found:
        try:
            if sync.progress(experiment).ready:
                catch_up(experiment)  # the runs that started or ended since the periodic sync, too
            else:
                sync.ensure_fresh(experiment)
        except Exception as exc:
            log.warning("digest: could not sync %s (%s)", experiment.name, exc)
            note = "Some experiments could not be read from MLflow: their counts are as of the last sync."
    return found, note


def _new_best(session: Any, experiment: Experiment, since_ms: int, until_ms: int) -> dict[str, Any] | None:
    """The experiment's best finished run by its primary metric, when it finished in the digest's window,
    and the previous best it beat: the best of the runs that had finished before it did (inside the window
    too: a run that beat one which finished earlier the same day beat that one), as the launch card says."""
    keys = run_index.metric_keys(session, experiment.store, experiment.experiment_id)
    if not keys:
        return None
    metric = primary_metric(experiment, keys)
    if metric not in keys:
        return None
    direction = resolve.direction(experiment, metric, None)
    leaves = keys[metric][1] is not None
    args = {"experiment_id": experiment.experiment_id, "metric": metric, "ascending": direction.ascending,
            "leaves_only": leaves}  # fmt: skip
    now_best = run_index.top_runs(session, experiment.store, finished_before=until_ms, limit=1, **args)
    if not now_best or (now_best[0][0].end_time or 0) < since_ms:
        return None
    row, value = now_best[0]
    ended = row.end_time or 0
    # runs that ended in the same millisecond count as before it; the best itself is left out by its id
    before = [
        (r, v) for r, v in run_index.top_runs(session, experiment.store, finished_before=ended + 1, limit=2, **args)
        if r.run_id != row.run_id
    ]  # fmt: skip
    found: dict[str, Any] = {
        "experiment": experiment.name,
        "name": row.name or row.run_id[:8],
        "url": views.run_url(experiment.experiment_id, row.run_id),
        "metric": metric,
        "value": f"{value:.4g}",
        "previous": "",
        "previous_url": "",
        "previous_value": "",
        "delta": "",
        "first": not before,
    }
    if before:
        previous, previous_value = before[0]
        found.update(
            previous=previous.name or previous.run_id[:8],
            previous_url=views.run_url(experiment.experiment_id, previous.run_id),
            previous_value=f"{previous_value:.4g}",
            delta=f"{value - previous_value:+.4g}",
        )
    return found


def _runs(experiments: list[Experiment], since_ms: int, until_ms: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, bests = [], []
    with session_scope() as session:
        for experiment in experiments:
            counts = run_activity.day_counts(
                session, experiment.store, experiment_id=experiment.experiment_id, since_ms=since_ms, until_ms=until_ms
            )
            if counts.quiet:
                continue
            rows.append({"experiment": experiment.name, "url": views.experiment_url(experiment.experiment_id),
                         "started": counts.started, "finished": counts.finished, "failed": counts.failed,
                         "killed": counts.killed})  # fmt: skip
            best = _new_best(session, experiment, since_ms, until_ms)
            if best is not None:
                bests.append(best)
    rows.sort(key=lambda r: -(r["started"] + r["finished"] + r["failed"] + r["killed"]))
    busiest = {r["experiment"]: i for i, r in enumerate(rows)}
    bests.sort(key=lambda b: busiest.get(b["experiment"], len(rows)))
    return rows, bests


def _launches(since: datetime, until: datetime) -> dict[str, Any]:
    launched = launches.Launch.created_at
    swept = launches.Sweep.created_at
    with session_scope() as session:
        by_status = dict(
            session.execute(
                select(launches.Launch.status, func.count()).where(launched >= since, launched < until)
                .group_by(launches.Launch.status)
            ).all()
        )  # fmt: skip
        sweeps = int(session.scalar(select(func.count()).where(swept >= since, swept < until)) or 0)
    total = sum(int(v) for v in by_status.values())
    return {"total": total, "sweeps": sweeps,
            "counts": [{"status": s, "count": int(by_status[s])} for s in launches.ACTIVE + launches.ENDED if by_status.get(s)]}  # fmt: skip


def _decisions(since: datetime, until: datetime) -> tuple[int, list[dict[str, Any]]]:
    made = decisions.Decision.created_at
    with session_scope() as session:
        total = int(session.scalar(select(func.count()).where(made >= since, made < until)) or 0)
        latest = session.scalars(
            select(decisions.Decision).where(made >= since, made < until)
            .order_by(decisions.Decision.created_at.desc()).limit(SHOWN_DECISIONS)
        ).all()  # fmt: skip
        return total, [{"id": d.id, "text": d.text, "author": d.author} for d in latest]


def build(
    now: datetime | None = None, *, since: datetime | None = None, channel: str | None = None, quiet: str = "line"
) -> tuple[str, dict[str, Any]] | None:
    """The digest of `since` (a day before `now` by default) to `now`: (template, context), or None for a
    quiet day with `quiet="none"`."""
    now = now or datetime.now(UTC)
    since = since or now - DAY
    since_ms, until_ms = int(since.timestamp() * 1000), int(now.timestamp() * 1000)
    experiments, note = _experiments()
    runs, bests = _runs(experiments, since_ms, until_ms)
    launched = _launches(since, now)
    decision_count, latest = _decisions(since, now)
    cleanup = cleanup_pending(channel)
    is_quiet = not runs and not launched["total"] and not decision_count and not cleanup
    if is_quiet and quiet == "none":
        return None
    context: dict[str, Any] = {
        "since": since, "until": now, "quiet": is_quiet, "note": note,
        "experiments": runs[:SHOWN_EXPERIMENTS], "more_experiments": max(0, len(runs) - SHOWN_EXPERIMENTS),
        "totals": {k: sum(r[k] for r in runs) for k in ("started", "finished", "failed", "killed")},
        "bests": bests[:SHOWN_BESTS], "more_bests": max(0, len(bests) - SHOWN_BESTS), "launches": launched, "decisions": latest, "decision_count": decision_count,
        "cleanup": cleanup, "files": [],
    }  # fmt: skip
    if runs:
        context["files"] = _chart(runs, now)
    return "digest", context


def _chart(runs: list[dict[str, Any]], now: datetime) -> list[dict[str, str]]:
    values = [(r["experiment"], float(r["finished"] + r["failed"] + r["killed"])) for r in runs[:SHOWN_EXPERIMENTS]]
    if not any(v for _, v in values):
        return []
    try:
        path = charts.chart_path("digest", now.strftime("%Y-%m-%d"), values)
        path.parent.mkdir(parents=True, exist_ok=True)
        made = charts.bars(values, metric="runs ended", title="Runs ended since the last digest, per experiment", path=path)
    except Exception:
        log.warning("digest: could not draw its chart", exc_info=True)
        return []
    return [{"path": str(made), "title": "runs ended per experiment"}]


def digest_key(channel: str, day: str) -> str:
    return f"digest:{channel}:{day}"


POST_TASK = "labmate.digest.post"


def claim_due(now: datetime | None = None) -> list[str]:
    """Claim the digests whose time has come: each claim (its `digests` row) and its post job (a queued
    row of the job ledger: the outbox) commit together; a digest another process claimed first is
    left to it. Returns the job keys to send."""
    import uuid

    from models import jobs

    now = now or datetime.now(UTC)
    keys = []
    for item in due(now):
        key = str(uuid.uuid4())
        kwargs = {"channel": item.channel.channel, "day": item.day, "reply_to": {"channel": item.channel.channel,
                  "source": "slack"}, "audit_id": None}  # fmt: skip
        with session_scope() as session:
            if not watches.claim_digest(session, channel=item.channel.channel, day=item.day):
                continue
            jobs.add_queued(session, key=key, task=POST_TASK, kwargs=kwargs, audit_id=None)
        keys.append(key)
    return keys


def channel_config(channel: str) -> DigestChannel:
    for configured in get_settings().digest.channels:
        if configured.channel == channel:
            return configured
    return DigestChannel(channel=channel)


def post_work(
    channel: str, day: str, now: datetime | None = None, *, up_to_now: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """The post job's replies: the digest under its (channel, day) key, or nothing on a quiet day."""
    config = channel_config(channel)
    since, until = window(config, day, now or datetime.now(UTC), up_to_now=up_to_now)
    built = build(until, since=since, channel=channel, quiet=config.quiet)
    with session_scope() as session:
        watches.set_covered(session, channel=channel, day=day, until=until)
        if built is None:
            watches.digest_done(session, channel=channel, day=day, state=watches.QUIET)
    if built is None:
        return []
    template, context = built
    return [keyed(template, context, key=digest_key(channel, day), reply_to={"channel": channel, "source": "slack"})]


def settle(channel: str, day: str, outcome: str, reason: str) -> None:
    """After the post job: the day's row says what happened; a channel the bot is not in tells an admin once.
    A digest posted late (the reaper sent its job again after Slack's outage) moves its row from undelivered
    to delivered: the next day's digest starts where it ended instead of counting that day again."""
    state = watches.DELIVERED if outcome == "ok" else outcome
    with session_scope() as session:
        row = watches.digest_of(session, channel=channel, day=day)
        late = row is not None and row.state == watches.UNDELIVERED and state == watches.DELIVERED
        if row is not None and (row.state == watches.PENDING or late):
            watches.digest_done(session, channel=channel, day=day, state=state, outcome=reason)
    if NOT_IN_CHANNEL in reason:
        tell_admin_not_in_channel(channel)


def tell_admin_not_in_channel(channel: str) -> bool:
    """The bot can't post in a digest channel: the first admin is told, once per channel."""
    from labmate import outbox

    admins = get_settings().access.admins
    with session_scope() as session:
        first = watches.alert_once(session, key=f"digest-not-in-channel:{channel}")
    if not first:
        return False
    if not admins:
        log.error("the digest can't be posted in %s (the bot is not in it) and no admin is configured", channel)
        return False
    try:
        outbox.deliver(
            {"channel": admins[0], "source": "slack"}, "digest_not_in_channel", {"channel": channel},
            key=f"alert:digest-not-in-channel:{channel}",
        )  # fmt: skip
    except Exception:
        log.exception("could not tell admin %s that the bot is not in %s", admins[0], channel)
    return True
