"""run, sweep, status, cancel: launches as the user sees them.

Everything that can be checked is checked here, before anything is stored: the project is in
labmate.toml, the user may launch it, the entry point is allowed, every value matches its declared
type. Then the launch row (or the sweep and its runs) and its jobs are written in the command's own
transaction (dispatch stores the jobs as the ledger's outbox and sends them after the commit). This
process never imports MLflow: the worker fetches the project, creates the run and starts it.
"""

from __future__ import annotations

import itertools
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from bot import access
from bot.grammar.launches import CancelArgs, RunArgs, StatusArgs, SweepArgs
from bot.messages import mrkdwn
from bot.origin import JobRequest, Origin, Reply
from labmate import launch_text, projects
from labmate.errors import AccessDenied, NotFoundError, UsageError
from labmate.settings import ProjectConfig, get_settings
from models import launches

RUN_TASK = "labmate.launch.run"
CARD_TASK = "labmate.launches.card"
SWEEP_START = "labmate.sweeps.start"
ENDED_WORDS = {
    launches.FINISHED: "already finished", launches.FAILED: "already failed", launches.KILLED: "was already stopped",
}


def _card_reply_to(origin: Origin) -> dict[str, Any]:
    """Where a launch's card goes: the command's channel (or thread, or terminal), for everyone to see."""
    reply_to = origin.reply_to()
    reply_to.pop("ephemeral", None)
    return reply_to


def _entry(args: RunArgs | SweepArgs, origin: Origin) -> tuple[ProjectConfig, projects.EntryPoint]:
    settings = get_settings()
    project = projects.lookup(settings, args.project)
    access.check_launch(args.project, project, origin, settings.access)
    name = projects.entry_point_name(args.project, project, args.entry_point)
    return project, projects.entry_point(args.project, project, name)


def _params_view(resolved: projects.Resolved) -> list[dict[str, Any]]:
    return [{"key": k, "value": v, "given": k in resolved.given} for k, v in resolved.params.items()]


def _command_shown(project_name: str, project: ProjectConfig, entry: projects.EntryPoint, params: dict[str, str]) -> str:
    if project.remote or entry.command is None:
        where = project.shown_uri + (f"@{project.version}" if project.version else "")
        return f"entry point {entry.name} of the MLproject at {where} (fetched by the worker)"
    return projects.shown_command(projects.command_argv(entry, params, project.local_path()))


def _checked_command(project: ProjectConfig, entry: projects.EntryPoint, params: dict[str, str]) -> None:
    """A local project's command is built here too, so a missing `path` or a command that needs a shell is
    refused now rather than when the worker starts it (a git project's command is the worker's to check)."""
    if not project.remote and entry.command is not None:
        projects.command_argv(entry, params, project.local_path())


def run(args: RunArgs, origin: Origin, session: Session) -> Reply:
    project, entry = _entry(args, origin)
    resolved = projects.resolve(args.project, entry, list(args.params))
    _checked_command(project, entry, resolved.params)
    if args.dry_run:
        return Reply(
            "launch_dry_run",
            {
                "project": args.project,
                "entry_point": entry.name,
                "experiment": project.experiment,
                "params": _params_view(resolved),
                "command": _command_shown(args.project, project, entry, resolved.params),
                "time_limit": launch_text.elapsed(project.time_limit),
            },
        )
    task_id = str(uuid.uuid4())
    launch = launches.create(
        session,
        user=origin.user,
        channel=origin.channel,
        project=args.project,
        entry_point=entry.name,
        params=resolved.params,
        experiment=project.experiment,
        reply_to=_card_reply_to(origin),
        task_id=task_id,
        total_steps=projects.total_steps(project, resolved.params),
    )
    label = launch.label
    return Reply(
        "launch_queued",
        {"label": label, "project": args.project, "entry_point": entry.name, "params": _params_view(resolved)},
        jobs=[
            JobRequest(RUN_TASK, {"launch_id": launch.id, "project": args.project}, what=f"launch {label}", key=task_id),
            JobRequest(CARD_TASK, {"launch_id": launch.id, "closes_audit": False}, what="its card"),
        ],
    )


