"""Metric history charts (matplotlib Agg, imported here only: this module runs in workers)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from labmate.settings import get_settings

Series = list[tuple[str, list[tuple[int, float]]]]
MAX_POINTS = 1000


def _thin(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Keep at most MAX_POINTS points (every k-th, plus the last): at 700 px wide, more don't show."""
    if len(points) <= MAX_POINTS:
        return points
    step = -(-len(points) // MAX_POINTS)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])


def chart_path(kind: str, label: str) -> Path:
    directory = get_settings().charts_dir
    directory.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w.-]+", "_", label)[:60]
    return directory / f"{kind}-{safe}-{uuid.uuid4().hex[:8]}.png"


def history(series: Series, *, metric: str, title: str, path: Path) -> Path | None:
    """One line per run; None when no run has a history for the metric."""
    series = [(name, points) for name, points in series if points]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Fixed margins and a legend outside the axes: tight_layout and legend(loc="best") cost more
    # than the drawing itself.
    figure = Figure(figsize=(8, 3.6), dpi=100)
    axes = figure.subplots()
    for name, points in series:
        points = _thin(points)
        steps = [p[0] for p in points]
        values = [p[1] for p in points]
        axes.plot(steps, values, label=name, linewidth=1.4, marker="o" if len(points) <= 30 else None, markersize=3)
    axes.set_title(title, fontsize=10)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.subplots_adjust(left=0.08, right=0.78, top=0.9, bottom=0.14)
    figure.savefig(path, format="png", pil_kwargs={"compress_level": 1})
    return path
