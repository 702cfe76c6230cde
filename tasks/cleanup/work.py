"""What the clean-up jobs do (plain functions; tasks/cleanup/jobs.py wraps them): scan and propose, carry
out an answer in MLflow, and remove deleted runs for good after the grace period.

Every MLflow side effect here is safe to repeat (a soft delete of a deleted run, a tag set twice), and
every change of a run's state is a conditional UPDATE: a job run twice (its worker died, or the
message came twice) deletes each run once, writes one audit row per run and logs one decision."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from labmate.errors import LabmateError, NotFoundError
from labmate.settings import get_settings, mask_url
from models import audit, run_index, stale_runs
from models import cleanup as proposals
from models import decision as decisions
from models.base import utcnow
from models.db import session_scope
from models.errors import Conflict
from models.run_index import RunRecord
from tasks import mlflow_io
from tasks.cleanup import rules
from tasks.cleanup import scan as scanning
from tasks.cleanup.proposals import card, make, send_card_edits, store_card_edits
from tasks.experiments import resolve
from tasks.jobs import Replies
from tasks.mlflow_io import cleanup as mlflow_cleanup

log = logging.getLogger(__name__)

BULK = 2
SPARED_SAID = {
    rules.KEEP: "tagged `keep`",
    rules.DECISION: "linked by a decision",
    rules.MODEL: "behind a model version",
    rules.PARENT: "parent of a spared run",
    rules.TOP: "among the best",
}
"""Why stale runs were spared, as the scan's summary says it ("spared: 2 tagged `keep`, 1 linked by a decision")."""


def _spared_said(why: str, count: int) -> str:
    said = SPARED_SAID.get(why, why)
    return "parents of spared runs" if why == rules.PARENT and count != 1 else said
"""A deletion of at least this many runs at once also logs a decision."""


def _experiments(name: str | None) -> list[str]:
    if name:
        return [name]
    return list(get_settings().cleanup.experiments)


def scan_job(experiment: str | None, dry_run: bool, reply_to: dict[str, Any], job_key: str) -> Replies:
    """`cleanup [experiment] [--dry-run]`: the stale runs by owner, or the proposals made for them."""
    user = str(reply_to.get("user", ""))
    with session_scope() as session:
        already = [p.id for p in proposals.made_by_job(session, job_key=job_key)] if job_key else []
    if already:  # this job ran before and its worker died before it answered: answer with what it made
        return [_summary([], already, user, dry_run=False), *(card(pid) for pid in already)]
    try:
        return _scan_job(experiment, dry_run, reply_to, job_key, user)
    except LabmateError:
        raise
    except Exception as exc:  # MLflow unreachable or refusing: say so, in one line
        known = mlflow_io.user_error(exc)
        if known is None:
            raise
        raise known from None


def _scan_job(experiment: str | None, dry_run: bool, reply_to: dict[str, Any], job_key: str, user: str) -> Replies:
    results = []
    made: list[int] = []
    for name in _experiments(experiment):
        found = resolve.experiment(name)
        rules = get_settings().cleanup.rules_for(found.name)
        if dry_run:
            results.append(scanning.scan(found, rules))
            continue
        result, ids = scan_and_propose(found, rules, created_by=user, job_key=job_key, asked_from=reply_to)
        results.append(result)
        made += ids
    replies = [_summary(results, made, user, dry_run=dry_run), *(card(pid) for pid in made)]
    if reply_to.get("source") == "shell" and not experiment:
        replies += _waiting_here(user, made)
    return replies


def _waiting_here(user: str, made: list[int]) -> Replies:
    """In the terminal, `cleanup` also shows the proposals already waiting for you, whole, to answer there
    (in Slack they are the DMs, which the buttons answer)."""
    from tasks.cleanup.proposals import view

    shown: Replies = []
    with session_scope() as session:
        for proposal in proposals.open_proposals(session, recipient=user):
            if proposal.id not in made:
                shown.append(("cleanup_proposal", view(proposal, proposals.candidates(session, proposal_id=proposal.id))))
    return shown


def scan_and_propose(experiment: Any, rules: Any, *, tries: int = 3, **how: Any) -> tuple[scanning.ScanResult, list[int]]:
    """Scan, then propose; when another scan proposed some of the same runs first (the database's unique
    index on a run's open proposal refuses the second), scan again: those runs are taken now."""
    for attempt in range(tries):
        result = scanning.scan(experiment, rules)
        try:
            return result, make(result, **how)
        except Conflict:
            if attempt == tries - 1:
                raise
            log.info("clean-up of %s: another scan proposed some of the same runs first; scanning again", experiment.name)
    raise AssertionError("unreachable")


