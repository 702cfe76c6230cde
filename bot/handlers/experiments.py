"""summary, compare, find, best, runs, and `ask` for questions about runs: each answers
"working on it" at once and hands the MLflow work to a job (this process never imports mlflow)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from msgspec.structs import asdict
from sqlalchemy.orm import Session

from bot.grammar import questions
from bot.grammar.decisions import AskArgs
from bot.grammar.experiments import BestArgs, CompareArgs, FindArgs, RunsArgs, SummaryArgs
from bot.handlers import decisions as decision_handlers
from bot.origin import JobRequest, Origin, Reply

TASK = "labmate.experiments.{}"


def _ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def _working(verb: str, what: str, kwargs: dict[str, Any], understood: str) -> Reply:
    kwargs = {**kwargs, "understood": understood} if understood else kwargs
    return Reply(
        "exp_working",
        {"what": what, "understood": understood},
        jobs=[JobRequest(TASK.format(verb), kwargs, what=what)],
        cache_key=f"exp_working\0{what}\0{understood}",
    )


def summary(args: SummaryArgs, origin: Origin, session: Session, understood: str = "") -> Reply:
    what = f"summarizing {args.experiment}" + (f" by {args.metric}" if args.metric else "")
    kwargs = {"experiment": args.experiment, "metric": args.metric, "top": args.top, "ascending": args.ascending}
    return _working("summary", what, kwargs, understood)


def compare(args: CompareArgs, origin: Origin, session: Session, understood: str = "") -> Reply:
    kwargs = {"runs": list(args.runs), "experiment": args.experiment}
    return _working("compare", "comparing " + ", ".join(args.runs), kwargs, understood)


def find(args: FindArgs, origin: Origin, session: Session, understood: str = "") -> Reply:
    kwargs = {
        "experiment": args.experiment,
        "conditions": [asdict(c) for c in args.conditions],
        "order_by": args.order_by,
        "ascending": args.ascending,
        "limit": args.limit,
    }
    return _working("find", f"searching runs in {args.experiment}", kwargs, understood)


def best(args: BestArgs, origin: Origin, session: Session, understood: str = "") -> Reply:
    kwargs = {"experiment": args.experiment, "metric": args.metric, "since_ms": _ms(args.since), "ascending": args.ascending}
    return _working("best", f"finding the best run in {args.experiment}", kwargs, understood)


def runs(args: RunsArgs, origin: Origin, session: Session, understood: str = "") -> Reply:
    kwargs = {
        "experiment": args.experiment,
        "status": args.status,
        "since_ms": _ms(args.since),
        "user": args.user,
        "tags": [list(t) for t in args.tags],
    }
    return _working("runs", f"listing runs in {args.experiment}", kwargs, understood)


BY_VERB = {"summary": summary, "compare": compare, "find": find, "best": best, "runs": runs}


def ask(args: AskArgs, origin: Origin, session: Session, *, now: datetime | None = None) -> Reply:
    """A question about runs becomes the matching query; anything else searches the decision log."""
    reading = questions.interpret(args.question, now or datetime.now(UTC))
    _may_ask("decisions" if reading is None else reading.verb, origin)
    if reading is None:
        return decision_handlers.ask(args, origin, session)
    return BY_VERB[reading.verb](reading.args, origin, session, understood=reading.understood)


def _may_ask(verb: str, origin: Origin) -> None:
    """A question is the command it becomes, under that command's access rules (labmate.toml `[access]`
    limits `best` or `decisions`: asking in words must not get around it)."""
    from bot import access, grammar
    from labmate.errors import AccessDenied
    from labmate.settings import get_settings

    spec = grammar.lookup(verb)
    assert spec is not None, verb
    try:
        access.check(spec, origin, get_settings().access)
    except AccessDenied as exc:
        raise AccessDenied(f"That question is answered by `{verb}`. {exc.message}", hint=exc.hint) from None