def _grid(args: SweepArgs, entry: projects.EntryPoint) -> list[tuple[str, tuple[str, ...]]]:
    listing = f"Parameters of `{args.project}:{entry.name}`: {entry.listing()}."
    grid: list[tuple[str, tuple[str, ...]]] = []
    for name, values in args.grid:
        if name is None:
            projects.resolve(args.project, entry, [(None, values[0])])  # raises: what it expected
            continue
        if name in (n for n, _ in grid):
            raise UsageError(f"`{name}` is given twice; list all its values once: `{name}=1,2,3`.", hint=listing)
        grid.append((name, tuple(dict.fromkeys(values))))
    return grid


def sweep(args: SweepArgs, origin: Origin, session: Session) -> Reply:
    project, entry = _entry(args, origin)
    grid = _grid(args, entry)
    size = math.prod(len(values) for _, values in grid)
    if size > project.max_sweep_size:
        shape = " × ".join(f"{len(values)} {name}" for name, values in grid)
        raise UsageError(
            f"That sweep is {size} runs ({shape}); `{args.project}` allows at most {project.max_sweep_size} in one sweep.",
            hint="Drop some values, or split it into sweeps of the allowed size.",
        )
    if args.parallel is not None and args.parallel > project.max_parallel_runs:
        shown = str(args.parallel) if args.parallel < 10**20 else f"{str(args.parallel)[:20]}…"
        raise UsageError(
            f"`parallel:{shown}` is more than `{args.project}` allows: at most {project.max_parallel_runs} "
            "of its runs at once.",
            hint=f"e.g. `parallel:{project.max_parallel_runs}`",
        )
    parallel = min(args.parallel or project.max_parallel_runs, size)
    names = [name for name, _ in grid]
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*(v for _, v in grid))]
    resolved = [projects.resolve(args.project, entry, list(combo.items())) for combo in combos]
    for r in resolved:
        _checked_command(project, entry, r.params)
    varying = [name for name, values in grid if len(values) > 1]
    runs = [{"params": ", ".join(f"{k}={r.params[k]}" for k in varying) or "(one run)"} for r in resolved]
    if args.dry_run:
        return Reply(
            "sweep_dry_run",
            {"project": args.project, "entry_point": entry.name, "size": size, "parallel": parallel, "runs": runs,
             "fixed": [{"key": k, "value": v} for k, v in resolved[0].params.items() if k not in varying]},
        )
    reply_to = _card_reply_to(origin)
    summary_job = str(uuid.uuid4())
    created = launches.create_sweep(
        session, user=origin.user, channel=origin.channel, project=args.project, entry_point=entry.name,
        grid=[[name, list(values)] for name, values in grid], size=size, parallel=parallel, reply_to=reply_to,
        summary_job=summary_job,
    )
    members = [
        launches.create(
            session, user=origin.user, channel=origin.channel, project=args.project, entry_point=entry.name,
            params=r.params, experiment=project.experiment, reply_to=reply_to, task_id=str(uuid.uuid4()),
            total_steps=projects.total_steps(project, r.params), sweep_id=created.id, holds_slot=False,
        )
        for r in resolved
    ]
    label = f"S{created.id}"
    return Reply(
        "sweep_queued",
        {"label": label, "project": args.project, "entry_point": entry.name, "size": size, "parallel": parallel,
         "first": members[0].label, "last": members[-1].label},
        jobs=[JobRequest(SWEEP_START, {"sweep_id": created.id}, what=f"sweep {label}")],
        # the terminal waits for every run of the sweep and its summary, not only for its start
        task_ids=[*(m.task_id for m in members), summary_job],
    )


