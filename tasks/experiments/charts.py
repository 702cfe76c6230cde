"""Metric charts (matplotlib Agg, imported here only: this module runs in workers).

A chart's file is named by a hash of what it shows, so asking the same question again reuses it
instead of drawing and writing another file; files older than KEEP are pruned whenever a chart is
written (and by the periodic maintenance job), so the charts folder doesn't grow without bound.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from labmate.settings import get_settings
from tasks.experiments import views

log = logging.getLogger(__name__)

Series = list[tuple[str, list[tuple[int, float]]]]
MAX_POINTS = 1000
KEEP_S = 24 * 3600
MAX_FILES = 500
_last_prune = 0.0
PRUNE_EVERY_S = 300
# In every chart's file name: bump it when charts are drawn differently, so a file drawn the old way
# (2: an inf made an empty chart) isn't reused.
DRAWING = 2
# Beyond this matplotlib overflows computing the axis limits (and fails the chart). Infinities that
# MLflow's SQL stores return as the largest float are beyond it too.
PLOTTABLE = 1e300


def plottable(value: float) -> bool:
    return math.isfinite(value) and abs(value) < PLOTTABLE


def _thin(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Keep at most MAX_POINTS points (every k-th, plus the last): at 700 px wide, more don't show."""
    if len(points) <= MAX_POINTS:
        return points
    step = -(-len(points) // MAX_POINTS)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])


def chart_path(kind: str, label: str, content: object = None) -> Path:
    directory = get_settings().charts_dir
    directory.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w.-]+", "_", label)[:60]
    digest = hashlib.sha256(json.dumps([DRAWING, kind, label, content], default=str).encode()).hexdigest()[:12]
    return directory / f"{kind}-{safe}-{digest}.png"


def prune(directory: Path | None = None, *, keep_s: float = KEEP_S, max_files: int = MAX_FILES) -> int:
    """Delete charts older than `keep_s`, and the oldest beyond `max_files`; returns how many."""
    directory = directory or get_settings().charts_dir
    if not directory.exists():
        return 0
    files = []
    for path in directory.glob("*.png"):
        try:
            files.append((path.stat().st_mtime, path))
        except OSError:
            continue
    files.sort(reverse=True)
    cutoff = time.time() - keep_s
    removed = 0
    for index, (mtime, path) in enumerate(files):
        if mtime < cutoff or index >= max_files:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _maybe_prune() -> None:
    global _last_prune
    now = time.monotonic()
    if now - _last_prune > PRUNE_EVERY_S:
        _last_prune = now
        try:
            prune()
        except OSError:
            log.warning("could not prune the charts folder", exc_info=True)


def single_values(series: Series) -> bool:
    """Every run has one value (a metric logged once, at step 0): a line would be a dot."""
    return all(len(points) <= 1 for _name, points in series)


_IMPORTING = threading.Lock()


def _matplotlib() -> Any:
    """matplotlib, imported by one thread at a time: the embedded worker's threads (two launches of a
    sweep ending together) importing it at once got a half-initialized module ("cannot import name
    'NullFormatter' from partially initialized module 'matplotlib.ticker'"), and the card lost its chart,
    the sweep its summary."""
    with _IMPORTING:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.figure
        import matplotlib.ticker
    return matplotlib


def _figure() -> Any:
    return _matplotlib().figure.Figure(figsize=(8, 3.6), dpi=100)


def history(series: Series, *, metric: str, title: str, path: Path) -> Path | None:
    """One line per run, or one bar per run when each run has a single value; None when no run has
    a value (or, for lines, none that can be drawn). Values that can't be drawn (inf, nan) are left
    out and named in the legend. An existing file for the same content is reused."""
    series = [(name, points) for name, points in series if points]
    if not series:
        return None
    if path.exists():
        path.touch()
        return path
    _maybe_prune()
    if single_values(series):
        return bars([(name, points[-1][1]) for name, points in series], metric=metric, title=title, path=path)
    if not any(plottable(v) for _, points in series for _, v in points):
        return None
    MaxNLocator = _matplotlib().ticker.MaxNLocator

    # Fixed margins and a legend outside the axes: tight_layout and legend(loc="best") cost more
    # than the drawing itself.
    figure = _figure()
    axes = figure.subplots()
    for name, points in series:
        kept = _thin([p for p in points if plottable(p[1])])
        left_out = sorted({views.fmt(v) for _, v in points if not plottable(v)})
        label = f"{name} ({', '.join(left_out)} not drawn)" if left_out else name
        steps = [p[0] for p in kept]
        values = [p[1] for p in kept]
        axes.plot(steps, values, label=label, linewidth=1.4, marker="o" if len(kept) <= 30 else None, markersize=3)
    axes.set_title(title, fontsize=10)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.subplots_adjust(left=0.08, right=0.78, top=0.9, bottom=0.14)
    return _save(figure, path)


def bars(values: list[tuple[str, float]], *, metric: str, title: str, path: Path) -> Path:
    """One horizontal bar per run, best first as given; a value that can't be drawn (inf) is named
    beside an empty bar, so the run still shows."""
    figure = _figure()
    axes = figure.subplots()
    names = [name if len(name) <= 28 else name[:27] + "…" for name, _ in values][::-1]
    numbers = [value for _, value in values][::-1]
    drawn = axes.barh(range(len(numbers)), [v if plottable(v) else 0.0 for v in numbers], color="#4c72b0")
    axes.set_yticks(range(len(names)), labels=names, fontsize=8)
    labels = [views.fmt(v) if plottable(v) else f"{views.fmt(v)} (not drawn)" for v in numbers]
    axes.bar_label(drawn, labels=labels, fontsize=8, padding=3)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(metric)
    axes.grid(True, axis="x", alpha=0.3)
    axes.margins(x=0.15)
    figure.subplots_adjust(left=0.25, right=0.95, top=0.9, bottom=0.14)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    partial = path.with_suffix(".tmp")
    with warnings.catch_warnings():
        # Names in scripts the bundled font lacks (CJK, emoji) are drawn as boxes; the answer's text names
        # them, and matplotlib's warning would reach the terminal's stderr, three lines per chart.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
        figure.savefig(partial, format="png", pil_kwargs={"compress_level": 1})
    partial.replace(path)  # another worker drawing the same chart never sees half a file
    return path
