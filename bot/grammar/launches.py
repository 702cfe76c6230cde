"""Verbs that launch and control training runs: run, sweep, status, cancel. Pure: the shape of the
command is checked here; the project, its entry points and parameter types by the handler (which
reads labmate.toml and the MLproject)."""

from __future__ import annotations

import re
import shlex
from datetime import datetime

from msgspec import Struct

from bot.grammar.command import Verb
from labmate.errors import UsageError

PROJECT = re.compile(r"^(?P<project>[A-Za-z0-9][\w.-]{0,63})(?::(?P<entry>[A-Za-z0-9_][\w.-]{0,63}))?$")
LAUNCH_ID = re.compile(r"(?P<prefix>#|[Ll]|#[Ll])?(?P<id>[0-9]{1,12})")
RUN_REF = re.compile(r"(?:run:)?(?P<run>[0-9a-fA-F]{6,32})")
PARALLEL = re.compile(r"parallel:(?P<n>.*)", re.I | re.S)
MIN_RUN_REF = 6
DRY_RUN = ("--dry-run", "--dryrun", "dry-run", "\u2014dry-run", "\u2013dry-run", "\u2014dryrun")
"""Slack and macOS turn a typed `--` into a dash (—, –): `—dry-run` is meant as `--dry-run`."""
RUN_EXAMPLE = "run sales-agent epochs=3 alpha=0.001"
SWEEP_EXAMPLE = "sweep sales-agent alpha=0.001,0.0001 ngram_max=1,2 parallel:2"

Pair = tuple[str | None, str]
"""`name=value`; a word that isn't one is kept as (None, word) so the handler can say what it expected."""


class RunArgs(Struct, frozen=True):
    project: str
    entry_point: str | None
    params: tuple[Pair, ...]
    dry_run: bool = False


class SweepArgs(Struct, frozen=True):
    project: str
    entry_point: str | None
    grid: tuple[tuple[str | None, tuple[str, ...]], ...]
    parallel: int | None = None
    dry_run: bool = False


class StatusArgs(Struct, frozen=True):
    everywhere: bool = False


class CancelArgs(Struct, frozen=True):
    """Which launch: its id, the start of its MLflow run id, or both for a bare number of 6 or more digits
    (`cancel 12345678`), which the handler looks up as a launch id first, then as a run id."""

    launch_id: int | None = None
    run_ref: str | None = None


def _words(rest: str, verb: str, example: str) -> list[str]:
    line_break = re.search(r"[\r\n]", rest)
    if line_break:
        before = rest[: line_break.start()].split()
        after = f" after `{before[-1][:40]}`" if before else ""
        raise UsageError(
            f"`{verb}` takes one line: I found a line break{after}. Parameter values can't contain line breaks.",
            hint=f"e.g. `{example}`",
        )
    try:
        return shlex.split(rest, comments=False, posix=True)
    except ValueError:
        raise UsageError(
            "A quote in your command isn't closed. Quote a value that has spaces: `note=\"two words\"`.",
            hint=f"e.g. `{example}`",
        ) from None


def _project(words: list[str], verb: str, example: str) -> tuple[str, str | None]:
    if not words:
        raise UsageError(f"Which project? Name it first: `{verb} <project>[:<entry point>] …`.", hint=f"e.g. `{example}`")
    match = PROJECT.match(words[0])
    if not match:
        shown = words[0] if len(words[0]) <= 40 else words[0][:40] + "…"
        raise UsageError(
            f"`{shown}` is not a project name. Write `<project>` or `<project>:<entry point>`.",
            hint=f"e.g. `{example}`",
        )
    return match.group("project"), match.group("entry")


def _options(words: list[str], verb: str) -> tuple[list[str], bool]:
    """The words without `--dry-run`, and whether it was there; any other option is refused by name (it
    was read as a parameter)."""
    for word in words[1:]:
        if word.startswith(("-", "\u2014", "\u2013")) and word.lower() not in DRY_RUN and "=" not in word:
            raise UsageError(f"`{word[:40]}` is not an option of `{verb}`: its one option is `--dry-run`.",
                             hint=f"`help {verb}` shows what it takes.")
    kept = [w for w in words if w.lower() not in DRY_RUN]
    return kept, len(kept) < len(words)


def _pair(word: str) -> Pair:
    name, sep, value = word.partition("=")
    return (name, value) if sep and name else (None, word)


def parse_run(rest: str, now: datetime) -> RunArgs:
    words = _words(rest, "run", RUN_EXAMPLE)
    words, dry_run = _options(words, "run")
    project, entry = _project(words, "run", RUN_EXAMPLE)
    return RunArgs(project, entry, tuple(_pair(w) for w in words[1:]), dry_run)


