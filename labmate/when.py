"""A window's start as answers show it: the date alone when it is a UTC midnight (`since:yesterday`,
`since:2026-11-01`), the time too when it isn't (`since:12h`, "in the last 3 hours"), always saying UTC,
the zone windows are computed in.

The year is written with 4 digits: `%Y` writes year 1 as `1` on Linux."""

from __future__ import annotations

from datetime import UTC, datetime, time


def window_start(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value
    if value.time() == time(0, 0):
        return f"{value.year:04d}-{value:%m-%d} (UTC)"
    return f"{value.year:04d}-{value:%m-%d %H:%M} UTC"
