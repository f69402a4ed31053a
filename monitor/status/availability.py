"""Availability over a window: time up divided by time expected to serve (definition in docs/status-page.md).

Time not expected to serve (DISABLED, scaled to zero) and time the monitor did not know (it was down, had
no answer yet, could not reach Foundry) are excluded and reported apart; neither ever counts as up. Until
the history covers the window, the figure is over the time observed so far, and says how long that was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.status.conditions import LOOKS, Kind
from monitor.status.history import ChangePoint, durations_between

#: The windows the deployment page shows, in seconds, with their names.
WINDOWS: tuple[tuple[str, float], ...] = (("24 h", 86_400.0), ("7 d", 7 * 86_400.0), ("30 d", 30 * 86_400.0))


@dataclass(frozen=True, slots=True)
class Availability:
    """Seconds of each kind within a window that ended at ``end``."""

    window: float
    end: float
    up: float = 0.0
    down: float = 0.0
    idle: float = 0.0
    unknown: float = 0.0

    @property
    def observed(self) -> float:
        """Seconds of the window with history (of any kind, unknown included)."""
        return self.up + self.down + self.idle + self.unknown

    @property
    def expected(self) -> float:
        return self.up + self.down

    @property
    def ratio(self) -> float | None:
        """Up over expected, or None when the deployment was never expected to serve in the window."""
        return self.up / self.expected if self.expected > 0 else None

    @property
    def complete(self) -> bool:
        """Whether the history covers the whole window (to the second)."""
        return self.observed >= self.window - 1.0


def availability(points: Sequence[ChangePoint], *, end: float, window: float) -> Availability:
    """The availability over ``[end - window, end)`` from a deployment's sorted change points."""
    totals = dict.fromkeys(Kind, 0.0)
    for condition, seconds in durations_between(points, end - window, end).items():
        totals[LOOKS[condition].kind] += seconds
    return Availability(
        window=window,
        end=end,
        up=totals[Kind.UP],
        down=totals[Kind.DOWN],
        idle=totals[Kind.IDLE],
        unknown=totals[Kind.UNKNOWN],
    )


def percent(ratio: float | None) -> str:
    """A ratio as people read availability: never rounded up to 100 % while there was downtime."""
    if ratio is None:
        return "—"
    if ratio >= 1.0:
        return "100%"
    # Truncated, not rounded: 99.9996 % reads 99.999 %, not 100 %.
    truncated = int(ratio * 100_000) / 1000
    return f"{truncated:.3f}".rstrip("0").rstrip(".") + "%"


def span_text(seconds: float) -> str:
    """A duration in the two largest units that matter: ``3 d 4 h``, ``2 h 5 min``, ``40 s``."""
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    return " ".join(shown) if shown else "0 s"
