"""How launches are put into words, the same on the run card (rendered by workers) and in `status`
(answered by the bot): elapsed times, progress bars, numbers, the order of metrics.

Coarse on purpose: elapsed time in tens of seconds, then minutes, so a card changes (and is edited in
Slack) only when something a reader would notice changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

BAR_CELLS = 12
SHOWN_METRICS = 4


def took(seconds: float) -> str:
    """How long something that ended took: exact under a minute (a run of 18 s "took 10 s" when said as
    coarsely as a live card's clock), then as `elapsed`."""
    return f"{max(seconds, 0.0):.0f} s" if seconds < 60 else elapsed(seconds)


def elapsed(seconds: float) -> str:
    if seconds < 10:
        return "a few seconds"
    if seconds < 60:
        return f"{int(seconds // 10) * 10} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def bar(step: int | None, total: int | None) -> str:
    if step is None:
        return ""
    if not total:
        return f"step {step}"
    done = min(step, total)
    filled = round(BAR_CELLS * done / total)
    return f"{'▰' * filled}{'▱' * (BAR_CELLS - filled)} {done}/{total} ({100 * done // total}%)"


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def ordered_metrics(metrics: dict[str, float], primary: str | None, count: int = SHOWN_METRICS) -> list[dict[str, str]]:
    """The primary metric first, then the others by name."""
    names = sorted(metrics, key=lambda n: (n != primary, n))[:count]
    return [{"key": n, "value": number(metrics[n])} for n in names]


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; the knowledge base stores UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def since(value: datetime | None, now: datetime | None = None) -> float:
    start = aware(value)
    return 0.0 if start is None else ((now or datetime.now(UTC)) - start).total_seconds()


def where_and_when(launch: Any, position: int | None, now: datetime, *, waiting: str) -> tuple[str, str]:
    """Where a queued or running launch is, and for how long: `/lab status` and the Home tab."""
    if launch.status == "queued":
        where = f"#{position} in the queue" if position is not None else waiting
        return where, f"queued for {elapsed(since(launch.created_at, now))}"
    where = bar(launch.step, launch.total_steps) or "starting"
    return where, f"running for {elapsed(since(launch.started_at, now))}"
