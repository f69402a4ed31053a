"""Request demand: what the polling intervals ask of the request budget, and how far they must stretch.

Pure. The demand counts each deployment on its own GET (on the interval, or on the fast interval while in
transition), each (model, branch) list request, and discovery's listings; a share of the budget is held back
for retries. When the demand is over the budget every interval is stretched by one factor, so that the
requests sent fit the budget and no poll's lag grows without end; deployments in transition keep their fast
interval while they take no more than half of the budget, and never wait longer than a settled one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from monitor.config import Config, DiscoverConfig, PollingConfig

#: The share of the budget kept for retries and for polls that fall back from a failed list.
RETRY_RESERVE = 0.1
#: The most of the budget deployments in transition take before their fast interval stretches too.
FAST_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Load:
    """What is polled: poll units by cadence, and discovery's listings per second."""

    #: Deployments on their own GET at the interval (pinned, not batched, or ``batch: off``).
    gets: int
    #: Deployments on their own GET at the fast interval (in transition).
    fast: int = 0
    #: List requests at the interval: one per (model, branch) group.
    lists: int = 0
    discovery_per_second: float = 0.0


@dataclass(frozen=True, slots=True)
class Demand:
    """Requests a minute asked for and available, and the stretch of each interval that fits the budget."""

    per_minute: float
    #: The budget less the retries' reserve.
    usable_per_minute: float
    budget_per_minute: float
    interval_stretch: float
    fast_stretch: float
    interval: float
    fast_interval: float

    @property
    def ratio(self) -> float:
        """Demand over what the budget leaves after the reserve: above 1 the intervals cannot be kept."""
        return self.per_minute / self.usable_per_minute

    @property
    def over_budget(self) -> bool:
        return self.ratio > 1.0

    @property
    def effective_interval(self) -> float:
        return self.interval * self.interval_stretch

    @property
    def effective_fast_interval(self) -> float:
        return self.fast_interval * self.fast_stretch

    def describe(self) -> str:
        """One line for the log and ``check-config``."""
        head = (
            f"{self.per_minute:,.0f} requests/min of {self.usable_per_minute:,.0f}/min "
            f"({self.budget_per_minute:,.0f}/min budget less {RETRY_RESERVE:.0%} kept for retries), "
            f"{self.ratio:.0%}"
        )
        if not self.over_budget:
            return f"{head}: the intervals can be kept"
        return (
            f"{head}: the intervals CANNOT be kept; polls are spaced "
            f"{_seconds(self.effective_interval)} apart instead of {_seconds(self.interval)}"
            f" (fast {_seconds(self.effective_fast_interval)} instead of {_seconds(self.fast_interval)})"
        )


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}s"


def demand(polling: PollingConfig, load: Load) -> Demand:
    """The demand of ``load`` polled as ``polling`` says, and the stretch that fits it in the budget."""
    settled = (load.gets + load.lists) / polling.interval
    fast = load.fast / polling.fast_interval
    usable = polling.requests_per_second * (1.0 - RETRY_RESERVE)
    # Discovery lists on its own schedule: what it takes is not there for polling.
    room = max(usable - load.discovery_per_second, usable * 0.01)
    interval_stretch = fast_stretch = 1.0
    if settled + fast > room:
        fast_room = max(min(fast, room * FAST_SHARE), room - settled)
        if fast > 0:
            fast_stretch = max(1.0, fast / fast_room)
        if settled > 0:
            interval_stretch = max(1.0, settled / (room - fast_room))
        if polling.fast_interval * fast_stretch > polling.interval * interval_stretch:
            # A deployment in transition is never polled less often than a settled one: all on one pace.
            interval_stretch = (settled + load.fast / polling.interval) / room
            fast_stretch = interval_stretch * polling.interval / polling.fast_interval
    return Demand(
        per_minute=60.0 * (settled + fast + load.discovery_per_second),
        usable_per_minute=60.0 * usable,
        budget_per_minute=60.0 * polling.requests_per_second,
        interval_stretch=interval_stretch,
        fast_stretch=fast_stretch,
        interval=polling.interval,
        fast_interval=polling.fast_interval,
    )


def listings_per_second(discover: Iterable[DiscoverConfig]) -> float:
    """The list requests discovery sends a second."""
    return sum(1.0 / entry.interval for entry in discover)


def config_demand(config: Config) -> Demand:
    """What the configuration asks before any answer: each configured deployment on its own GET.

    Deployments that ``discover`` finds, and the batching of direct deployments, are known only once the
    monitor runs (it logs and exports the demand it then has).
    """
    load = Load(gets=len(config.deployments), discovery_per_second=listings_per_second(config.discover))
    return demand(config.polling, load)