def status(args: StatusArgs, origin: Origin, session: Session) -> Reply:
    rules = get_settings().access
    if args.everywhere and origin.user not in rules.admins:
        raise AccessDenied("`status all` is for admins; `status` shows the launches of this channel.")
    rows = launches.active(session, channel=None if args.everywhere else origin.channel)
    positions = launches.queue_positions(session)
    now = datetime.now(UTC)
    primary = get_settings().primary_metrics
    shown = []
    for launch in rows:
        where, when = launch_text.where_and_when(
            launch, positions.get(launch.id), now, waiting="waiting for a slot in its sweep"
        )
        metrics = launch_text.ordered_metrics(launch.metrics or {}, primary.get(launch.experiment), count=1)
        shown.append({
            "label": launch.label, "project": launch.project, "entry_point": launch.entry_point, "user": launch.user,
            "status": launch.status, "where": where, "when": when, "metric": metrics[0] if metrics else None,
            "channel": launch.channel, "sweep": f"S{launch.sweep_id}" if launch.sweep_id else "",
        })
    return Reply("launch_status", {"launches": shown, "everywhere": args.everywhere})


def _find(args: CancelArgs, session: Session) -> launches.Launch:
    """The launch `cancel` names. A bare number of 6+ digits (both fields set) is a launch id or the start of
    a run id: whichever exists is it, and when both do, the user is asked to say which."""
    hint = "`status` lists the queued and running launches."
    if args.launch_id is not None:
        found = launches.get(session, launch_id=args.launch_id)
        if args.run_ref is None:
            if found is None:
                raise NotFoundError(f"There is no launch L{args.launch_id}.", hint=hint)
            return found
        by_run = [m for m in launches.by_run(session, ref=args.run_ref) if found is None or m.id != found.id]
        if found is not None and by_run:
            runs = ", ".join(f"{m.label} ({(m.mlflow_run_id or '')[:12]}…)" for m in by_run)
            ids = "run ids" if len(by_run) > 1 else "run id"
            raise UsageError(
                f"`{args.run_ref}` is both launch L{args.launch_id} and the start of the MLflow {ids} of {runs}. "
                f"Say `cancel L{args.launch_id}` or `cancel run:{args.run_ref}`."
            )
        if found is not None:
            return found
        if not by_run:
            raise NotFoundError(
                f"There is no launch L{args.launch_id}, and no launch has an MLflow run id starting `{args.run_ref}`.",
                hint=hint,
            )
    ref = args.run_ref or ""
    matches = launches.by_run(session, ref=ref)
    if not matches:
        raise NotFoundError(
            f"No launch has an MLflow run `{ref}`; only runs launched from chat can be stopped here.",
            hint="`status` lists the queued and running launches.",
        )
    if len(matches) > 1:
        shown = ", ".join(f"{m.label} ({(m.mlflow_run_id or '')[:12]})" for m in matches)
        raise UsageError(f"`{ref}` starts the run ids of several launches: {shown}. Use the launch id.")
    return matches[0]


def cancel(args: CancelArgs, origin: Origin, session: Session) -> Reply:
    settings = get_settings()
    launch = _find(args, session)
    access.check_owner("cancel", launch.user, launch.label, origin, settings.access)
    project = settings.projects.get(launch.project)
    as_owner = origin.user == launch.user and origin.user not in settings.access.admins
    if as_owner and (project is None or not access.may_launch(launch.project, project, origin, settings.access)):
        raise AccessDenied(
            f"You launched {launch.label}, but you may no longer launch `{launch.project}` (see labmate.toml), "
            "so you can't stop it either; ask an admin."
        )
    if not launches.end(session, launch_id=launch.id, status=launches.KILLED, stopped_by=origin.user):
        session.refresh(launch)
        raise _ended(launch)
    return Reply(
        "launch_cancelled",
        {"label": launch.label, "project": launch.project, "was": "running" if launch.started_at else "queued",
         "has_run": bool(launch.mlflow_run_id)},
        jobs=[JobRequest(CARD_TASK, {"launch_id": launch.id}, what=f"stopping {launch.label}")],
    )


def _ended(launch: launches.Launch) -> UsageError:
    ago = launch_text.elapsed(launch_text.since(launch.ended_at))
    if launch.status == launches.KILLED and launch.stopped_by:
        who = mrkdwn.user(launch.stopped_by)
        return UsageError(f"{launch.label} was already stopped by {who} {ago} ago.", hint="Nothing to stop.", markup=True)
    return UsageError(f"{launch.label} {ENDED_WORDS.get(launch.status, 'already ended')} {ago} ago.", hint="Nothing to stop.")
