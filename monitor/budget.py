"""The global request budget: a token bucket for requests per second and a cap on requests in flight."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import anyio


class TokenBucket:
    """Admits at most ``rate`` acquisitions per second on average, ``burst`` at once.

    Waiters are served in arrival order (an anyio lock is FIFO), so a busy fleet cannot starve one caller.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()
        # fast_acquire: an uncontended acquire costs no trip through the event loop.
        self._lock = anyio.Lock(fast_acquire=True)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        # The common case, a token in the bucket and nobody queued, takes no lock and no trip through the
        # event loop.
        # (The lock is handed straight to the next waiter on release, so an unlocked lock has no queue.)
        if not self._lock.locked():
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                await self._sleep((1.0 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1.0


class RequestBudget:
    """``RequestGate`` for the client: every HTTP attempt, retries included, spends from one budget.

    It is its own (re-entrant across tasks) async context manager, so entering a slot allocates nothing.
    """

    def __init__(self, *, requests_per_second: float, concurrency: int) -> None:
        self._bucket = TokenBucket(requests_per_second)
        self._concurrency = concurrency
        self._slots = anyio.Semaphore(concurrency, fast_acquire=True)

    @property
    def in_flight(self) -> int:
        return self._concurrency - self._slots.value

    def slot(self) -> AbstractAsyncContextManager[object]:
        return self

    async def __aenter__(self) -> None:
        try:
            # Without a checkpoint: the request that follows is one, and a free slot is the common case.
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            await self._slots.acquire()
        try:
            await self._bucket.acquire()
        except BaseException:
            self._slots.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.release()
