"""Tests for monitor.status.bar: ninety cells, each coloured by the day's worst known condition."""

from __future__ import annotations

from monitor.status.bar import day_bar
from monitor.status.conditions import Condition
from monitor.status.history import DayDurations, day_of
from tests.status.helpers import MIDNIGHT

TODAY = day_of(MIDNIGHT)


def test_ninety_cells_ending_today_with_missing_days_empty() -> None:
    """The bar has 90 cells, oldest first, today last; days without history have no data."""
    cells = day_bar([DayDurations(TODAY, {Condition.UP: 1000})], today=TODAY)
    assert len(cells) == 90
    assert cells[-1].condition is Condition.UP
    assert cells[0].condition is None
    assert not cells[0].has_data


def test_worst_condition_wins_and_tooltip_lists_all_worst_first() -> None:
    """A day mostly up with a minute failed is a failed day; its times are listed worst first."""
    day = DayDurations(TODAY - 5, {Condition.UP: 86_340_000, Condition.FAILED: 60_000})
    cell = day_bar([day], today=TODAY)[-6]
    assert cell.condition is Condition.FAILED
    assert cell.spent == ((Condition.FAILED, 60_000), (Condition.UP, 86_340_000))


def test_unknown_time_marks_partial_but_does_not_paint_an_up_day() -> None:
    """Monitor downtime on an up day leaves it up, marked partial; a day of only unknown is unknown."""
    cells = day_bar(
        [
            DayDurations(TODAY - 1, {Condition.UP: 80_000_000, Condition.UNKNOWN: 6_400_000}),
            DayDurations(TODAY, {Condition.UNKNOWN: 1000}),
        ],
        today=TODAY,
    )
    assert cells[-2].condition is Condition.UP
    assert cells[-2].partial
    assert cells[-1].condition is Condition.UNKNOWN
    assert not cells[-1].partial


def test_idle_day_is_not_painted_as_a_problem() -> None:
    """A day up then scaled to zero is an up day (idle is milder than up)."""
    day = DayDurations(TODAY, {Condition.UP: 1000, Condition.SCALED_TO_ZERO: 5000})
    assert day_bar([day], today=TODAY)[-1].condition is Condition.UP
