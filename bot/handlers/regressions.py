"""regress, regressions, promote: regression runs as the user sees them.

Everything that can be checked without MLflow is checked here, before anything is stored: the suite
is a file inside a configured suites folder and passes validation, targets named in chat are of an
allowed kind, `workers:` is within the limit, the tags select something. Then the run's row and its
jobs (the card, the start) are written in the command's own transaction; dispatch sends the jobs
after the commit. Whether a model target exists in the registry is the worker's to find out (this
process never imports MLflow): a missing one ends the run with that message on its card.
"""

from __future__ import annotations

import math
import os
import shlex
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bot import access
from bot.grammar.regressions import PromoteArgs, RegressArgs, RegressionsArgs
from bot.messages import mrkdwn
from bot.origin import JobRequest, Origin, Reply
from labmate import launch_text, suites
from labmate.errors import AccessDenied, NotFoundError, UsageError
from labmate.settings import RegressSuiteRules, get_settings
from models import regressions

START_TASK = "labmate.regress.start"
CARD_TASK = "labmate.regressions.card"
PROMOTE_TASK = "labmate.regressions.promote"
MIN_CHUNK = 16
"""Conversations (× targets) per chunk at least: a small suite is not split finer than its work pays for."""
CHUNKS_PER_WORKER = 4


def chunk_size(total: int, workers: int) -> int:
    """Sized to the work: a few chunks per worker (smooth progress, even load), never tiny ones."""
    return max(MIN_CHUNK, math.ceil(total / (workers * CHUNKS_PER_WORKER)))