def _summary(results: list[scanning.ScanResult], made: list[int], user: str, *, dry_run: bool) -> tuple[str, dict[str, Any]]:
    experiments = []
    for result in results:
        owners: dict[str, list[dict[str, str]]] = {}
        for item in result.stale:
            owners.setdefault(item.run.user or "(unknown)", []).append(
                {"name": item.run.name or item.run.run_id[:8], "short": item.run.run_id[:8], "reason": item.reason})
        spared: dict[str, int] = {}
        for why in result.spared.values():
            spared[why] = spared.get(why, 0) + 1
        experiments.append({
            "name": result.experiment.name, "stale": len(result.stale), "busy": result.busy, "orphans": len(result.orphans),
            "owners": [{"owner": o, "runs": runs[:10], "more": max(0, len(runs) - 10), "count": len(runs)}
                       for o, runs in sorted(owners.items())],
            "spared": [{"why": w, "count": n, "said": _spared_said(w, n)} for w, n in sorted(spared.items())],
        })
    with session_scope() as session:
        waiting = [
            {"label": p.label, "experiment": p.experiment, "pending": sum(
                1 for c in proposals.candidates(session, proposal_id=p.id) if c.state == proposals.PENDING)}
            for p in proposals.open_proposals(session, recipient=user)
            if p.id not in made
        ] if user else []
    labels = []
    with session_scope() as session:
        for pid in made:
            p = proposals.get(session, proposal_id=pid)
            if p is not None:
                labels.append({"label": p.label, "owner": p.owner, "recipient": p.recipient, "experiment": p.experiment,
                               "channel": str(p.reply_to.get("channel", ""))})
    configured = list(get_settings().cleanup.experiments)
    return "cleanup_scan", {"dry_run": dry_run, "experiments": experiments, "made": labels, "waiting": waiting,
                            "configured": configured, "scanned": bool(results)}


# -- answers ---------------------------------------------------------------------------------------


def _last_ts(record: RunRecord) -> int:
    return max((t for _v, _s, t in record.metrics.values()), default=0)


def _changed(candidate: proposals.Candidate, record: RunRecord | None, registered: set[str], linked: set[str]) -> str:
    """Why a run proposed earlier must not be deleted now ('' if it still may be)."""
    if record is None:
        return "MLflow no longer has it"
    if record.tags.get("keep", "").lower() not in ("", "false", "0", "no"):
        return "it was tagged `keep` since"
    if candidate.run_id in registered:
        return "a registered model version is made from it now"
    if candidate.run_id in linked:
        return "a decision links it now"
    if not record.deleted and scanning.fingerprint(record.status, record.end_time, _last_ts(record)) != candidate.fingerprint:
        return f"it changed since it was proposed (now {record.status})"
    return ""


def answer_job(proposal_ids: list[int], verb: str, by: str, reply_to: dict[str, Any],
               candidate_ids: list[int] | None = None) -> Replies:
    """Carry out one command's answer: the runs it moved (`candidate_ids`), not those another command
    moved into the same state of the same proposal meanwhile (their own job does those). A job stored
    before the ids were passed acts on every run of its proposals in that state."""
    done: dict[str, Any] = {"verb": verb, "done": 0, "skipped": [], "decision": None, "failed": ""}
    only = set(candidate_ids) if candidate_ids is not None else None
    for proposal_id in proposal_ids:
        if verb == "delete":
            _delete(proposal_id, by, done, only)
        elif verb == "keep":
            _keep(proposal_id, by, done, only)
        elif verb == "restore":
            _restore(proposal_id, by, done, only)
    with session_scope() as session:
        for proposal_id in proposal_ids:
            proposals.close_if_answered(session, proposal_id=proposal_id)
    return [("cleanup_answered", {**done, "grace_days": f"{get_settings().cleanup.grace_days:g}"}),
            *(card(pid) for pid in proposal_ids)]


