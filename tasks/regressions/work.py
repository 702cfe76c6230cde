"""A regression run on the workers: start (resolve and load the targets, fan the chunks out as a Celery
group on the `regress` queue), chunks (run their conversations in process, with each target loaded once
per worker process and kept), and the report (join the chunks' results, apply the gate, log to MLflow).

The join is the knowledge base's: each chunk stores its results under (run, index), so a redelivered
chunk counts once, and the chunk that stores the last one moves the run to `reporting` with one
conditional UPDATE and stores the report job in the same transaction (sent after the commit; the reaper
sends it if that fails). A Celery chord would keep its counter in the result backend, where a chunk
the reaper re-sends after its worker died would never be counted. Nothing leaves a run `running`: any
failure ends it `error` with the reason on its card, and a chunk whose workers keep dying is given up
by the reaper, which ends the run the same way (`settle`).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from labmate import suites
from labmate.errors import LabmateError, new_error_id
from labmate.settings import get_settings, mask_url
from models import decision, jobs, regressions
from models.db import session_scope
from models.errors import Unavailable
from tasks.jobs import Replies
from tasks.regress.errors import RegressError
from tasks.regressions import cards

log = logging.getLogger(__name__)

START_TASK = "labmate.regress.start"
CHUNK_TASK = "labmate.regress.chunk"
REPORT_TASK = "labmate.regress.report"
CARD_TASK = "labmate.regressions.card"
PROMOTE_TASK = "labmate.regressions.promote"
SHOWN = 5
REPLY_CHARS = 300


def _options() -> dict[str, Any]:
    return {"tracking_uri": get_settings().mlflow_tracking_uri}


class SuiteChanged(LabmateError):
    pass


@lru_cache(maxsize=8)
def _plan(suite_file: str, mtime: float, candidate: str, baseline: str | None, tags: tuple[str, ...]) -> Any:
    """The run's conversations, parsed once per worker process (and again only if the file changed)."""
    from tasks.regress.session import plan

    return plan([suite_file], candidate, baseline, list(tags) or None, options=_options(),
                within=suites.folders(get_settings().regress))


def plan_of(run: regressions.RegressionRun) -> Any:
    """The suite as the run was asked for: each chunk takes its slice of the conversations by position,
    so a suite edited meanwhile (a `git pull` on a worker) would run other conversations than the count
    and the report expect, and mix two versions in one verdict: the run stops with why instead."""
    targets = run.resolved or run.targets
    path = suites.recheck(run.suite_file, get_settings().regress)
    run_plan = _plan(str(path), path.stat().st_mtime, targets["candidate"], targets.get("baseline"), tuple(run.tags))
    if run.suite_digest and run_plan.digest() != run.suite_digest:
        raise SuiteChanged(
            f"`{run.suite}` changed after {run.label} was asked for, so it stopped: its verdict would mix two "
            f"versions of the suite. Run `regress {run.suite}` again for the suite as it is now."
        )
    return run_plan


def chunk_bounds(run: regressions.RegressionRun, index: int) -> tuple[int, int]:
    size = math.ceil(run.total / run.chunks)
    return index * size, min((index + 1) * size, run.total)


def _ended_with_error(run_id: int, reason: str) -> Replies:
    with session_scope() as session:
        regressions.fail(session, run_id=run_id, reason=reason)
        keys = _store_report(session, run_id)
    _send(keys)
    return [cards.reply(run_id)]


def ending_on_error(run_id: int, what: str, work: Callable[[], Replies]) -> Replies:
    """Whatever breaks, the run ends (`error`, with the reason on its card) instead of staying `running`."""
    try:
        return work()
    except Unavailable:
        raise  # the job retries with backoff; the reaper ends the run if it never comes back
    except (LabmateError, RegressError) as exc:
        message = exc.message if isinstance(exc, LabmateError) else str(exc)
        return _ended_with_error(run_id, message)
    except Exception as exc:
        error_id = new_error_id()
        log.exception("regression run R%s: %s failed [%s]", run_id, what, error_id)
        return _ended_with_error(run_id, f"{what} failed ({type(exc).__name__}; error id {error_id})")


# -- start -----------------------------------------------------------------------------------------


def start(run_id: int) -> Replies:
    return ending_on_error(run_id, "starting the run", lambda: _start(run_id))


