"""The upstream circuit breaker: when Foundry as a whole is failing, stop the storm and probe once."""

from __future__ import annotations

import math
from collections import deque

from monitor.config import BreakerConfig


class CircuitBreaker:
    """Closed, open or half open. Pure: the caller passes the time; 4xx answers count as healthy.

    Outcomes are counted in one-second buckets, so the window costs the same memory at any poll rate; it
    slides by whole seconds.
    """

    def __init__(self, settings: BreakerConfig) -> None:
        self._settings = settings
        #: [second, polls, upstream faults], oldest first.
        self._buckets: deque[list[int]] = deque()
        self._total = 0
        self._failures = 0
        self.state = "closed"
        self._opened_at = 0.0
        self._probe_out = False

    @property
    def reopens_at(self) -> float:
        """When an open breaker lets its probe through."""
        return self._opened_at + self._settings.cooldown

    def allow(self, now: float) -> bool:
        """Whether a poll may be sent now. In half open, only the single probe is let through."""
        if self.state == "closed":
            return True
        if self.state == "open" and now >= self.reopens_at:
            self.state = "half_open"
            self._probe_out = False
        if self.state == "half_open" and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record(self, now: float, *, upstream_fault: bool) -> None:
        """The outcome of a poll that was let through."""
        if self.state == "half_open":
            if upstream_fault:
                self._open(now)
            else:
                self.state = "closed"
                self._forget()
            return
        if self.state == "open":
            return  # a straggler from before the breaker opened
        second = math.floor(now)
        buckets = self._buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        bucket = buckets[-1]
        bucket[1] += 1
        bucket[2] += upstream_fault
        self._total += 1
        self._failures += upstream_fault
        horizon = now - self._settings.window
        while buckets[0][0] + 1 <= horizon:
            _, polls, faults = buckets.popleft()
            self._total -= polls
            self._failures -= faults
        total = self._total
        if total >= self._settings.min_polls and self._failures >= self._settings.failure_ratio * total:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = "open"
        self._opened_at = now
        self._probe_out = False
        self._forget()

    def _forget(self) -> None:
        self._buckets.clear()
        self._total = 0
        self._failures = 0
