"""cleanup, delete, keep, snooze, restore. The scan is a job (it reads MLflow); an answer is one conditional
UPDATE of the proposal's runs in the command's own transaction (a second click, or a second person at once,
finds nothing left to move and is told so), then a job that does the MLflow side and edits the proposal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from bot.grammar.cleanup import AnswerArgs, CleanupArgs
from bot.messages import mrkdwn
from bot.origin import JobRequest, Origin, Reply
from labmate.errors import AccessDenied, NotFoundError, UsageError
from labmate.settings import get_settings
from models import cleanup as proposals
from models.base import utcnow
from models.run_index import store_key

SCAN_TASK = "labmate.cleanup.scan"
ANSWER_TASK = "labmate.cleanup.answer"
MOVES = {
    # a snoozed run may still be kept or deleted: its owner changed their mind before the snooze ended
    "delete": ((proposals.PENDING, proposals.SNOOZED), proposals.DELETING),
    "keep": ((proposals.PENDING, proposals.SNOOZED), proposals.KEPT),
    "snooze": ((proposals.PENDING,), proposals.SNOOZED),
    "restore": ((proposals.DELETED,), proposals.RESTORING),
}
DONE_WORDS = {
    proposals.DELETING: "being deleted", proposals.DELETED: "deleted", proposals.PURGED: "removed for good",
    proposals.KEPT: "kept", proposals.SNOOZED: "snoozed", proposals.SKIPPED: "skipped",
    proposals.RESTORING: "being restored", proposals.RESTORED: "restored",
    proposals.PENDING: "not deleted: still waiting for an answer",  # `restore P3` on a proposal half answered
    proposals.REPROPOSED: "proposed again after its snooze",
}


def _store() -> str:
    return store_key(get_settings().mlflow_tracking_uri)


def cleanup(args: CleanupArgs, origin: Origin, session: Session) -> Reply:
    what = ("listing" if args.dry_run else "looking for") + " stale runs" + (f" in {args.experiment}" if args.experiment else "")
    return Reply(
        "exp_working",
        {"what": what, "understood": ""},
        jobs=[JobRequest(SCAN_TASK, {"experiment": args.experiment, "dry_run": args.dry_run}, what=what)],
    )


def may_answer(proposal: proposals.Proposal, origin: Origin) -> bool:
    rules = get_settings().access
    return origin.user in (proposal.recipient, proposal.owner) or origin.user in rules.admins


def _check(verb: str, proposal: proposals.Proposal, origin: Origin) -> None:
    """Only the owner (or whom the proposal went to) and the admins: a listing of the verb in
    labmate.toml narrows who may use it at all (`access.check`) and grants nothing on others' runs."""
    if may_answer(proposal, origin):
        return
    admins = get_settings().access.admins
    who = mrkdwn.user(proposal.recipient) if proposal.recipient else f"`{mrkdwn.escape(proposal.owner)}`"
    shown = ", ".join(str(mrkdwn.user(a)) for a in admins) or "none configured"
    action = "answer" if verb == "choose" else f"`{verb}`"  # the modal's per-run choices: delete, keep or snooze
    raise AccessDenied(
        f"{proposal.label} is {who}'s: only they or an admin ({shown}) can {action} its runs. Nothing was changed."
    )


def _targets(
    verb: str, args: AnswerArgs, session: Session, from_states: tuple[str, ...]
) -> tuple[list[proposals.Candidate], list[str]]:
    """The runs this answer is about (in `from_states`, or already answered) and the refs nothing matched."""
    if args.proposal_id is not None:
        proposal = proposals.get(session, proposal_id=args.proposal_id)
        if proposal is None:
            raise NotFoundError(f"There is no clean-up proposal P{args.proposal_id}.",
                                hint="`cleanup` lists the proposals waiting for you.")
        return proposals.candidates(session, proposal_id=proposal.id), []
    found: list[proposals.Candidate] = []
    missing: list[str] = []
    states = (*from_states, *proposals.ANSWERED, proposals.DELETING)  # an answered run is said so, not "no such run"
    for ref in args.runs:
        matches = proposals.by_run(session, store=_store(), ref=ref, states=states)
        live = [m for m in matches if m.state in from_states] or matches[:1]
        ids = {m.run_id for m in live}
        if len(ids) > 1:
            raise UsageError(f"`{ref}` starts the ids of several proposed runs; type more of the id.")
        if not live:
            missing.append(ref)
        found += live[:1]
    return found, missing


