"""The first question about an experiment whose run index isn't built yet.

`answer` gives the final answer at once when the index is ready. Otherwise it hands the interim
answer (a preview from one bounded MLflow read, saying the counts are still being gathered) to
`interim` right away, builds the index in chunks -- or waits for the worker already building it --
for up to WAIT_S, and then returns the final answer; if the build needs longer, it returns where
the build is, and the build goes on in `labmate.experiments.build_index`.

`interim` posts the preview under the key of the job's first reply, so the final answer (or where
the build is) replaces it in place. When the build needs longer than the question can wait, the
job's `follow_up` asks the same question again later, and that answer edits the same message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from tasks.experiments import sync
from tasks.experiments.sync import Experiment
from tasks.jobs import Replies

log = logging.getLogger(__name__)

WAIT_S = 90.0
"""How long a question waits for its index (the experiment jobs' soft time limit is 120 s)."""
QUICK_S = 1.5
"""A small experiment is indexed within this: then there is no preview, only the answer."""

Preview = Callable[[], tuple[str, dict[str, Any]]]
_continue: Callable[[Experiment], None] | None = None


_follow_up: ContextVar[Callable[[], None] | None] = ContextVar("labmate_follow_up", default=None)


@contextmanager
def follow_up(later: Callable[[], None]) -> Iterator[None]:
    """While a job answers, what to do when its answer has to wait for the index: ask again later."""
    token = _follow_up.set(later)
    try:
        yield
    finally:
        _follow_up.reset(token)


def on_unfinished(handler: Callable[[Experiment], None]) -> None:
    """What to do with a build a question stopped waiting for (jobs.py enqueues `build_index`)."""
    global _continue
    _continue = handler


def preview_note(experiment: Experiment, seen: int, expected: int | None) -> dict[str, Any]:
    done = sync.progress(experiment)
    return {"seen": seen, "expected": expected, "indexed": done.read}


def indexing_reply(experiment: Experiment, understood: str) -> tuple[str, dict[str, Any]]:
    done = sync.progress(experiment)
    return (
        "exp_indexing",
        {"experiment": experiment.name, "understood": understood, "indexed": done.read, "expected": done.expected},
    )


def answer(
    experiment: Experiment,
    final: Callable[[], Replies],
    preview: Preview | None,
    interim: Callable[[str, dict[str, Any]], None] | None,
    understood: str = "",
) -> Replies:
    if interim is None or sync.progress(experiment).ready:
        return final()
    if sync.build(experiment, budget_s=QUICK_S) or sync.progress(experiment).ready:
        return final()
    try:
        template, context = preview() if preview else indexing_reply(experiment, understood)
    except Exception:
        log.warning("no preview for %s; saying the index is being built", experiment.name, exc_info=True)
        template, context = indexing_reply(experiment, understood)
    interim(template, context)
    if sync.wait_until_ready(experiment, budget_s=WAIT_S):
        return final()
    if _continue is not None:
        _continue(experiment)
    later = _follow_up.get()
    if later is not None:
        later()
    return [indexing_reply(experiment, understood)]
