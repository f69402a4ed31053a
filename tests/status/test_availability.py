"""Tests for monitor.status.availability: up over expected, with idle and unknown time apart."""

from __future__ import annotations

import pytest

from monitor.status.availability import availability, percent, span_text
from monitor.status.conditions import Condition
from monitor.status.history import DAY, ChangePoint
from tests.status.helpers import MIDNIGHT

HOUR = 3600.0


def test_full_window_of_up_is_100_percent() -> None:
    """A deployment up through the whole window is 100 % available over a complete window."""
    result = availability([ChangePoint(MIDNIGHT - 2 * DAY, Condition.UP)], end=MIDNIGHT, window=DAY)
    assert result.ratio == 1.0
    assert result.complete


def test_failure_across_midnight_counts_in_both_days_windows() -> None:
    """An outage from 23:00 to 01:00 UTC is 2 h down in a 24 h window ending at 12:00."""
    points = [
        ChangePoint(MIDNIGHT - 3 * DAY, Condition.UP),
        ChangePoint(MIDNIGHT - HOUR, Condition.FAILED),
        ChangePoint(MIDNIGHT + HOUR, Condition.UP),
    ]
    result = availability(points, end=MIDNIGHT + 12 * HOUR, window=DAY)
    assert result.down == pytest.approx(2 * HOUR)
    assert result.ratio == pytest.approx(22 / 24)


def test_monitor_downtime_is_unknown_and_excluded() -> None:
    """Six hours without the monitor are unknown: neither up nor down, and shown apart."""
    points = [
        ChangePoint(MIDNIGHT - 2 * DAY, Condition.UP),
        ChangePoint(MIDNIGHT + 2 * HOUR, Condition.UNKNOWN),
        ChangePoint(MIDNIGHT + 8 * HOUR, Condition.UP),
    ]
    result = availability(points, end=MIDNIGHT + 12 * HOUR, window=DAY)
    assert result.unknown == pytest.approx(6 * HOUR)
    assert result.up == pytest.approx(18 * HOUR)
    assert result.ratio == 1.0


def test_scaled_to_zero_and_disabled_are_excluded_not_down() -> None:
    """Time scaled to zero or disabled is idle: excluded from the ratio, not counted as down."""
    points = [
        ChangePoint(MIDNIGHT, Condition.UP),
        ChangePoint(MIDNIGHT + 6 * HOUR, Condition.SCALED_TO_ZERO),
        ChangePoint(MIDNIGHT + 12 * HOUR, Condition.DISABLED),
        ChangePoint(MIDNIGHT + 18 * HOUR, Condition.FAILED),
    ]
    result = availability(points, end=MIDNIGHT + DAY, window=DAY)
    assert result.idle == pytest.approx(12 * HOUR)
    assert result.ratio == pytest.approx(0.5)


def test_never_expected_to_serve_has_no_ratio() -> None:
    """A deployment idle for the whole window has no availability figure at all, not 0 % or 100 %."""
    result = availability([ChangePoint(MIDNIGHT, Condition.DISABLED)], end=MIDNIGHT + DAY, window=DAY)
    assert result.ratio is None
    assert percent(result.ratio) == "—"


def test_short_history_is_over_the_time_observed() -> None:
    """Three hours of history in a 30-day window: the figure is over those three hours, and incomplete."""
    points = [ChangePoint(MIDNIGHT, Condition.UP), ChangePoint(MIDNIGHT + 2 * HOUR, Condition.FAILED)]
    result = availability(points, end=MIDNIGHT + 3 * HOUR, window=30 * DAY)
    assert not result.complete
    assert result.observed == pytest.approx(3 * HOUR)
    assert result.ratio == pytest.approx(2 / 3)
    assert span_text(result.observed) == "3 h"


def test_percent_never_rounds_downtime_up_to_100() -> None:
    """99.9996 % reads 99.999 %, never 100 %; 100 % only without any downtime."""
    assert percent(0.999996) == "99.999%"
    assert percent(1.0) == "100%"
    assert percent(0.5) == "50%"


def test_span_text() -> None:
    """Durations show their two largest units."""
    assert span_text(3 * DAY + 4 * HOUR + 5) == "3 d 4 h"
    assert span_text(125) == "2 min 5 s"
    assert span_text(0) == "0 s"