def _shown_path(path: Path) -> str:
    """The suite's path as the CLI would be given it from here (its errors name the file that way):
    relative when it is below this directory, else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _cli(path: str, args: RegressArgs) -> str:
    """The `labmate regress` command that runs what `args` asked for, to paste in a terminal."""
    options = [f"--candidate {shlex.quote(args.candidate)}"] if args.candidate else []
    options += [f"--baseline {shlex.quote(args.baseline)}"] if args.baseline else []
    options += [f"--tag {shlex.quote(tag)}" for tag in args.tags]
    return " ".join(["labmate regress", shlex.quote(path), *options])


def regress(args: RegressArgs, origin: Origin, session: Session) -> Reply:
    from tasks.regress.errors import NoCandidate, RegressError
    from tasks.regress.session import plan

    config = get_settings().regress
    if args.workers is not None and args.workers > config.max_workers:
        raise UsageError(
            f"`workers:{args.workers}` is more than allowed: at most {config.max_workers} "
            "(labmate.toml `[regress] max_workers`).",
            hint=f"e.g. `workers:{config.max_workers}`",
        )
    found = suites.find(args.suite, config)
    rules = config.suites.get(found.name, RegressSuiteRules())
    for role, uri in (("candidate", args.candidate), ("baseline", args.baseline)):
        if uri:
            suites.check_target(role, uri, found.name, rules)
    shown = _shown_path(found.path)
    try:
        run_plan = plan([shown], args.candidate, args.baseline, list(args.tags) or None, within=suites.folders(config))
    except NoCandidate:
        raise UsageError(f"`{found.name}` names no candidate target: say which model to test, "
                         f"e.g. `regress {found.name} candidate:models:/<model>@candidate`.") from None
    except RegressError as exc:
        raise UsageError(str(exc), hint=f"`{_cli(shown, args)}` says the same in a terminal.") from None
    workers = args.workers or config.workers
    total = len(run_plan.conversations) * len(run_plan.targets)
    size = chunk_size(total, workers)
    task_id = str(uuid.uuid4())
    run = regressions.create(
        session, user=origin.user, channel=origin.channel, suite=found.name, suite_file=str(found.path),
        targets=dict(run_plan.targets), tags=list(args.tags), gate=run_plan.gate, workers=workers,
        chunks=math.ceil(total / size), total=total, reply_to=_card_reply_to(origin), task_id=task_id,
        report_job=f"{task_id}/report", suite_digest=run_plan.digest(),
    )
    label = run.label
    return Reply(
        "regress_queued",
        {"label": label, "suite": found.name, "file": found.shown, "conversations": len(run_plan.conversations),
         "targets": [{"role": r, "uri": u} for r, u in run_plan.targets.items()], "tags": list(args.tags),
         "chunks": run.chunks, "workers": workers},
        jobs=[
            JobRequest(CARD_TASK, {"run_id": run.id, "closes_audit": False}, what="its card"),
            JobRequest(START_TASK, {"run_id": run.id}, what=f"regression run {label}", key=task_id),
        ],
        task_ids=[run.report_job],
    )


def _counted(run: regressions.RegressionRun, bucket: str) -> int:
    """The card shows the first few of each kind and counts the rest under `more`."""
    shown = run.highlights.get(bucket) or []
    return len(shown) + int((run.highlights.get("more") or {}).get(bucket, 0))


def _card_reply_to(origin: Origin) -> dict[str, Any]:
    reply_to = origin.reply_to()
    reply_to.pop("ephemeral", None)
    return reply_to


def listing(args: RegressionsArgs, origin: Origin, session: Session) -> Reply:
    rows = regressions.recent(session, suite=args.suite, since=args.since)
    if not rows and args.suite:
        suites.find(args.suite, get_settings().regress)  # "0 runs of nosuch" hid a misspelt name: say so
    shown = []
    for run in rows:
        candidate = run.counts.get("candidate") or {}
        when = launch_text.elapsed(launch_text.since(run.created_at))
        shown.append({
            "label": run.label, "suite": run.suite, "status": run.status, "user": run.user, "ago": when,
            "pass_rate": f"{candidate['pass_rate']:.0%}" if "pass_rate" in candidate else "",
            "progress": f"{run.done}/{run.total}", "new_failures": _counted(run, "new_failures"),
            "fixes": _counted(run, "fixes"), "reason": run.reason,
            "candidate": run.targets.get("candidate", ""), "promoted_by": run.promoted_by or "",
        })
    return Reply("regressions_list", {"runs": shown, "suite": args.suite or "", "since": bool(args.since)})


def _why_not_finished(run: regressions.RegressionRun) -> str:
    """The run's reason, without the `NOT_FINISHED` a reaped run's reason starts with (said already)."""
    return run.reason.removeprefix(regressions.NOT_FINISHED).rstrip(".")


def may_promote(origin: Origin) -> bool:
    settings = get_settings()
    return origin.user in settings.access.admins or access.matches(settings.regress.promoters, origin)


def promote(args: PromoteArgs, origin: Origin, session: Session) -> Reply:
    settings = get_settings()
    run = regressions.get(session, run_id=args.run_id)
    if run is None:
        raise NotFoundError(f"There is no regression run R{args.run_id}.", hint="`regressions` lists the runs.")
    if not may_promote(origin):
        raise AccessDenied(
            f"You can't promote {run.label}: promoting is for {access.names(settings.regress.promoters)} and the admins "
            f"({access.admin_names(settings.access)}), as labmate.toml `[regress] promoters` says. Nothing changed.",
            hint="Whoever runs labmate adds people (or a Slack user group) to `[regress] promoters` in labmate.toml.",
        )
    if run.status != regressions.PASSED:
        why = {regressions.FAILED: f"its verdict is *failed* ({run.reason or 'the gate failed'})",
               regressions.ERROR: f"it could not finish ({_why_not_finished(run)})"}.get(run.status, f"it is still {run.status}")
        raise UsageError(f"{run.label} can't be promoted: {why}. Only a run whose gate passed can be.")
    if not run.candidate_model or not run.candidate_version:
        raise UsageError(f"{run.label}'s candidate `{run.targets.get('candidate', '')}` is not a registered model "
                         "version, so there is no alias to move.")
    if run.promoted_by:
        raise _already(run, settings.regress.promote_alias, session)
    # A run whose earlier Promote moved the alias and stopped before its decision is finished, not
    # promoted anew: a newer run that failed since doesn't stop that.
    newer = None if "moving_from" in (run.promotion or {}) else regressions.newer_failed(session, run=run)
    if newer is not None:
        raise UsageError(f"{run.label} can't be promoted: a newer run of `{run.suite}`, {newer.label}, "
                         f"{'failed its gate' if newer.status == regressions.FAILED else 'could not finish'}"
                         f"{': ' + _why_not_finished(newer) if newer.reason else ''}.")
    promoted = regressions.newer_promoted(session, run=run)
    if promoted is not None:
        how = "was promoted since" if promoted.promoted_by else "may have moved the alias since (its Promote stopped)"
        raise UsageError(
            f"{run.label} can't be promoted: a newer run of `{run.suite}`, {promoted.label}, {how} "
            f"(`{promoted.candidate_model} v{promoted.candidate_version}` to `@{settings.regress.promote_alias}`). "
            f"Promoting {run.label} would move the alias back to a candidate compared with the production before it. "
            f"`regress {run.suite}` compares it with today's."
        )
    if not regressions.claim_promotion(session, run_id=run.id, user=origin.user):
        session.refresh(run)
        raise _already(run, settings.regress.promote_alias, session)
    return Reply(
        "regress_promoting",
        {"label": run.label, "model": run.candidate_model, "version": run.candidate_version,
         "alias": settings.regress.promote_alias},
        jobs=[JobRequest(PROMOTE_TASK, {"run_id": run.id}, what=f"promoting {run.label}")],
    )


def _already(run: regressions.RegressionRun, alias: str, session: Session) -> UsageError:
    """What happened then, not what the alias is now: a newer run may have moved it since (said), or a
    person, by hand in MLflow."""
    model = mrkdwn.escape(f"{run.candidate_model} v{run.candidate_version}")
    if not (run.promotion or {}).get("decision_id"):  # pressed, its job not done: the alias hasn't moved yet
        return UsageError(
            f"{run.label} is being promoted by {mrkdwn.user(run.promoted_by or '')}: `{model}` becomes "
            f"`@{mrkdwn.escape(alias)}` once its job has moved the alias; its card will say so. Nothing more to do.",
            markup=True,
        )
    since = regressions.newer_promoted(session, run=run)
    moved = "moved" if since is not None and (since.promotion or {}).get("decision_id") else "is moving"
    later = (f" Since then {since.label} {moved} `@{mrkdwn.escape(alias)}` to "
             f"`{mrkdwn.escape(f'{since.candidate_model} v{since.candidate_version}')}`." if since is not None else "")
    made = "found" if (run.promotion or {}).get("already") else "made"  # the alias was there already: nothing moved
    return UsageError(
        f"{run.label} was already promoted by {mrkdwn.user(run.promoted_by or '')}: that {made} `{model}` "
        f"`@{mrkdwn.escape(alias)}`.{later} It is promoted once; nothing changed.",
        markup=True,
    )
