"""The poll scheduler: every deployment on its own jittered interval, one poll at a time each, within limits.

A heap holds every deployment's due time; a pool of at most ``concurrency`` worker tasks takes due
deployments from it and polls them. A busy worker takes its next due deployment without a trip through the
event loop; when nothing is due, one idle worker sleeps until the earliest due time while the others queue
behind it. Workers are started as load needs them, so one is always idle below the cap and a slow poll never
holds up the others. Each HTTP attempt also spends from the global request budget.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint

from monitor.breaker import CircuitBreaker
from monitor.config import PollingConfig
from monitor.errors import (
    ApiNotFound,
    FoundryError,
    InvalidArgument,
    InvalidRid,
    PermissionDenied,
    Unauthorized,
)
from monitor.events import Event
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment
from monitor.tracker import Target, Tracker

log = structlog.get_logger(__name__)

#: Errors that will not go away by asking again soon: such a deployment backs off on its own.
_PERSISTENT = (InvalidArgument, PermissionDenied, Unauthorized, ApiNotFound, InvalidRid)


class DeploymentReader(Protocol):
    """The one call the scheduler needs from the Foundry client."""

    async def get_live_deployment(self, rid: str) -> LiveDeployment: ...

    def forget(self, rid: str) -> None:
        """The deployment is no longer watched: drop anything kept about it."""
        ...


class EventPublisher(Protocol):
    def publish(self, events: Sequence[Event]) -> None: ...


class Scheduler:
    """Polls every tracked deployment forever; ``add``/``remove`` change the set while it runs."""

    def __init__(
        self,
        *,
        reader: DeploymentReader,
        tracker: Tracker,
        bus: EventPublisher,
        metrics: ProcessMetrics,
        breaker: CircuitBreaker,
        cadence: PollingConfig,
        concurrency: int,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._reader = reader
        self._tracker = tracker
        self._bus = bus
        self._metrics = metrics
        self._breaker = breaker
        self._breaker_shown = ""
        self._cadence = cadence
        self._concurrency = max(1, concurrency)
        self._workers = 0
        self._idle = 0
        # FIFO: idle workers take turns as the one that sleeps until the next due time.
        self._idle_turn = anyio.Lock(fast_acquire=True)
        self._monotonic = monotonic
        self._wall = wall
        self._rng = rng or random.Random()
        self._heap: list[tuple[float, int, str]] = []
        self._counter = 0
        self._in_flight: set[str] = set()
        self._due: dict[str, float] = {}
        self._wake = anyio.Event()
        self._unpolled: set[str] = set()
        #: Set once every deployment known at start has had its first poll (``/readyz``).
        self.first_round_done = anyio.Event()

    def add(self, target: Target) -> None:
        """Watch ``target``; a new one is polled at once."""
        self._tracker.add(target)
        if target.rid not in self._due:
            self._unpolled.add(target.rid)
            self._schedule(target.rid, self._monotonic())

    def remove(self, rid: str) -> None:
        """Stop watching ``rid``; emits ``deployment.removed``."""
        self._due.pop(rid, None)
        self._reader.forget(rid)
        self._mark_polled(rid)
        event = self._tracker.remove(rid, self._wall())
        if event is not None:
            self._bus.publish([event])

    def _schedule(self, rid: str, when: float) -> None:
        self._counter += 1
        self._due[rid] = when
        heapq.heappush(self._heap, (when, self._counter, rid))
        if self._heap[0][2] == rid:
            self._wake.set()

    def _mark_polled(self, rid: str) -> None:
        self._unpolled.discard(rid)
        if not self._unpolled:
            self.first_round_done.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Polls due deployments until cancelled."""
        if not self._unpolled:
            self.first_round_done.set()
        async with anyio.create_task_group() as tg:
            self._start_worker(tg)
            task_status.started()

    def _start_worker(self, tg: TaskGroup) -> None:
        self._workers += 1
        tg.start_soon(self._work, tg)

    async def _work(self, tg: TaskGroup) -> None:
        while True:
            rid, due = await self._take()
            # Keep one worker waiting for the next due time while below the cap, so this poll holding the
            # worker for up to its timeout delays nothing else.
            if self._idle == 0 and self._workers < self._concurrency:
                self._start_worker(tg)
            await self._poll(rid, due)

    async def _take(self) -> tuple[str, float]:
        item = self._pop_due()
        if item is not None:
            return item
        self._idle += 1
        try:
            async with self._idle_turn:
                while (item := self._pop_due()) is None:
                    await self._wait(self._heap[0][0] - self._monotonic() if self._heap else math.inf)
                return item
        finally:
            self._idle -= 1

    def _pop_due(self) -> tuple[str, float] | None:
        heap = self._heap
        while heap:
            when, _, rid = heap[0]
            # Entries are never deleted from the heap: a rescheduled or removed RID leaves a stale one.
            if self._due.get(rid) != when or rid in self._in_flight:
                heapq.heappop(heap)
                continue
            if when > self._monotonic():
                return None
            heapq.heappop(heap)
            self._in_flight.add(rid)
            return rid, when
        return None

    async def _wait(self, seconds: float) -> None:
        self._wake = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wake.wait()

    async def _poll(self, rid: str, due: float) -> None:
        try:
            started = self._monotonic()
            self._metrics.schedule_lag.observe(max(0.0, started - due))
            allowed = self._breaker.allow(started)
            self._show_breaker()
            if not allowed:
                # Keep the deployment's turn until the probe decides; no request is sent meanwhile. The
                # checkpoint lets the loop breathe while a worker skips through a fleet of due deployments.
                self._schedule(rid, max(self._breaker.reopens_at, started + 1.0))
                await checkpoint()
                return
            error: FoundryError | None = None
            try:
                snapshot = await self._reader.get_live_deployment(rid)
            except FoundryError as exc:
                error = exc
            finished = self._monotonic()
            self._metrics.poll_duration.observe(finished - started)
            self._breaker.record(finished, upstream_fault=error is not None and error.upstream_fault)
            self._show_breaker()
            if rid not in self._tracker:
                return  # removed while the request was out
            now = self._wall()
            if error is None:
                events = self._tracker.observe(rid, snapshot, now)
            else:
                log.debug("poll_failed", rid=rid, error=error.kind)
                events = self._tracker.fail(rid, error, now)
            self._bus.publish(events)
            self._mark_polled(rid)
            self._schedule(rid, finished + self._next_delay(rid, error))
        finally:
            self._in_flight.discard(rid)

    def _show_breaker(self) -> None:
        # Setting the gauge's three children costs more than the rest of a poll's bookkeeping: only on change.
        if self._breaker.state != self._breaker_shown:
            self._breaker_shown = self._breaker.state
            self._metrics.set_breaker_state(self._breaker_shown)

    def _next_delay(self, rid: str, error: FoundryError | None) -> float:
        cadence = self._cadence
        record = self._tracker.records[rid]
        if isinstance(error, _PERSISTENT):
            exponent = min(max(record.consecutive_failures, 1), 16)
            base = min(cadence.error_backoff_max, cadence.interval * 2.0 ** (exponent - 1))
        elif record.wants_fast_poll:
            base = cadence.fast_interval
        else:
            base = cadence.interval
        delay = base * (1.0 + self._rng.uniform(-cadence.jitter, cadence.jitter))
        # A Retry-After that outlived the poll's own retries still holds for the next poll, within the cap
        # that also bounds error backoff (a hostile header must not park a deployment for days).
        retry_after = getattr(error, "retry_after", None)
        if retry_after is None:
            return delay
        return max(delay, min(float(retry_after), cadence.error_backoff_max))
