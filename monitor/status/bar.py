"""The day bar: one cell per UTC day, coloured by the worst known condition of that day.

A day's worst condition is taken over the conditions the monitor knew; time it did not know (it was down,
had no answer yet) is listed in the cell's tooltip and marks the cell as partial, but does not paint a day
that was otherwise up. A day with no known time at all is "no data".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from monitor.status.conditions import LOOKS, Condition
from monitor.status.history import DayDurations, day_date

DAYS = 90


@dataclass(frozen=True, slots=True)
class DayCell:
    """One day of the bar: its date, its colour's condition, and the time in each condition, worst first."""

    day: date
    condition: Condition | None
    spent: tuple[tuple[Condition, int], ...]
    partial: bool

    @property
    def has_data(self) -> bool:
        return bool(self.spent)


def worst(millis: dict[Condition, int]) -> Condition | None:
    known = [c for c, ms in millis.items() if ms > 0 and c is not Condition.UNKNOWN]
    if known:
        return max(known, key=lambda c: LOOKS[c].severity)
    return Condition.UNKNOWN if millis.get(Condition.UNKNOWN, 0) > 0 else None


def day_bar(days: Iterable[DayDurations], *, today: int, count: int = DAYS) -> list[DayCell]:
    """``count`` cells, oldest first, ending with ``today``; days without a row are cells without data."""
    by_day = {d.day: d for d in days}
    cells = []
    for day in range(today - count + 1, today + 1):
        row = by_day.get(day)
        millis = {c: ms for c, ms in (row.millis.items() if row else ()) if ms > 0}
        spent = tuple(sorted(millis.items(), key=lambda item: -LOOKS[item[0]].severity))
        cells.append(
            DayCell(
                day=day_date(day),
                condition=worst(millis),
                spent=spent,
                partial=Condition.UNKNOWN in millis and len(millis) > 1,
            )
        )
    return cells