def answer(verb: str, args: AnswerArgs, origin: Origin, session: Session) -> Reply:
    from_states, to_state = MOVES[verb]
    found, missing = _targets(verb, args, session, from_states)
    if not found:
        raise _nothing(verb, args, missing)
    by_proposal: dict[int, list[proposals.Candidate]] = {}
    for candidate in found:
        by_proposal.setdefault(candidate.proposal_id, []).append(candidate)
    settings = get_settings().cleanup
    loaded = {pid: proposals.get(session, proposal_id=pid) for pid in by_proposal}
    for proposal in loaded.values():
        assert proposal is not None
        _check(verb, proposal, origin)
    values: dict[str, Any] = {}
    if verb == "snooze":
        values["snoozed_until"] = utcnow() + timedelta(days=settings.snooze_days)
    if verb == "restore":
        late = [c for c in found if c.state == proposals.DELETED and c.deleted_at is not None
                and _aware(c.deleted_at) + timedelta(days=settings.grace_days) < utcnow()]
        if late:
            raise UsageError(
                f"`{late[0].run_name or late[0].run_id[:8]}` was deleted more than {settings.grace_days:g} days ago; "
                "it is being removed for good and can't be restored here.",
                hint="Ask an MLflow admin: until the garbage collection runs, `mlflow runs restore` still can.",
            )
    moved = proposals.answer(
        session, candidate_ids=[c.id for c in found], from_states=from_states, to_state=to_state, by=origin.user, **values
    )
    if not moved:  # another answer won between our read and our UPDATE: say what it did
        for candidate in found:
            session.refresh(candidate)
        raise _already(verb, found)
    for pid in by_proposal:
        proposals.close_if_answered(session, proposal_id=pid)
    others = [c for c in found if c.id not in moved]
    for candidate in others:
        session.refresh(candidate)
    labels = ", ".join(p.label for p in loaded.values() if p is not None)
    return Reply(
        "cleanup_answering",
        {"verb": verb, "count": len(moved), "labels": labels, "missing": missing,
         "already": [{"run": c.run_name or c.run_id[:8], "state": DONE_WORDS.get(c.state, c.state)} for c in others]},
        jobs=[JobRequest(ANSWER_TASK, {"proposal_ids": sorted(by_proposal), "verb": verb, "by": origin.user,
                                       "candidate_ids": sorted(moved)},
                         what=f"{verb} in {labels}")],
    )


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _nothing(verb: str, args: AnswerArgs, missing: list[str]) -> NotFoundError:
    shown = ", ".join(f"`{m}`" for m in missing)
    if verb == "restore":
        return NotFoundError(f"No run the clean-up deleted has the id {shown}.",
                             hint="Only runs deleted by a clean-up proposal can be restored here.")
    return NotFoundError(f"No clean-up proposal lists the run {shown}.",
                         hint=f"`cleanup` lists the proposals waiting for you; `{verb} P3` answers a whole proposal.")


def _already(verb: str, found: list[proposals.Candidate]) -> UsageError:
    states = sorted({DONE_WORDS.get(c.state, c.state) for c in found})
    who = sorted({c.decided_by for c in found if c.decided_by})
    by = f" by {', '.join(str(mrkdwn.user(w)) for w in who)}" if who else ""
    if verb == "restore" and {c.state for c in found} == {proposals.DELETING}:
        return UsageError(
            f"Nothing to restore yet: {'that run is' if len(found) == 1 else 'those runs are'} still being deleted{by}.",
            hint="Restore it once the deletion is done (its proposal's card says so); nothing was changed.", markup=True,
        )
    if verb == "restore" and {c.state for c in found} == {proposals.PURGED}:
        days = f"{get_settings().cleanup.grace_days:g}"
        return UsageError(
            f"Nothing to restore: {'that run was' if len(found) == 1 else 'those runs were'} removed for good "
            f"{days} days after the clean-up deleted {'it' if len(found) == 1 else 'them'}.",
            hint="Only a backup of the MLflow store can bring it back.",
        )
    again = sorted({proposals.reproposed_in(c) for c in found if c.state == proposals.REPROPOSED})
    if again and {c.state for c in found} == {proposals.REPROPOSED}:
        return UsageError(
            f"Nothing to {verb} here: {'that run was' if len(found) == 1 else 'those runs were'} proposed again "
            f"after {'its' if len(found) == 1 else 'their'} snooze, in {', '.join(again)}: answer there.",
            hint="`cleanup` lists the proposals waiting for you; nothing was changed.",
        )
    return UsageError(
        f"Nothing to {verb}: {'that run was' if len(found) == 1 else 'those runs were'} already "
        f"{' or '.join(states)}{by}.",
        hint="Nothing was changed.", markup=True,
    )


def delete(args: AnswerArgs, origin: Origin, session: Session) -> Reply:
    return answer("delete", args, origin, session)


def keep(args: AnswerArgs, origin: Origin, session: Session) -> Reply:
    return answer("keep", args, origin, session)


def snooze(args: AnswerArgs, origin: Origin, session: Session) -> Reply:
    return answer("snooze", args, origin, session)


def restore(args: AnswerArgs, origin: Origin, session: Session) -> Reply:
    return answer("restore", args, origin, session)
