"""decide, decisions, supersede, ask: the decision log as the user sees it."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from bot import access
from bot.grammar.decisions import AskArgs, DecideArgs, SearchArgs, SupersedeArgs
from bot.handlers.present import decision_view
from bot.origin import JobRequest, Origin, Reply
from labmate.errors import NotFoundError, UsageError
from labmate.settings import get_settings
from labmate.when import window_start
from models import decision as decisions
from models import search as search_service
from models.errors import AlreadySuperseded, NotFound

CHECK_LINKS = "labmate.decisions.check_links"


def _new(
    args: DecideArgs,
    origin: Origin,
    *,
    permalink: str | None = None,
    source_ts: str | None = None,
    author: str | None = None,
) -> decisions.NewDecision:
    return decisions.NewDecision(
        text=args.text,
        author=author or origin.user,
        channel=origin.channel,
        tags=args.tags,
        links=tuple(decisions.LinkRef(kind, ref) for kind, ref in args.links),
        permalink=permalink,
        source_ts=source_ts,
    )


def _check_links_job(decision: decisions.Decision) -> list[JobRequest]:
    if not any(link.kind in ("run", "model", "experiment") for link in decision.links):
        return []
    return [JobRequest(CHECK_LINKS, {"decision_id": decision.id}, what=f"checking the links of #{decision.id}")]


def logged(decision: decisions.Decision, old: decisions.Decision | None = None, *, logged_by: str | None = None) -> Reply:
    """`logged_by`: who logged another person's message (a reaction or the shortcut), when not its author."""
    return Reply(
        "decision_logged",
        {"d": decision_view(decision), "old": decision_view(old) if old else None,
         "logged_by": logged_by if logged_by and logged_by != decision.author else None},
        public=True,
        jobs=_check_links_job(decision),
    )


def decide(args: DecideArgs, origin: Origin, session: Session) -> Reply:
    return logged(decisions.create(session, new=_new(args, origin)))


def log_message(
    session: Session,
    args: DecideArgs,
    origin: Origin,
    *,
    permalink: str | None,
    source_ts: str | None,
    author: str | None = None,
    edited: bool = False,
) -> Reply:
    """A Slack message logged by shortcut or reaction: once per message, whoever logs it again. A reaction
    again is told which decision it is; a form (`edited`) again is refused, since its edits would be lost."""
    new = _new(args, origin, permalink=permalink, source_ts=source_ts, author=author)
    if not source_ts:
        return logged(decisions.create(session, new=new), logged_by=origin.user)
    decision, created = decisions.create_from_source(session, new=new)
    if not created and edited:
        raise already_logged(decision.id)
    if not created:
        return Reply("decision_logged", {"d": decision_view(decision), "old": None, "already": True}, public=True)
    return logged(decision, logged_by=origin.user)


def already_logged(decision_id: int) -> UsageError:
    return UsageError(
        f"This message is already logged as decision #{decision_id}. To change it, supersede it: "
        f"`{get_settings().command} supersede {decision_id} <the new decision>`."
    )


def supersede(args: SupersedeArgs, origin: Origin, session: Session) -> Reply:
    settings = get_settings()
    try:
        old = decisions.get(session, decision_id=args.old_id)
    except NotFound:
        raise NotFoundError(
            f"There is no decision #{args.old_id}.", hint="`decisions <words>` finds its id."
        ) from None
    if old.superseded_by:
        raise NotFoundError(
            f"Decision #{old.id} was already replaced by #{old.superseded_by}; supersede #{old.superseded_by} instead."
        )
    access.check_author("supersede", old.author, origin, settings.access)
    try:
        old, new = decisions.supersede(session, old_id=args.old_id, new=_new(args.decision, origin))
    except AlreadySuperseded as exc:
        raise NotFoundError(
            f"Decision #{exc.decision_id} was just replaced by #{exc.by}, so I didn't record yours; "
            f"supersede #{exc.by} instead if yours should win."
        ) from None
    return logged(new, old)


def _filters_text(args: SearchArgs) -> str:
    """`tagged #release, by dana, since 2026-11-24`: read after "Latest decisions" or "No decisions"."""
    parts = ["tagged " + ", ".join(f"#{t}" for t in args.tags)] if args.tags else []
    if args.author:
        parts.append(f"by {args.author}")
    if args.since:
        parts.append(f"since {window_start(args.since)}")
    return ", ".join(parts)