def _load(proposal_id: int, state: str, only: set[int] | None) -> tuple[proposals.Proposal, list[proposals.Candidate]]:
    with session_scope() as session:
        proposal = proposals.get(session, proposal_id=proposal_id)
        if proposal is None:
            raise NotFoundError(f"There is no clean-up proposal P{proposal_id}.")
        found = [c for c in proposals.candidates(session, proposal_id=proposal_id)
                 if c.state == state and (only is None or c.id in only)]
        session.expunge_all()
    return proposal, found


def _delete(proposal_id: int, by: str, done: dict[str, Any], only: set[int] | None) -> None:
    proposal, deleting = _load(proposal_id, proposals.DELETING, only)
    if not deleting:
        return
    try:
        current = mlflow_cleanup.current([c.run_id for c in deleting])
        registered = mlflow_cleanup.registered_run_ids()
    except Exception as exc:
        _give_back(proposal, deleting, proposals.DELETING, exc, done)
        return
    with session_scope() as session:
        refs = set(stale_runs.decision_run_refs(session))
    linked = {c.run_id for c in deleting if any(c.run_id.startswith(r.lower()) for r in refs if len(r) >= 6)}
    go: list[proposals.Candidate] = []
    for index, candidate in enumerate(deleting):
        why = _changed(candidate, current.get(candidate.run_id), registered, linked)
        if why:
            with session_scope() as session:
                if proposals.settle(session, candidate_id=candidate.id, from_state=proposals.DELETING,
                                    to_state=proposals.SKIPPED, note=f"not deleted: {why}"):
                    audit.record(session, user=by, channel="", source="job", verb="cleanup.skip",
                                 text=f"{proposal.label}: {candidate.run_id} not deleted: {why}", outcome="ok",
                                 duration_ms=0.0, detail={"proposal": proposal_id, "run": candidate.run_id})
            done["skipped"].append({"run": candidate.run_name or candidate.run_id[:8], "why": why})
            continue
        try:
            mlflow_cleanup.delete(candidate.run_id)
        except Exception as exc:
            _give_back(proposal, deleting[index:], proposals.DELETING, exc, done)
            break
        go.append(candidate)
    if not go:
        return
    now = utcnow()
    with session_scope() as session:
        moved = [c for c in go if proposals.settle(session, candidate_id=c.id, from_state=proposals.DELETING,
                                                   to_state=proposals.DELETED, deleted_at=now)]
        for c in moved:
            audit.record(session, user=by, channel="", source="job", verb="cleanup.delete",
                         text=f"{proposal.label}: deleted run {c.run_id} ({c.run_name}) of {proposal.experiment}: {c.reason}",
                         outcome="ok", duration_ms=0.0, detail={"proposal": proposal_id, "run": c.run_id})
        stale_runs.mark_deleted(session, proposal.store, [c.run_id for c in moved])
        if len(moved) >= BULK:
            made = decisions.create(session, new=decisions.NewDecision(
                text=f"cleaned {len(moved)} stale runs from {proposal.experiment}", author=by,  # stale_runs.CLEANUP_RECORD
                tags=("cleanup",), links=tuple(decisions.LinkRef("run", c.run_id) for c in moved),
            ))
            done["decision"] = made.id
        done["done"] += len(moved)


DRIVER_PREFIX = re.compile(r"^\([\w.]+\)\s*")
"""SQLAlchemy's `(sqlite3.OperationalError) ` before a driver's message (MLflow's SQL store)."""


def _give_back(proposal: proposals.Proposal, left: list[proposals.Candidate], state: str, exc: Exception,
               done: dict[str, Any]) -> None:
    """MLflow failed part-way: what wasn't done goes back to waiting for an answer (clicking again retries
    it), and the answer says so. Anything but MLflow being unreachable or refusing is a bug: raised."""
    known = mlflow_io.user_error(exc) or (exc if mlflow_io.is_missing(exc) else None)
    if known is None and "mlflow" not in type(exc).__module__.lower():
        raise exc
    back = proposals.PENDING if state in (proposals.DELETING, proposals.KEPT) else proposals.DELETED
    with session_scope() as session:
        returned = sum(proposals.settle(session, candidate_id=c.id, from_state=state, to_state=back) for c in left)
    log.warning("clean-up %s: MLflow failed, %d runs back to waiting: %s", proposal.label, returned, exc)
    reason = getattr(known, "message", None) or "MLflow failed: " + DRIVER_PREFIX.sub("", str(exc).splitlines()[0])[:200]
    now_as = "proposed" if back == proposals.PENDING else "deleted"
    done["failed"] = f"{reason.rstrip('.')}; {returned} run{'s' if returned != 1 else ''} left as {now_as}: try again later."