def parse_sweep(rest: str, now: datetime) -> SweepArgs:
    words = _words(rest, "sweep", SWEEP_EXAMPLE)
    words, dry_run = _options(words, "sweep")
    project, entry = _project(words, "sweep", SWEEP_EXAMPLE)
    parallel: int | None = None
    grid: list[tuple[str | None, tuple[str, ...]]] = []
    for word in words[1:]:
        option = PARALLEL.match(word)
        if option:
            value = option.group("n")
            if not re.fullmatch(r"[0-9]+", value):
                raise UsageError(f"`{word[:40]}` needs a whole number of runs at once, e.g. `parallel:2`.")
            if int(value) < 1:
                raise UsageError(f"`{word[:40]}` needs at least 1 run at once, e.g. `parallel:2`.")
            if parallel is not None:
                raise UsageError(f"`parallel:` is given twice (`parallel:{parallel}`, `{word[:40]}`): give it once.")
            parallel = int(value)  # the project's limit is the handler's to check: it reads labmate.toml
            continue
        name, value = _pair(word)
        if name is None:
            grid.append((None, (word,)))
            continue
        values = tuple(value.split(","))
        if any(v == "" for v in values):
            raise UsageError(
                f"`{word[:60]}` has an empty value: separate values with single commas, e.g. `{name}=1,2,3`."
            )
        grid.append((name, values))
    if not grid:
        raise UsageError(
            "A sweep needs at least one parameter with the values to try, e.g. `alpha=0.001,0.0001`.",
            hint=f"e.g. `{SWEEP_EXAMPLE}`",
        )
    return SweepArgs(project, entry, tuple(grid), parallel, dry_run)


def parse_status(rest: str, now: datetime) -> StatusArgs:
    word = rest.strip().lower()
    if word in ("", "here"):
        return StatusArgs(False)
    if word in ("all", "everywhere"):
        return StatusArgs(True)
    raise UsageError(f"`status` takes nothing, or `all`; not `{rest.strip()[:40]}`.", hint="e.g. `status`")


def parse_cancel(rest: str, now: datetime) -> CancelArgs:
    words = rest.split()
    if len(words) > 1:
        raise UsageError(
            f"`cancel` stops one run at a time; you named {len(words)}: `cancel {words[0][:40]}`, then the next.",
            hint="`status` lists what runs now.",
        )
    if not words:
        raise UsageError(
            "Say which run to stop: its launch id (`L12`, on its card) or its MLflow run id.",
            hint="e.g. `cancel L12`, `cancel 3f9a2c1d`; `status` lists what runs now.",
        )
    word = words[0]
    if re.fullmatch(r"(?:#|[Ll]|#[Ll])[0-9]{13,}", word):  # a launch id, just not one that can exist
        raise UsageError(f"There is no launch {word[:40]}.", hint="`status` lists what runs now.")
    launch = LAUNCH_ID.fullmatch(word)
    if launch:
        number = launch.group("id")
        # a bare number of 6 or more digits may also be the start of an MLflow run id (hex): the handler tries both
        ambiguous = launch.group("prefix") is None and len(number) >= MIN_RUN_REF
        return CancelArgs(launch_id=int(number), run_ref=number if ambiguous else None)
    run = RUN_REF.fullmatch(word)
    if run:
        return CancelArgs(run_ref=run.group("run").lower())
    raise UsageError(
        f"`{word[:40]}` is neither a launch id (`L12`) nor an MLflow run id (hex, at least 6 characters).",
        hint="e.g. `cancel L12`; `status` lists what runs now.",
    )


VERBS = (
    Verb(
        name="run",
        summary="Launch a training run of a configured MLflow Project; its card shows progress and results.",
        usage="run <project>[:<entry point>] [name=value …] [--dry-run]",
        examples=(RUN_EXAMPLE, "run sales-agent:train epochs=8 ngram_max=1 --dry-run"),
        access="write",
        parse=parse_run,
        details="Values are checked against the entry point's declared types (float, int, string, path, uri) before "
        "anything is stored, and reach the training process as arguments, never through a shell. `--dry-run` "
        "shows the resolved parameters and the command. The run card is edited as the run goes (queued, running, "
        "finished, failed, killed) and has a Stop button. Projects and who may launch them are set in labmate.toml.",
    ),
    Verb(
        name="sweep",
        summary="Launch a grid of runs (every combination of the values); one summary when the last ends.",
        usage="sweep <project>[:<entry point>] name=v1,v2 [name=v1,v2 …] [parallel:N] [--dry-run]",
        examples=(SWEEP_EXAMPLE,),
        access="write",
        parse=parse_sweep,
        details="At most the project's `max_sweep_size` runs, `parallel:N` at once (up to its `max_parallel_runs`). "
        "Each run gets a card in the sweep's thread; the summary has the best configuration, a table of all "
        "runs, a chart, and why the failed ones failed.",
    ),
    Verb(
        name="status",
        summary="Queued and running launches in this channel (`all`: everywhere, for admins).",
        usage="status [all]",
        examples=("status", "status all"),
        access="read",
        parse=parse_status,
        details="With queue position, owner, elapsed time and the latest metric.",
    ),
    Verb(
        name="cancel",
        summary="Stop a launch: the Celery task, the training process group, its MLflow run (KILLED).",
        usage="cancel <launch id | run id>",
        examples=("cancel L12", "cancel 3f9a2c1d"),
        access="owner_or_admin",
        parse=parse_cancel,
        details="Allowed to whoever launched it (if they still may launch the project) and to the admins. "
        "The card's Stop button does the same.",
    ),
)