def _hit_views(hits: list[search_service.Hit]) -> list[dict[str, Any]]:
    ui = get_settings().mlflow_ui_url
    views = []
    for hit in hits:
        view = decision_view(hit.decision, ui)
        view["replacement"] = decision_view(hit.replacement, ui) if hit.replacement else None
        views.append(view)
    return views


def search(args: SearchArgs, origin: Origin, session: Session) -> Reply:
    filters = search_service.Filters(tags=args.tags, author=args.author, since=args.since)
    hits = search_service.search(session, query=args.query, filters=filters, limit=10)
    return Reply("decisions", {"hits": _hit_views(hits), "query": args.query, "filters": _filters_text(args)})


QUESTION_NOISE = frozenset(
    "a about after all an and any are as at be been before being but by can could decide decided decision "
    "decisions did do does for from had has have how i in is it its know labmate me my of on or our please "
    "should tell that the their there these this those to us was we were what when where which who whom whose "
    "why will with would you your "
    # ways of asking about a decision, like "decide" ("why did we pick the candidate model?")
    "choose chose chosen pick picked".split()
)
LINK_WORDS = {
    "model": "model", "models": "model", "run": "run", "runs": "run",
    "experiment": "experiment", "experiments": "experiment",
}
"""Words of a question that can name what a decision links to ("the candidate model": a decision
that links a model and mentions "candidate")."""
WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)
"""A word with its contraction: "what's" is one word (then noise), not "what" and a searched-for "s"."""
CONTRACTION = re.compile(r"['’](?:s|re|ve|ll|d|m)$", re.I)
NEGATED = re.compile(r"n['’]t$", re.I)
"""didn't, isn't, can't: auxiliaries, noise like "did" and "is"."""
ASK_LIMIT = 10
SOME_WORDS_POOL = 50
"""How many decisions that mention any of the words are ranked by how many of them they mention."""


def _links_text(kinds: tuple[str, ...]) -> str:
    return " and ".join(f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}" for kind in kinds)


def question_words(question: str) -> list[str]:
    """The words of a question a decision could mention, once each, in order."""
    unique: dict[str, str] = {}
    for found in WORD.findall(question):
        word = CONTRACTION.sub("", found)  # "what's" -> "what", "model's" -> "model"
        if word.lower() not in QUESTION_NOISE and not NEGATED.search(word):
            unique.setdefault(word.lower(), word)
    return list(unique.values())


def ask(args: AskArgs, origin: Origin, session: Session) -> Reply:
    """A question that isn't about runs, answered from the decision log, each answer saying what it is:
    the decisions that mention all of its words; else, when it names a model, run or experiment, the
    decisions that link one and mention the other words; else those that mention some of its words,
    the most first; else what labmate can answer."""
    words = question_words(args.question)
    if not words:
        return Reply("ask_unknown", {"question": args.question, "words": words})
    hits = search_service.search(session, query=" ".join(words), limit=ASK_LIMIT, any_word=False)
    if hits:
        return Reply("decisions", {"hits": _hit_views(hits), "query": args.question, "filters": ""})
    kinds = tuple(dict.fromkeys(LINK_WORDS[w.lower()] for w in words if w.lower() in LINK_WORDS))
    if kinds:
        rest = [w for w in words if w.lower() not in LINK_WORDS]
        linked = search_service.Filters(links=kinds)
        hits = search_service.search(session, query=" ".join(rest), filters=linked, limit=ASK_LIMIT, any_word=False)
        if hits:
            return Reply("ask_decisions", {
                "how": "linked", "words": rest, "links": _links_text(kinds), "hits": _hit_views(hits),
            })
    if len(words) > 1:
        hits = search_service.mentioning_any(session, query=" ".join(words), limit=SOME_WORDS_POOL)
        if hits:
            matched = search_service.words_matched(session, words=words, ids=[h.decision.id for h in hits])
            hits = sorted(hits, key=lambda h: -len(matched[h.decision.id]))[:ASK_LIMIT]  # stable: rank kept on ties
            views = _hit_views(hits)
            for view in views:
                view["mentions"] = matched[view["id"]]
            return Reply("ask_decisions", {"how": "some", "words": words, "links": "", "hits": views})
    return Reply("ask_unknown", {"question": args.question, "words": words})