def _start(run_id: int) -> Replies:
    run = cards.load(run_id)
    if run.status in regressions.ENDED:
        return [cards.reply(run_id)]
    if run.status == regressions.QUEUED:
        from tasks.mlflow_io import regressions as mlflow_regressions
        from tasks.regress.targets import load_target

        plan_of(run)
        resolved = {role: mlflow_regressions.resolve(uri) for role, uri in run.targets.items()}
        for target in resolved.values():
            load_target(target.uri, {**plan_options(run), **_options()})  # can't load: the run ends with why
        candidate, baseline = resolved["candidate"], resolved.get("baseline")
        with session_scope() as session:
            regressions.start(
                session, run_id=run_id, resolved={role: r.uri for role, r in resolved.items()},
                candidate_model=candidate.model if candidate.version else None, candidate_version=candidate.version,
                baseline_version=baseline.version if baseline is not None and baseline.model == candidate.model else None,
            )
        run = cards.load(run_id)
    if run.status == regressions.RUNNING:
        fan_out(run)  # a redelivered start sends the chunks again: each runs once (the job ledger)
    return [cards.reply(run_id)]


def plan_options(run: regressions.RegressionRun) -> dict[str, Any]:
    """The suite's own options for its targets (reply paths, headers), so the start loads what chunks load."""
    from tasks.regress.suite import load_suite

    options = load_suite(run.suite_file).options
    return {k: v for k, v in options.items() if k in ("reply_path", "intent_path", "headers")}


def chunk_key(run: regressions.RegressionRun, index: int) -> str:
    return f"{run.task_id}/{index}"


def fan_out(run: regressions.RegressionRun) -> None:
    """The chunks as one Celery group on the `regress` queue, each also a ledger row (the reaper's view)."""
    from celery import group

    from tasks.app import celery_app

    reply_to = dict(run.reply_to)
    kwargs = [{"run_id": run.id, "index": i, "reply_to": reply_to, "audit_id": None} for i in range(run.chunks)]
    keys = [chunk_key(run, i) for i in range(run.chunks)]
    with session_scope() as session:
        for key, kw in zip(keys, kwargs, strict=True):
            if jobs.get(session, key=key) is None:
                jobs.add_queued(session, key=key, task=CHUNK_TASK, kwargs=kw, audit_id=None)
    app = celery_app()
    group(
        app.signature(CHUNK_TASK, kwargs=kw, task_id=key, ignore_result=True, argsrepr="()", kwargsrepr="{…}")
        for key, kw in zip(keys, kwargs, strict=True)
    ).apply_async()
    with session_scope() as session:
        jobs.mark_sent(session, keys=keys)


# -- chunks ----------------------------------------------------------------------------------------


def chunk(run_id: int, index: int) -> Replies:
    return ending_on_error(run_id, f"chunk {index + 1}", lambda: _chunk(run_id, index))


def _chunk(run_id: int, index: int) -> Replies:
    from tasks.regress.execution import run_jobs

    run = cards.load(run_id)
    if run.status != regressions.RUNNING:
        return []  # ended meanwhile (an error elsewhere), or already complete: nothing to add
    first, last = chunk_bounds(run, index)
    work = plan_of(run).jobs()[first:last]
    results = [[role, result] for role, result in run_jobs(work, workers=1)]
    with session_scope() as session:
        regressions.add_chunk(session, run_id=run_id, index=index, results=results)
        keys = _store_report(session, run_id) if regressions.to_reporting(session, run_id=run_id) else []
    _send(keys)
    return [cards.reply(run_id)]


def _store_report(session: Session, run_id: int) -> list[str]:
    """The report job as an outbox row (in the caller's transaction); its key, to send after the commit."""
    run = regressions.get(session, run_id=run_id)
    if run is None or not run.report_job or jobs.get(session, key=run.report_job) is not None:
        return []
    jobs.add_queued(session, key=run.report_job, task=REPORT_TASK,
                    kwargs={"run_id": run_id, "reply_to": dict(run.reply_to), "audit_id": None}, audit_id=None)
    return [run.report_job]


def _send(keys: list[str]) -> None:
    if keys:
        from tasks.maintenance import send_stored

        send_stored(keys)


# -- the report ------------------------------------------------------------------------------------


def report(run_id: int) -> Replies:
    return ending_on_error(run_id, "writing the report", lambda: _report(run_id))


