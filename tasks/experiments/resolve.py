"""User words -> MLflow things, or a message naming the closest real ones (as they must be typed)."""

from __future__ import annotations

import difflib
import re
import threading
import time
from dataclasses import dataclass

from labmate.errors import NotFoundError
from labmate.quoting import quote
from labmate.settings import get_settings, mask_url
from models import run_index
from models.db import session_scope
from models.run_index import RunRecord
from tasks import mlflow_io
from tasks.experiments.sync import Experiment

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
HEX = re.compile(r"^[0-9a-f]+$")
MIN_PREFIX = 8
LOWER_WORDS = frozenset(
    "loss losses error errors err mae mse rmse rmsle msle mape smape wape wer cer ter perplexity ppl latency "
    "rank time duration seconds secs sec ms cost regret nll logloss brier eer fpr fnr far frr bpc bpb "
    "runtime lag distance divergence kl".split()
)
"""Whole words of a metric's name that make it lower-is-better (`rank_test_score`, `val_loss`); a
substring is not enough (`answer_relevancy` has no word `wer`, `uptime_ratio` no word `time`)."""
HIGHER_FIRST = frozenset({"neg", "negative"})
"""scikit-learn's `neg_mean_squared_error` is negated so that higher is better."""
WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
DIRECTION_WORDS = {
    "lower": True, "asc": True, "ascending": True, "min": True, "minimize": True,
    "higher": False, "desc": False, "descending": False, "max": False, "maximize": False,
}  # fmt: skip
CACHE_S = 30.0
_cache: dict[tuple[str, str], tuple[float, Experiment]] = {}
_cache_lock = threading.Lock()
CACHE_MAX = 256


def closest(word: str, names: list[str] | set[str], n: int = 3) -> list[str]:
    """Names like `word` (a typo), else names containing it (`f1` → `val_f1`). difflib's 0.6: at 0.5
    `nosuch` was offered `epochs`."""
    pool = list(names)
    found = difflib.get_close_matches(word, pool, n=n, cutoff=0.6)
    if not found:
        found = [name for name in pool if word.lower() in name.lower()][:n]
    return found


def _suggest(found: list[str], quoted: bool = False) -> str:
    shown = [quote(f) if quoted else f for f in found]
    return " Did you mean " + " or ".join(f"`{f}`" for f in shown) + "?" if found else ""


def _as_experiment(found: dict) -> Experiment:  # type: ignore[type-arg]
    return Experiment(
        found["experiment_id"],
        found["name"],
        found.get("primary_metric"),
        tuple(sorted((found.get("directions") or {}).items())),
    )


def experiment(name: str) -> Experiment:
    """A name, an experiment id, or an unambiguous start of a name (any case) -> the experiment.
    Kept CACHE_S seconds per process, so a warm answer makes no MLflow call to find it."""
    key = (mlflow_io.tracking_uri(), name)
    with _cache_lock:
        hit = _cache.get(key)
        if hit and time.monotonic() - hit[0] < CACHE_S:
            return hit[1]
    found = _lookup(name)
    with _cache_lock:
        if len(_cache) >= CACHE_MAX:
            _cache.clear()
        _cache[key] = (time.monotonic(), found)
    return found


def forget_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _lookup(name: str) -> Experiment:
    found = mlflow_io.experiment_by_name(name)
    if found is None and name.isdigit():
        found = mlflow_io.experiment_by_id(name)
    if found is not None:
        return _as_experiment(found)
    everything = mlflow_io.experiments()
    lowered = name.casefold()
    same = [e for e in everything if e["name"].casefold() == lowered]
    starts = same or [e for e in everything if e["name"].casefold().startswith(lowered)]
    if len(starts) == 1:
        return _as_experiment(starts[0])
    names = [e["name"] for e in everything]
    if len(starts) > 1:
        shown = ", ".join(f"`{quote(n)}`" for n in sorted(e['name'] for e in starts)[:5])
        raise NotFoundError(f"`{name}` starts {len(starts)} experiment names: {shown}. Type more of the name.")
    if set(names) <= {"Default"}:  # the store holds nothing yet (a fresh LABMATE_HOME, or the wrong store)
        raise NotFoundError(
            f"MLflow has no experiment `{name}`: the store at {mask_url(get_settings().mlflow_tracking_uri)} has "
            "no experiments yet.",
            hint="Log runs there, point MLFLOW_TRACKING_URI at your team's server, or run `labmate demo` for one to try.",
        )
    suggestion = _suggest(closest(name, names), quoted=True)
    listing = ""
    if not suggestion and names:
        listing = f" Experiments: {', '.join(f'`{quote(n)}`' for n in sorted(names)[:10])}."
    raise NotFoundError(
        f"MLflow has no experiment `{name}`.{suggestion}{listing}",
        hint="Quote a name that has spaces (`\"wine quality\"`); an experiment id works too.",  # any command's: no verb
    )


def metric(name: str, keys: dict | list[str] | set[str], experiment_name: str, *, named_by: str = "") -> str:  # type: ignore[type-arg]
    """`named_by`: where a metric nobody typed came from (a configured primary metric)."""
    if name in keys:
        return name
    lowered = {k.lower(): k for k in keys}
    if name.lower() in lowered:
        return lowered[name.lower()]
    shown = ", ".join(f"`{k}`" for k in sorted(keys)[:10])
    where = (f" It is the primary metric: {named_by}. Name a metric after the experiment "
             f"(`summary {quote(experiment_name)} <metric>`), or change it there.") if named_by else ""
    raise NotFoundError(
        f"No run in `{experiment_name}` logged a metric `{name}`.{where}{_suggest(closest(name, set(keys)))}",
        hint=f"Its metrics: {shown}.",
    )


