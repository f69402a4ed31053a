"""Tests for monitor.status.history: UTC day splitting and integration over change points."""

from __future__ import annotations

from monitor.status.conditions import Condition
from monitor.status.history import DAY, ChangePoint, day_date, day_of, durations_between, split_by_day
from tests.status.helpers import MIDNIGHT


def test_days_are_utc_calendar_days() -> None:
    """Day numbers are UTC days: midnight UTC starts a new day, a second before it is the day before."""
    assert day_date(day_of(MIDNIGHT)).isoformat() == "2026-12-01"
    assert day_of(MIDNIGHT - 1) == day_of(MIDNIGHT) - 1


def test_split_across_midnight() -> None:
    """A span over midnight splits into its two days' parts, to the millisecond."""
    parts = list(split_by_day(MIDNIGHT - 90, MIDNIGHT + 30.5))
    assert parts == [(day_of(MIDNIGHT) - 1, 90_000), (day_of(MIDNIGHT), 30_500)]


def test_split_of_many_days_sums_exactly() -> None:
    """Whole days are exactly 86,400,000 ms each, and the parts sum to the span."""
    start = MIDNIGHT - 0.3
    parts = list(split_by_day(start, start + 3 * DAY))
    assert [ms for _, ms in parts[1:3]] == [86_400_000, 86_400_000]
    assert sum(ms for _, ms in parts) == 3 * 86_400_000


def test_split_empty_span() -> None:
    """An empty or backwards span has no parts."""
    assert list(split_by_day(MIDNIGHT, MIDNIGHT)) == []
    assert list(split_by_day(MIDNIGHT, MIDNIGHT - 5)) == []


def test_durations_between_clips_to_the_window_and_skips_time_before_data() -> None:
    """The first point starts the data; each point lasts until the next; the window clips both ends."""
    points = [
        ChangePoint(MIDNIGHT + 100, Condition.UP),
        ChangePoint(MIDNIGHT + 200, Condition.FAILED),
        ChangePoint(MIDNIGHT + 250, Condition.UP),
    ]
    spent = durations_between(points, MIDNIGHT, MIDNIGHT + 300)
    assert spent == {Condition.UP: 150.0, Condition.FAILED: 50.0}
    assert durations_between(points, MIDNIGHT + 210, MIDNIGHT + 260) == {
        Condition.FAILED: 40.0,
        Condition.UP: 10.0,
    }
