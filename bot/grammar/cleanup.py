"""Verbs of the stale-run clean-up: cleanup, delete, keep, snooze, restore. Pure."""

from __future__ import annotations

import re
import shlex
from datetime import datetime

from msgspec import Struct

from bot.grammar.command import Verb
from labmate.errors import UsageError

PROPOSAL = re.compile(r"^#?[Pp](?P<id>[0-9]{1,12})$")
RUN_REF = re.compile(r"^(?:run:)?(?P<run>[0-9a-fA-F]{6,32})$")
DRY_RUN = ("--dry-run", "--dryrun", "dry-run")
MAX_RUNS = 100


class CleanupArgs(Struct, frozen=True):
    experiment: str | None = None
    dry_run: bool = False


class AnswerArgs(Struct, frozen=True):
    """A proposal (`P3`: every run it still asks about) or runs by id."""

    proposal_id: int | None = None
    runs: tuple[str, ...] = ()


def parse_cleanup(rest: str, now: datetime) -> CleanupArgs:
    try:
        words = shlex.split(rest)
    except ValueError:
        raise UsageError("A quote in your command isn't closed.", hint='e.g. `cleanup "wine quality" --dry-run`') from None
    dry_run = any(w.lower() in DRY_RUN for w in words)
    words = [w for w in words if w.lower() not in DRY_RUN]
    flags = [w for w in words if w.startswith("--")]
    if flags:
        raise UsageError(f"`cleanup` knows one option, `--dry-run`; not `{flags[0][:40]}`.",
                         hint="e.g. `cleanup sales-agent --dry-run`")
    if len(words) > 1:
        raise UsageError(
            f"`cleanup` takes one experiment; I read {len(words)} words. Quote a name that has spaces.",
            hint='e.g. `cleanup "wine quality"`',
        )
    return CleanupArgs(words[0] if words else None, dry_run)


def _answer(verb: str, example: str) -> object:
    def parse(rest: str, now: datetime) -> AnswerArgs:
        words = rest.split()
        if not words:
            raise UsageError(
                "Which runs? Name a proposal (`P3`, on its message) or one or more MLflow run ids.",
                hint=f"e.g. `{example}`; `cleanup` lists the proposals waiting for you.",
            )
        proposal = PROPOSAL.match(words[0])
        if proposal:
            others = [w for w in words[1:] if PROPOSAL.match(w)]
            if others:
                raise UsageError(f"`{verb}` answers one proposal at a time; you named {len(others) + 1}: "
                                 f"`{verb} {words[0]}`, then the next.")
            if len(words) > 1:
                raise UsageError(f"`{verb} {words[0]}` answers the whole proposal; to pick runs, name only runs.",
                                 hint=f"e.g. `{verb} 3f9a2c1d 77ab01ce`")
            return AnswerArgs(proposal_id=int(proposal.group("id")))
        runs = []
        for word in words:
            match = RUN_REF.match(word)
            if not match:
                raise UsageError(
                    f"`{word[:40]}` is neither a proposal (`P3`) nor an MLflow run id (hex, at least 6 characters).",
                    hint=f"e.g. `{example}`",
                )
            runs.append(match.group("run").lower())
        if len(runs) > MAX_RUNS:
            raise UsageError(f"That is {len(runs)} runs; name at most {MAX_RUNS} at once, or answer the proposal (`P3`).")
        return AnswerArgs(runs=tuple(dict.fromkeys(runs)))

    return parse


VERBS = (
    Verb(
        name="cleanup",
        summary="Propose deleting an experiment's stale runs to their owners (`--dry-run`: only list them).",
        usage="cleanup [<experiment>] [--dry-run]",
        examples=("cleanup sales-agent --dry-run", "cleanup"),
        access="write",
        parse=parse_cleanup,
        details="The rules (failed before logging a metric, orphaned RUNNING runs, old runs of scratch experiments, "
        "the team's MLflow filters) and their thresholds are set per experiment in labmate.toml `[cleanup]`. "
        "Runs tagged `keep`, linked by a decision, behind a registered model version, among the top K by the "
        "primary metric, and their parents, are never proposed. Without an experiment: the experiments "
        "labmate.toml lists, and the proposals waiting for you.",
    ),
    Verb(
        name="delete",
        summary="Delete the runs of a clean-up proposal (MLflow soft delete; `restore` undoes it).",
        usage="delete <proposal | run id …>",
        examples=("delete P1", "delete 3f9a2c1d"),
        access="owner_or_admin",
        parse=_answer("delete", "delete P1"),  # type: ignore[arg-type]
        details="Only runs a proposal lists, by their owner or an admin. A run that changed since it was proposed "
        "is skipped, and the answer says so.",
    ),
    Verb(
        name="keep",
        summary="Keep the runs of a clean-up proposal: tags them `keep`, so they are never proposed again.",
        usage="keep <proposal | run id …>",
        examples=("keep P1", "keep 3f9a2c1d"),
        access="owner_or_admin",
        parse=_answer("keep", "keep P1"),  # type: ignore[arg-type]
    ),
    Verb(
        name="snooze",
        summary="Leave the runs of a clean-up proposal out of proposals for a while (`snooze_days`, 7 by default).",
        usage="snooze <proposal | run id …>",
        examples=("snooze P1",),
        access="owner_or_admin",
        parse=_answer("snooze", "snooze P1"),  # type: ignore[arg-type]
    ),
    Verb(
        name="restore",
        summary="Bring back runs the clean-up deleted, during the grace period (`grace_days`, 7 by default).",
        usage="restore <run id …>",
        examples=("restore 3f9a2c1d",),
        access="owner_or_admin",
        parse=_answer("restore", "restore 3f9a2c1d"),  # type: ignore[arg-type]
    ),
)