def _keep(proposal_id: int, by: str, done: dict[str, Any], only: set[int] | None) -> None:
    """Tag each kept run `keep` in MLflow (what stops later scans proposing it). Runs MLflow didn't tag go
    back to waiting, as for delete: left `kept` untagged, they could not be kept again and were proposed
    again the next day."""
    proposal, kept = _load(proposal_id, proposals.KEPT, only)
    tagged: list[proposals.Candidate] = []
    for index, candidate in enumerate(kept):
        try:
            mlflow_cleanup.keep(candidate.run_id)
        except Exception as exc:
            if mlflow_io.is_missing(exc):  # deleted in MLflow meanwhile (or gone): nothing was tagged
                _not_kept(proposal, candidate, by, "it was deleted in MLflow meanwhile, so it could not be tagged", done)
                continue
            _give_back(proposal, kept[index:], proposals.KEPT, exc, done)
            break
        tagged.append(candidate)
    kept = tagged
    done["done"] += len(kept)
    if not kept:
        return
    now = mlflow_cleanup.current([c.run_id for c in kept])  # the index knows the tag at once
    with session_scope() as session:
        run_index.upsert(session, proposal.store, list(now.values()), now_ms=int(utcnow().timestamp() * 1000))


def _not_kept(proposal: proposals.Proposal, candidate: proposals.Candidate, by: str, why: str,
              done: dict[str, Any]) -> None:
    """Said "tagged `keep`" otherwise, and the run, restored in MLflow later, would be proposed again."""
    with session_scope() as session:
        if proposals.settle(session, candidate_id=candidate.id, from_state=proposals.KEPT,
                            to_state=proposals.SKIPPED, note=f"not kept: {why}"):
            audit.record(session, user=by, channel="", source="job", verb="cleanup.skip",
                         text=f"{proposal.label}: {candidate.run_id} not kept: {why}", outcome="ok",
                         duration_ms=0.0, detail={"proposal": proposal.id, "run": candidate.run_id})
    done["skipped"].append({"run": candidate.run_name or candidate.run_id[:8], "why": why})


def _purged_meanwhile(candidate: proposals.Candidate, done: dict[str, Any]) -> bool:
    """MLflow no longer has the run: the purge's garbage collection took it while this restore waited (the
    restore was pressed as the grace period ended). Said so, and recorded: "try again later" would be untrue."""
    with session_scope() as session:
        settled = proposals.settle(session, candidate_id=candidate.id, from_state=proposals.RESTORING,
                                   to_state=proposals.PURGED, note="removed for good before the restore")
    if settled:
        done["skipped"].append({"run": candidate.run_name or candidate.run_id[:8],
                                "why": "it was removed for good as the grace period ended, before the restore"})
    return settled


def _restored_rest() -> datetime:
    """Someone brought the run back on purpose: not proposed again for a snooze's length (then `keep`
    stops it for good), instead of at the next day's scan."""
    return utcnow() + timedelta(days=get_settings().cleanup.snooze_days)


def _restore(proposal_id: int, by: str, done: dict[str, Any], only: set[int] | None) -> None:
    proposal, restoring = _load(proposal_id, proposals.RESTORING, only)
    went: list[proposals.Candidate] = []
    for index, candidate in enumerate(restoring):
        try:
            mlflow_cleanup.restore(candidate.run_id)
        except Exception as exc:
            if mlflow_io.is_missing(exc) and _purged_meanwhile(candidate, done):
                continue
            _give_back(proposal, restoring[index:], proposals.RESTORING, exc, done)
            break
        went.append(candidate)
    with session_scope() as session:
        rest = _restored_rest()
        moved = [c for c in went if proposals.settle(session, candidate_id=c.id, from_state=proposals.RESTORING,
                                                          to_state=proposals.RESTORED, snoozed_until=rest)]
        for c in moved:
            audit.record(session, user=by, channel="", source="job", verb="cleanup.restore",
                         text=f"{proposal.label}: restored run {c.run_id} ({c.run_name}) of {proposal.experiment}",
                         outcome="ok", duration_ms=0.0, detail={"proposal": proposal_id, "run": c.run_id})
        stale_runs.mark_deleted(session, proposal.store, [c.run_id for c in moved], deleted=False)
        done["done"] += len(moved)


