"""Plain questions -> the experiment verbs' arguments, or None (then `ask` searches decisions).

Pure and deliberately narrow: a question is taken as an experiment query only when it names
an experiment (`in sales-agent`) and asks for something we answer (best, failed runs, a summary,
a comparison). Everything else, and every "why …", stays a decision-log question.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from msgspec import Struct

from bot.grammar import tokens
from bot.grammar.experiments import BestArgs, CompareArgs, RunsArgs, SummaryArgs
from labmate.errors import UsageError
from labmate.when import window_start

WHY = re.compile(r"^\s*(why|who decided|what did we decide|when did we decide)\b", re.I)
QUOTED_OR_WORD = r"(\"[^\"]+\"|“[^”“]+[”“]|'[^']+'|‘[^’‘]+[’‘]|[\w/][\w./@-]*)"
EXPERIMENT = re.compile(r"\b(?:in|of|for|from|on)\s+(?:the\s+)?(?:experiment\s+)?" + QUOTED_OR_WORD, re.I)
HOW_IS = re.compile(  # "how is sales-agent doing?": the experiment without a preposition
    r"^\s*(?:how\s+is|how's|how\s+are)\s+(?:the\s+)?(?:experiment\s+)?" + QUOTED_OR_WORD
    + r"\s+(?:doing|going|coming\s+along)\b",
    re.I,
)
EXP_OPTION = re.compile(r"\bexp(?:eriment)?:" + QUOTED_OR_WORD, re.I)
NOT_EXPERIMENTS = {
    "the", "a", "an", "last", "this", "past", "week", "month", "day", "days", "today", "yesterday", "mlflow",
    "it", "them", "that", "our", "my", "production", "order",
}  # fmt: skip
NOT_SUBJECTS = {"you", "we", "things", "everything", "everyone", "life"}  # "how are you doing?"
BEST = re.compile(r"\b(best|top|highest|lowest|largest|smallest|winning|leading|strongest|greatest)\b", re.I)
METRIC_AFTER = re.compile(r"\b(?:best|highest|lowest|largest|smallest|top|greatest)\s+([A-Za-z][\w./-]*)", re.I)
LOWEST = re.compile(r"\b(lowest|smallest)\b", re.I)
HIGHEST = re.compile(r"\b(highest|largest|greatest)\b", re.I)
"""A direction the question names: the run with the lowest val_loss, whichever way "best" would go."""
NOT_METRICS = {"run", "runs", "model", "models", "one", "result", "results", "score", "experiment", "in", "of"}
STATUS = {
    "failed": "FAILED", "failing": "FAILED", "crashed": "FAILED", "broken": "FAILED", "killed": "KILLED",
    "running": "RUNNING", "finished": "FINISHED", "succeeded": "FINISHED", "successful": "FINISHED",
}  # fmt: skip
SUMMARY = re.compile(r"\b(summar\w*|overview|how\s+is|how's|how\s+are|going|doing|progress|status\s+of)\b", re.I)
RUNS = re.compile(r"\b(runs|list|show)\b", re.I)
COMPARE = re.compile(r"^\s*compare\s+(\S+)\s+(?:and|with|to|vs\.?)\s+(\S+)\s*$", re.I)
VERSUS = re.compile(r"^\s*(\S+)\s+vs\.?\s+(\S+)\s*$", re.I)
BY = re.compile(r"\bby\s+(<@[\w|.-]+>|@?[\w.-]+)", re.I)
# "which runs did sam start …", "what did @sam run …", "sam's runs": a person without "by"
DID_PERSON = re.compile(r"\bdid\s+(<@[\w|.-]+>|@?[\w.-]+)\s+(?:run|start|launch|train|kick\s+off)\b", re.I)
PERSONS_RUNS = re.compile(r"(<@[\w|.-]+>|@?[\w.-]+)['’]s\s+runs\b", re.I)
NOT_PERSONS = NOT_SUBJECTS | {"i", "they", "it", "anyone", "someone", "somebody", "people", "the", "that"}
LAST_N = re.compile(r"\b(?:in\s+the\s+)?(?:last|past)\s+([0-9]{1,4})\s+(minute|hour|day|week)s?\b", re.I)
LAST_UNIT = re.compile(r"\b(?:in\s+the\s+)?(?:last|past)\s+(hour|day|week|month)\b", re.I)
SINCE_WORD = re.compile(
    r"\bsince\s+(today|yesterday|monday|tuesday|wednesday|thursday|friday|saturday|sunday|[0-9]{4}-[0-9][0-9]-[0-9][0-9])\b", re.I
)
THIS_WEEK = re.compile(r"\bthis\s+week\b", re.I)
TODAY = re.compile(r"\btoday\b", re.I)
YESTERDAY = re.compile(r"\byesterday\b", re.I)
UNIT_CODE = {"minute": "m", "hour": "h", "day": "d", "week": "w"}


class Interpretation(Struct, frozen=True):
    verb: str
    args: Any
    understood: str


def _strip(text: str) -> str:
    return text.strip().rstrip("?!. ").strip()


def _unquoted(word: str) -> tuple[str, bool]:
    if len(word) >= 2 and word[0] in "\"'“‘" and word[-1] in "\"'”“’‘":
        return word[1:-1], True
    return word.rstrip(".,"), False


def _experiment(text: str) -> str | None:
    option = EXP_OPTION.search(text)
    if option:
        return _unquoted(option.group(1))[0]
    for match in EXPERIMENT.finditer(text):
        word, quoted = _unquoted(match.group(1))
        if quoted or (word.lower() not in NOT_EXPERIMENTS and not word.isdigit()):
            return word
    how = HOW_IS.match(text)
    if how is None:
        return None
    word, quoted = _unquoted(how.group(1))
    return word if quoted or word.lower() not in NOT_EXPERIMENTS | NOT_SUBJECTS else None


def _since(text: str, now: datetime) -> datetime | None:
    match = LAST_N.search(text)
    if match:
        return tokens.since(f"{match.group(1)}{UNIT_CODE[match.group(2).lower()]}", now)
    match = LAST_UNIT.search(text)
    if match:
        unit = match.group(1).lower()
        return tokens.since({"hour": "1h", "day": "1d", "week": "7d", "month": "30d"}[unit], now)
    match = SINCE_WORD.search(text)
    if match:
        return tokens.since(match.group(1), now)
    if THIS_WEEK.search(text):
        return tokens.since("today", now) if now.weekday() == 0 else tokens.since("monday", now)
    if TODAY.search(text):
        return tokens.since("today", now)
    if YESTERDAY.search(text):  # from yesterday's start: the answer says so, and includes today's runs
        return tokens.since("yesterday", now)
    return None


def _status(text: str) -> str | None:
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in STATUS:
            return STATUS[word]
    return None


def _window(since: datetime | None) -> str:
    return f" since {window_start(since)}" if since else ""


def interpret(question: str, now: datetime) -> Interpretation | None:
    text = _strip(question)
    if not text or WHY.search(text):
        return None
    pair = COMPARE.match(text) or VERSUS.match(text)
    if pair:
        refs = (pair.group(1), pair.group(2))
        return Interpretation("compare", CompareArgs(refs), f"compare {refs[0]} and {refs[1]}")
    experiment = _experiment(text)
    if experiment is None:
        return None
    since = _since(text, now)  # a date that isn't one (`since 2026-13-45`) is refused, not read as all time
    by = BY.search(text)
    if BEST.search(text):
        metric_match = METRIC_AFTER.search(text)
        metric = metric_match.group(1) if metric_match and metric_match.group(1).lower() not in NOT_METRICS else None
        if metric is None and by and not by.group(1).startswith(("@", "<@")):
            metric = by.group(1)
        shown = metric or "its primary metric"
        ascending = True if LOWEST.search(text) else False if HIGHEST.search(text) else None
        way = {True: ", lowest first", False: ", highest first", None: ""}[ascending]
        return Interpretation(
            "best", BestArgs(experiment, metric, since, ascending), f"best {experiment} by {shown}{way}{_window(since)}"
        )
    status = _status(text)
    user = None
    did = DID_PERSON.search(text)  # "what did we run …" asks for runs too, nobody's in particular
    person = by or did or PERSONS_RUNS.search(text)
    if person and person.group(1).lower().lstrip("@") not in NOT_PERSONS:
        try:
            user = tokens.user_ref(person.group(1))
        except UsageError:
            user = None
    if status or user or did or (RUNS.search(text) and since):
        words = [f"{status.lower()} runs" if status else "runs", f"in {experiment}"]
        if user:
            words.append(f"by {user}")
        understood = " ".join(words) + _window(since)
        return Interpretation("runs", RunsArgs(experiment, status, since, user), understood)
    if SUMMARY.search(text) or RUNS.search(text):
        return Interpretation("summary", SummaryArgs(experiment), f"summary of {experiment}")
    return None
