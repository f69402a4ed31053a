"""Condition history as values: change points, per-day durations on UTC days, and the arithmetic between them.

A day is a UTC calendar day, numbered from the Unix epoch (``day_of``): every viewer sees the same bar and
the same totals, whatever their time zone. Durations are whole milliseconds, so totals add up exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from monitor.status.conditions import Condition

DAY = 86_400.0
_EPOCH = date(1970, 1, 1)


def day_of(t: float) -> int:
    """The UTC day (days since 1970-01-01) that the instant ``t`` (Unix seconds) falls in."""
    return int(t // DAY)


def day_start(day: int) -> float:
    return day * DAY


def day_date(day: int) -> date:
    return _EPOCH + timedelta(days=day)


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def split_by_day(start: float, end: float) -> Iterator[tuple[int, int]]:
    """``(day, milliseconds)`` for each UTC day the span ``[start, end)`` covers (nothing when empty)."""
    if end <= start:
        return
    cursor = start
    while cursor < end:
        day = day_of(cursor)
        stop = min(end, day_start(day + 1))
        # Rounded at the day's edges, not per piece, so that a whole day is exactly 86,400,000 ms.
        millis = round(stop * 1000) - round(cursor * 1000)
        if millis > 0:
            yield day, millis
        cursor = stop


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """From ``time`` on (until the next point), the deployment was in ``condition``."""

    time: float
    condition: Condition


@dataclass(frozen=True, slots=True)
class DayDurations:
    """Milliseconds spent in each condition on one UTC day (conditions with no time are left out)."""

    day: int
    millis: Mapping[Condition, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.millis.values())


def add_millis(into: dict[Condition, int], more: Mapping[Condition, int]) -> None:
    for condition, millis in more.items():
        into[condition] = into.get(condition, 0) + millis


def durations_between(points: Sequence[ChangePoint], start: float, end: float) -> dict[Condition, float]:
    """Seconds spent in each condition within ``[start, end)``; ``points`` sorted by time, the last one
    lasting until ``end``. Time before the first point is not counted: there is no data for it."""
    spent: dict[Condition, float] = {}
    for index, point in enumerate(points):
        until = points[index + 1].time if index + 1 < len(points) else end
        lo, hi = max(point.time, start), min(until, end)
        if hi > lo:
            spent[point.condition] = spent.get(point.condition, 0.0) + (hi - lo)
    return spent


def merged_days(
    stored: Sequence[DayDurations], extra: Mapping[int, Mapping[Condition, int]]
) -> list[DayDurations]:
    """Stored days with the not yet written milliseconds added, oldest first."""
    merged = {d.day: dict(d.millis) for d in stored}
    for day, millis in extra.items():
        add_millis(merged.setdefault(day, {}), millis)
    return [DayDurations(day, merged[day]) for day in sorted(merged)]