def _report(run_id: int) -> Replies:
    from tasks.regress.verdict import build_report

    run = cards.load(run_id)
    if run.status != regressions.REPORTING:
        return [cards.reply(run_id)]
    with session_scope() as session:
        stored = regressions.results(session, run_id=run_id)
    run_plan = plan_of(run)
    by_role: dict[str, dict[str, dict[str, Any]]] = {role: {} for role in run_plan.targets}
    for role, result in stored:
        by_role[role][result["conversation_key"]] = result
    built = build_report(run_plan.conversations, by_role, run_plan.targets, run.gate)
    notes = list(built["verdict"]["notes"])
    try:
        _log_to_mlflow(run, built)
    except Unavailable:
        raise  # the knowledge base: the job retries with backoff and logs the report then
    except Exception as exc:
        log.warning("regression run R%s: report not logged to MLflow", run_id, exc_info=True)
        notes.append(f"The report could not be logged to MLflow ({type(exc).__name__}: {mask_url(str(exc))[:200]}).")
    status = regressions.PASSED if built["verdict"]["passed"] else regressions.FAILED
    with session_scope() as session:
        regressions.finish(session, run_id=run_id, status=status, reason="\n".join(built["verdict"]["reasons"]),
                           counts=built["summary"], highlights={**highlights(built), "notes": notes})
    return [cards.reply(run_id)]