# -- scheduled -------------------------------------------------------------------------------------


class ScanDeferred(Exception):
    """Experiments the daily scan couldn't read now (MLflow or the knowledge base down): its task runs
    again with backoff, so an outage at `daily_at` delays that day's proposals instead of losing them."""


def daily() -> list[int]:
    """The daily beat job: scan every experiment labmate.toml lists and post the proposals. An experiment
    labmate.toml names wrong is logged and skipped; one MLflow or the knowledge base can't answer for now
    raises ScanDeferred after the others are done, and the run again proposes only what is still
    unproposed (a run in a proposal is never proposed twice). Nobody is messaged about either."""
    made: list[int] = []
    deferred: list[str] = []
    for name in _experiments(None):
        try:
            found = resolve.experiment(name)
            _result, ids = scan_and_propose(found, get_settings().cleanup.rules_for(found.name), created_by="beat",
                                            outbox=True)
        except LabmateError as exc:
            log.warning("clean-up of %s skipped until tomorrow's scan: %s", name, exc.message)
            continue
        except Exception as exc:
            log.warning("clean-up of %s deferred, tried again shortly: MLflow or the index failed: %s", name,
                        mask_url(str(exc)))
            deferred.append(name)
            continue
        made += ids
    if deferred:
        raise ScanDeferred(", ".join(deferred))
    return made


def purge() -> int:
    """Deleted runs past the grace period are removed for good (MLflow's garbage collection, artifacts
    included). A run restored in MLflow meanwhile is left alone and marked restored, and the cards of the
    proposals whose runs changed are edited."""
    settings = get_settings().cleanup
    store = mlflow_io.store()
    with session_scope() as session:
        due = proposals.due_for_purge(session, store=store, grace=timedelta(days=settings.grace_days), now=utcnow())
        session.expunge_all()
    if not due:
        return 0
    gone, back, ids = _purge_split(due)
    try:
        mlflow_cleanup.gc(ids)
    except Exception:
        # `mlflow gc` refuses the whole batch for one run that is not deleted: someone restored it in MLflow
        # after the check above (starting gc takes seconds). Once more without the runs that changed.
        gone, back, retry = _purge_split(due)
        if retry == ids:
            raise
        _purged(store, [], back)
        mlflow_cleanup.gc(retry)  # a failure on runs that are still deleted: the next beat tries again
    return _purged(store, gone, back)


def _purge_split(due: list[proposals.Candidate]) -> tuple[list[proposals.Candidate], list[proposals.Candidate], list[str]]:
    """The due runs MLflow has deleted or no longer has, those restored in MLflow, and the ids gc removes."""
    current = mlflow_cleanup.current([c.run_id for c in due])
    gone = [c for c in due if c.run_id not in current or current[c.run_id].deleted]
    back = [c for c in due if c.run_id in current and not current[c.run_id].deleted]
    return gone, back, [c.run_id for c in gone if c.run_id in current]


def _purged(store: str, gone: list[proposals.Candidate], back: list[proposals.Candidate]) -> int:
    """Record what the purge found: each run removed or restored in MLflow once, with its audit row."""
    with session_scope() as session:
        purged = [c for c in gone
                  if proposals.settle(session, candidate_id=c.id, from_state=proposals.DELETED, to_state=proposals.PURGED)]
        for c in purged:
            audit.record(session, user="beat", channel="", source="job", verb="cleanup.purge",
                         text=f"removed run {c.run_id} ({c.run_name}) for good after the grace period",
                         outcome="ok", duration_ms=0.0, detail={"proposal": c.proposal_id, "run": c.run_id})
        restored = [c for c in back
                    if proposals.settle(session, candidate_id=c.id, from_state=proposals.DELETED,
                                        to_state=proposals.RESTORED, note="restored in MLflow",
                                        snoozed_until=_restored_rest())]
        for c in restored:
            audit.record(session, user="beat", channel="", source="job", verb="cleanup.restore",
                         text=f"P{c.proposal_id}: run {c.run_id} ({c.run_name}) was restored in MLflow; not removed",
                         outcome="ok", duration_ms=0.0, detail={"proposal": c.proposal_id, "run": c.run_id, "in": "mlflow"})
        stale_runs.mark_deleted(session, store, [c.run_id for c in restored], deleted=False)
        cards = store_card_edits(session, {c.proposal_id for c in purged + restored})
    send_card_edits(cards)
    return len(gone)