@dataclass(frozen=True)
class Direction:
    ascending: bool
    source: str
    """Where the direction came from, as the answer says it."""
    change: str
    """How to change it, as the answer says it."""

    @property
    def text(self) -> str:
        return "lower is better" if self.ascending else "higher is better"


def _declared(value: str) -> bool | None:
    return DIRECTION_WORDS.get(value.strip().lower())


def name_rule(metric_name: str) -> tuple[bool, str] | None:
    """Lower-is-better by a whole word of the name -> (True, word); None when no word says."""
    words = [w.lower() for w in WORD.findall(metric_name)]
    if words and words[0] in HIGHER_FIRST:
        return None
    for word in words:
        if word in LOWER_WORDS:
            return True, word
    return None


def direction(experiment: Experiment, metric_name: str, asked: bool | None) -> Direction:
    """The command's `asc`/`desc`, else the experiment's MLflow tag, else labmate.toml, else the
    metric's name, else higher-is-better."""
    name = quote(experiment.name)
    change = (
        f"say `best {name} {quote(metric_name)} asc|desc`, or tag the experiment in MLflow "
        f"`labmate.direction.{metric_name}` = `lower`|`higher`"
    )
    if asked is not None:
        # typed (`asc`) or in words ("the lowest"): the answer doesn't know which, so it names neither
        return Direction(asked, f"what you asked: {'lowest' if asked else 'highest'} first",
                         "leave out `asc`/`desc` (or lowest/highest) for the default")
    tagged = dict(experiment.directions).get(metric_name)
    if tagged is not None and _declared(tagged) is not None:
        return Direction(bool(_declared(tagged)), f"the experiment's MLflow tag `labmate.direction.{metric_name}`",
                         change)  # fmt: skip
    # A tag that says neither lower nor higher is said, not silently passed over.
    said = (tagged or "")[:40].replace("`", "'")
    unread = "" if tagged is None else (f"; the experiment's MLflow tag `labmate.direction.{metric_name}` is "
                                        f"`{said}`, which is not `lower` or `higher`, so it was not used")
    configured = get_settings().metric_directions.get(metric_name)
    if configured is not None and _declared(configured) is not None:
        return Direction(bool(_declared(configured)), f"labmate.toml `[metric_directions]`{unread}", change)
    rule = name_rule(metric_name)
    if rule is not None:
        return Direction(True, f"the word `{rule[1]}` in the metric's name{unread}", change)
    return Direction(False, f"the default: no `loss`, `error`, `rank`, `time`… word in its name{unread}", change)


def lower_is_better(metric_name: str) -> bool:
    """The name rule alone (for callers without an experiment)."""
    return name_rule(metric_name) is not None


@dataclass(frozen=True)
class RunRef:
    """How a run was named: an id prefix, a name, or both possible."""

    prefix: str
    name: str


def parse_ref(ref: str) -> RunRef:
    lowered = ref.lower()
    prefix = lowered if HEX.match(lowered) and len(lowered) >= MIN_PREFIX else ""
    return RunRef(prefix[:32], ref)


def runs(refs: list[str], experiment_name: str | None = None) -> list[RunRecord]:
    """Full ids, unique id prefixes (8+) or run names -> full records, in as few MLflow reads as the
    store allows: the index settles prefixes and names it knows, then one read fetches the runs."""
    scope = experiment(experiment_name) if experiment_name else None
    found: list[RunRecord] = []
    for ref in refs:
        found.append(_one(ref, scope))
    return found


def _one(ref: str, scope: Experiment | None) -> RunRecord:
    parsed = parse_ref(ref)
    if RUN_ID.match(parsed.prefix):
        record = mlflow_io.get_record(parsed.prefix)
        matches = [record] if record and (scope is None or record.experiment_id == scope.experiment_id) else []
    else:
        ids = [scope.experiment_id] if scope else None
        matches = mlflow_io.find_records(parsed.prefix, parsed.name, ids)
    where = f" in `{scope.name}`" if scope else ""
    if not matches:
        short_hex = HEX.match(ref.lower()) and len(ref) < MIN_PREFIX
        raise NotFoundError(  # the prefix rule in the message: a decision's link check shows only the message
            f"No run{where} has the id, id prefix or name `{ref}`"
            + (f": an id prefix needs {MIN_PREFIX} characters or more." if short_hex else "."),
            hint="Copy the id from the run's page, or use `runs <experiment>` to list runs.",
        )
    live = [m for m in matches if not m.deleted]
    if len(live) > 1:
        shown = ", ".join(f"`{m.run_id[:12]}` ({m.name or 'unnamed'})" for m in live[:8])
        how = "Use a longer id prefix" + ("" if scope else ", or name the experiment: `… in <experiment>`")
        raise NotFoundError(f"`{ref}` matches {len(live)} runs{where}: {shown}. {how}.")
    record = live[0] if live else matches[0]
    if record.deleted:
        raise NotFoundError(
            f"Run `{record.name or record.run_id}` ({record.run_id[:12]}) was deleted in MLflow; restore it to use it."
        )
    return record


def run(ref: str, experiment_name: str | None = None) -> RunRecord:
    """A full run id, a unique id prefix (8+) or a run name -> the run (deleted runs refused)."""
    return runs([ref], experiment_name)[0]


def index_names(experiment: Experiment, run_ids: list[str]) -> dict[str, str]:
    with session_scope() as session:
        return run_index.names_of(session, experiment.store, run_ids)