def _log_to_mlflow(run: regressions.RegressionRun, built: dict[str, Any]) -> None:
    from tasks.mlflow_io import regressions as mlflow_regressions
    from tasks.regress.reports.html_report import write_html
    from tasks.regress.reports.json_report import write_json
    from tasks.regress.reports.junit import write_junit

    folder = mlflow_regressions.report_dir()
    try:
        files = {"json": folder / "report.json", "junit": folder / "junit.xml", "html": folder / "report.html"}
        write_json(built, files["json"])
        write_junit(built, files["junit"])
        write_html(built, files["html"])
        run_id, experiment_id = run.mlflow_run_id, run.mlflow_experiment_id
        if not run_id:
            run_id, experiment_id = mlflow_regressions.create_run(label=run.label, suite=run.suite, user=run.user)
            try:
                with session_scope() as session:  # a retried report completes this run instead of starting another
                    regressions.set_mlflow(session, run_id=run.id, mlflow_run_id=run_id, experiment_id=experiment_id)
            except Exception:
                mlflow_regressions.discard_run(run_id)
                raise
        mlflow_regressions.log_report(run_id, built, suite=run.suite, tags=list(run.tags), files=files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _newer_was_promoted(
    run: regressions.RegressionRun, newer: regressions.RegressionRun, alias: str, version: str
) -> LabmateError:
    return LabmateError(
        f"{run.label} was not promoted: a newer run of `{run.suite}`, {newer.label}, was promoted meanwhile "
        f"(`{newer.candidate_model} v{newer.candidate_version}`), and moving `@{alias}` back to v{version} "
        "would undo that. Nothing moved."
    )


def _put_back(
    run: regressions.RegressionRun, newer: regressions.RegressionRun | None, model: str, alias: str, version: str,
    current: str | None,
) -> None:
    """This job moved the alias after it had stopped holding the press (paused, and the reaper's copy of it
    finished, or a newer run was promoted since): where a newer run put the alias, it goes back there; MLflow
    has no compare-and-set for aliases, so the check before the move can't close the window alone."""
    if newer is None or newer.candidate_model != model or current == version:
        return  # the press was finished by another copy of this job (the alias is where it put it), or nothing moved
    target = newer.candidate_version
    if not target or target == version:
        return
    from tasks.mlflow_io import regressions as mlflow_regressions

    log.warning("R%s: its promote job resumed after %s was promoted; @%s goes back to v%s", run.id, newer.label,
                alias, target)
    mlflow_regressions.move_alias(model, alias, target)


def _cut(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= REPLY_CHARS else text[:REPLY_CHARS] + "…"


def highlights(built: dict[str, Any]) -> dict[str, Any]:
    """What the card shows first: new failures, then fixes, each with the first turn where the replies
    diverge; without a baseline, the candidate's failures with their first failing turn."""
    shown: dict[str, Any] = {"new_failures": [], "fixes": [], "failures": [], "more": {}}
    for entry in built["conversations"]:
        change = entry["change"]
        bucket = {"new_failure": "new_failures", "fix": "fixes"}.get(change or "")
        if bucket is None and change is None and entry["status"]["candidate"] != "pass":
            bucket = "failures"
        if bucket is None:
            continue
        if len(shown[bucket]) >= SHOWN:
            shown["more"][bucket] = shown["more"].get(bucket, 0) + 1
            continue
        item: dict[str, Any] = {"key": entry["key"]}
        divergence = entry.get("divergence")
        if divergence:
            item.update(turn=divergence["turn"], user=_cut(divergence["user"]),
                        baseline=_cut(divergence["baseline_reply"]), candidate=_cut(divergence["candidate_reply"]))
        failure = entry.get("failure")
        if failure:
            item["failure"] = {"turn": failure["turn"], "user": _cut(failure["user"]), "reply": _cut(failure["reply"]),
                               "why": _cut(" ".join(x for x in (failure["expectation"], failure["detail"]) if x))}
        shown[bucket].append(item)
    return shown


# -- card and promote ------------------------------------------------------------------------------


def card(run_id: int) -> Replies:
    return [cards.reply(run_id)]


def promote(run_id: int) -> Replies:
    from tasks.mlflow_io import regressions as mlflow_regressions

    run = cards.load(run_id)
    alias = get_settings().regress.promote_alias
    model, version = run.candidate_model or "", run.candidate_version or ""
    token = run.promoted_at  # this press's; the reaper may release the run, and someone press again
    if run.promotion.get("decision_id"):
        return [_promoted_reply(run), cards.reply(run_id)]  # a redelivered job: done already
    if run.promoted_by is None:
        return [cards.reply(run_id)]  # released by the reaper before it ran, who told the person who pressed
    with session_scope() as session:
        newer = regressions.newer_promoted(session, run=run, moving=True)
        if newer is not None:
            regressions.release_promotion(session, run_id=run_id, token=token)
    if newer is not None:  # its press came after this one's, its job ran first: this one must not undo it
        raise _newer_was_promoted(run, newer, alias, version)
    current: str | None = None
    known = False
    try:
        current, known = mlflow_regressions.alias_version(model, alias), True
        resumed = "moving_from" in run.promotion and current == version
        before = run.promotion["moving_from"] if resumed else current  # resumed: an earlier attempt moved it
        with session_scope() as session:  # checked again just before the move: this job may have been paused
            if not regressions.holds_promotion(session, run_id=run_id, token=token):
                return [cards.reply(run_id)]  # released or finished meanwhile (whoever did told the person)
            newer = regressions.newer_promoted(session, run=run, moving=True)
            if newer is None and not resumed:
                regressions.set_promotion(session, run_id=run_id, promotion={"alias": alias, "moving_from": before})
        if newer is not None:
            raise _newer_was_promoted(run, newer, alias, version)  # released below, as any failure here
        if current != version:
            mlflow_regressions.move_alias(model, alias, version)
    except Exception:
        with session_scope() as session:  # the press didn't take: the next one may try again
            # Known not at the candidate: this attempt moved nothing (an earlier one's move was undone since).
            regressions.release_promotion(session, run_id=run_id, token=token, moved=not (known and current != version))
        raise
    links = [decision.LinkRef("model", f"{model}/{version}")]
    if run.baseline_version:
        links.append(decision.LinkRef("model", f"{model}/{run.baseline_version}"))
    if run.mlflow_run_id:
        links.append(decision.LinkRef("run", run.mlflow_run_id))
    already = before == version
    text = (f"Promoted {model} v{version} to @{alias} after regression run {run.label} of suite {run.suite} "
            f"passed its gate" + (f" (replacing v{before})." if before and not already else
                                  " (it already pointed there: nothing moved)." if already else "."))
    with session_scope() as session:  # the move may have waited (a paused worker): is it still this job's?
        holds = regressions.holds_promotion(session, run_id=run_id, token=token)
        newer = regressions.newer_promoted(session, run=run, moving=True)
        if holds and newer is not None:
            regressions.release_promotion(session, run_id=run_id, token=token, moved=False)
    if not holds or newer is not None:
        _put_back(run, newer, model, alias, version, current)
        if holds and newer is not None:
            raise _newer_was_promoted(run, newer, alias, version)
        return [cards.reply(run_id)]  # another copy of this job finished the press, or it was released
    try:
        with session_scope() as session:
            if not regressions.holds_promotion(session, run_id=run_id, token=token):
                return [cards.reply(run_id)]  # released meanwhile; the next press logs the decision
            made = decision.create(session, new=decision.NewDecision(
                text=text, author=run.promoted_by or run.user, channel=run.channel, tags=("promotion",), links=tuple(links)))
            promotion = {"alias": alias, "before": before, "already": already, "decision_id": made.id, "moving_from": before}
            regressions.set_promotion(session, run_id=run_id, promotion=promotion)
    except Unavailable:
        raise  # the job waits for the database, then runs again and resumes here
    except Exception:
        return _moved_but_not_logged(run, version, alias, token)
    try:  # the decision's links checked and tagged in MLflow, as a typed `decide` would have them
        from tasks.decision_links import check_links

        check_links(promotion["decision_id"])
    except Exception:
        log.warning("R%s: the links of decision #%s were not checked", run_id, promotion["decision_id"], exc_info=True)
    run = cards.load(run_id)
    return [_promoted_reply(run), cards.reply(run_id)]


def _moved_but_not_logged(run: regressions.RegressionRun, version: str, alias: str, token: datetime | None) -> Replies:
    """The alias moved and the decision recording it failed (the database refused it; not an outage,
    which the job waits out). Left claimed, the run would say "being promoted" forever; released, its
    card offers Promote again, and that press logs the decision without moving anything."""
    error_id = new_error_id()
    log.exception("R%s: the decision recording its promotion was not logged [%s]", run.id, error_id)
    try:
        with session_scope() as session:
            regressions.release_promotion(session, run_id=run.id, token=token,
                                          stopped="the decision recording it could not be logged")
    except Exception:  # the same trouble: the run stays claimed, and a later press is told it is being promoted
        log.exception("R%s: its promotion could not be released [%s]", run.id, error_id)
    message = (f"`{run.candidate_model} v{version}` is `@{alias}` now, but the decision recording it could not be logged, "
               f"so {run.label} is not marked promoted yet. Press *Promote candidate* again (or type `promote {run.label}`) "
               "to log it; the alias stays where it is.")
    return [("error", {"message": message, "hint": "", "error_id": error_id, "outcome": "error"}), cards.reply(run.id)]


def _promoted_reply(run: regressions.RegressionRun) -> tuple[str, dict[str, Any]]:
    promotion = run.promotion
    return ("regress_promoted", {
        "label": run.label, "model": run.candidate_model, "version": run.candidate_version,
        "alias": promotion.get("alias"), "before": promotion.get("before") or "", "already": promotion.get("already"),
        "decision_id": promotion.get("decision_id"),
    })


# -- when a worker is lost -------------------------------------------------------------------------


def lost(session: Session, run_id: int, why: str) -> list[str]:
    """The reaper gave up a job of this run: the run ends `error` with the reason, and its card says so."""
    if not regressions.fail(session, run_id=run_id, reason=f"{regressions.NOT_FINISHED}{why}."):
        return []
    return _store_report(session, run_id) or _store_card(session, run_id)


def promotion_lost(session: Session, run_id: int, job: jobs.JobRecord, why: str) -> list[str]:
    """The reaper gave up a promote job (its worker kept dying, or the terminal that ran it ended),
    perhaps after the alias moved. The run is released: its card offers Promote again and says why,
    and the person who pressed is told that a press finishes it (the alias moves only if it hasn't)."""
    released = regressions.release_promotion(session, run_id=run_id, stopped=why)
    run = regressions.get(session, run_id=run_id)
    if run is None:
        return []
    keys = _store_card(session, run_id, key=f"{job.key}/card")
    if not released:  # its decision was logged, only its reply undelivered (or another press holds it now)
        return keys
    reply_to = dict(job.kwargs.get("reply_to") or {})
    key = f"{job.key}/stopped"
    if reply_to and reply_to.get("source") != "shell" and jobs.get(session, key=key) is None:
        from tasks.replies import REPLY_TASK

        alias = get_settings().regress.promote_alias
        message = (f"Promoting {run.label} stopped: {why}. `@{alias}` of `{run.candidate_model}` may have moved to "
                   f"v{run.candidate_version} already. Press *Promote candidate* again (or type `promote {run.label}`) "
                   "to finish: it moves the alias only if it hasn't, and logs the decision.")
        context = {"message": message, "hint": "", "error_id": None}
        jobs.add_queued(session, key=key, task=REPLY_TASK,
                        kwargs={"template": "error", "context": context, "reply_to": reply_to, "audit_id": None}, audit_id=None)
        keys.append(key)
    return keys


def _store_card(session: Session, run_id: int, *, key: str = "") -> list[str]:
    run = regressions.get(session, run_id=run_id)
    if run is None:
        return []
    key = key or f"{run.task_id}/lost-card"
    if jobs.get(session, key=key) is None:
        jobs.add_queued(session, key=key, task=CARD_TASK,
                        kwargs={"run_id": run_id, "reply_to": dict(run.reply_to), "audit_id": None}, audit_id=None)
    return [key]

