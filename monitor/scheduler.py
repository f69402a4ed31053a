"""The poll scheduler: every deployment on its own jittered interval, one poll at a time each, within limits.

A heap holds every deployment's due time; a pool of at most ``concurrency`` worker tasks takes due
deployments from it and polls them. A busy worker takes its next due deployment without a trip through the
event loop; when nothing is due, one idle worker sleeps until the earliest due time while the others queue
behind it. Workers are started as load needs them, so one is always idle below the cap and a slow poll never
holds up the others. Each HTTP attempt also spends from the global request budget.

A poll unit is one deployment's own GET or, with ``polling.batch: auto``, one list request of a (model,
branch) group (``monitor.batching``): a settled deployment whose answer shows a branch leaves the heap and is
refreshed by its group's list; anything the list does not settle (missing, moved, in transition, a failed
list) goes back to its own GET.

About once a second the scheduler weighs what its poll units ask of the request budget (``monitor.demand``):
when the intervals cannot be kept, every interval is stretched by one factor so that what is sent fits the
budget, and no deployment's lag grows without end; deployments in transition keep their priority.
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

from monitor.batching import Batches, GroupKey, group_key, match
from monitor.breaker import CircuitBreaker
from monitor.config import PollingConfig
from monitor.demand import Demand, Load, demand
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


#: What the heap schedules: a deployment's own GET (its RID) or a group's list request.
Unit = str | GroupKey


class DeploymentReader(Protocol):
    """The calls the scheduler needs from the Foundry client."""

    async def get_live_deployment(self, rid: str) -> LiveDeployment: ...

    async def list_live_deployments(
        self, model_rid: str, branch: str | None = None
    ) -> tuple[LiveDeployment, ...]: ...

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
        discovery_per_second: float = 0.0,
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
        self._heap: list[tuple[float, int, Unit]] = []
        self._counter = 0
        self._in_flight: set[Unit] = set()
        self._due: dict[Unit, float] = {}
        self._batching = cadence.batch == "auto"
        self.batches = Batches()
        #: Discovery's list requests a second: they spend from the same budget.
        self.discovery_per_second = discovery_per_second
        self.demand = demand(cadence, Load(gets=0, discovery_per_second=discovery_per_second))
        self._paced_at = -math.inf
        self._wake = anyio.Event()
        self._unpolled: set[str] = set()
        #: Set once every deployment known at start has had its first poll (``/readyz``).
        self.first_round_done = anyio.Event()

    def add(self, target: Target) -> None:
        """Watch ``target``; a new one is polled at once."""
        self._tracker.add(target)
        if target.rid not in self._due and self.batches.group_of(target.rid) is None:
            self._unpolled.add(target.rid)
            self._schedule(target.rid, self._monotonic())

    def remove(self, rid: str) -> None:
        """Stop watching ``rid``; emits ``deployment.removed``."""
        event = self._stop(rid)
        if event is not None:
            self._bus.publish([event])

    def release(self, rid: str) -> None:
        """Stop watching ``rid`` without an event: another replica watches it now."""
        self._stop(rid)

    def _stop(self, rid: str) -> Event | None:
        self._due.pop(rid, None)
        self.batches.place(rid, None)
        self._reader.forget(rid)
        self._mark_polled(rid)
        return self._tracker.remove(rid, self._wall())

    def _schedule(self, unit: Unit, when: float) -> None:
        self._counter += 1
        self._due[unit] = when
        heapq.heappush(self._heap, (when, self._counter, unit))
        if self._heap[0][2] == unit:
            self._wake.set()

    def _mark_polled(self, rid: str) -> None:
        if rid not in self._unpolled:
            return
        self._unpolled.discard(rid)
        if self._unpolled:
            return
        # An emptied set keeps the table its largest size needed (0.5 MB after a first round of 10,000).
        self._unpolled = set()
        if not self.first_round_done.is_set():
            self.first_round_done.set()
            # Now every deployment's poll unit is known: the demand they make together.
            self.weigh_demand(announce=True)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Polls due deployments until cancelled."""
        if not self._unpolled:
            self.first_round_done.set()
        self.weigh_demand(announce=True)
        async with anyio.create_task_group() as tg:
            self._start_worker(tg)
            task_status.started()

    def _start_worker(self, tg: TaskGroup) -> None:
        self._workers += 1
        tg.start_soon(self._work, tg)

    async def _work(self, tg: TaskGroup) -> None:
        while True:
            unit, due = await self._take()
            # Keep one worker waiting for the next due time while below the cap, so this poll holding the
            # worker for up to its timeout delays nothing else.
            if self._idle == 0 and self._workers < self._concurrency:
                self._start_worker(tg)
            await self._poll(unit, due)

    async def _take(self) -> tuple[Unit, float]:
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

    def _pop_due(self) -> tuple[Unit, float] | None:
        heap = self._heap
        while heap:
            when, _, unit = heap[0]
            # Entries are never deleted from the heap: a rescheduled or removed unit leaves a stale one.
            if self._due.get(unit) != when or unit in self._in_flight:
                heapq.heappop(heap)
                continue
            if when > self._monotonic():
                return None
            heapq.heappop(heap)
            self._in_flight.add(unit)
            return unit, when
        return None

    async def _wait(self, seconds: float) -> None:
        self._wake = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wake.wait()

    async def _poll(self, unit: Unit, due: float) -> None:
        try:
            started = self._monotonic()
            self._metrics.schedule_lag.observe(max(0.0, started - due))
            allowed = self._breaker.allow(started)
            self._show_breaker()
            if not allowed:
                # Keep the unit's turn until the probe decides; no request is sent meanwhile. The
                # checkpoint lets the loop breathe while a worker skips through a fleet of due deployments.
                self._schedule(unit, max(self._breaker.reopens_at, started + 1.0))
                await checkpoint()
                return
            if isinstance(unit, str):
                await self._get(unit, started)
            else:
                await self._list(unit, started)
        finally:
            self._in_flight.discard(unit)

    def _finished(self, started: float, error: FoundryError | None) -> float:
        finished = self._monotonic()
        self._metrics.poll_duration.observe(finished - started)
        self._breaker.record(finished, upstream_fault=error is not None and error.upstream_fault)
        self._show_breaker()
        if finished - self._paced_at >= 1.0:
            self._paced_at = finished
            self.weigh_demand()
        return finished

    def weigh_demand(self, *, announce: bool = False) -> Demand:
        """Recount the poll units, export the demand and stretch; log it when asked or when it moved."""
        fast = gets = 0
        batches = self.batches
        for record in self._tracker:
            # One not polled yet is on its first poll, due now: what it costs from then on is not known yet.
            if record.found is None and not record.errors:
                continue
            if batches.group_of(record.target.rid) is None:
                if record.wants_fast_poll:
                    fast += 1
                else:
                    gets += 1
        load = Load(gets=gets, fast=fast, lists=len(batches), discovery_per_second=self.discovery_per_second)
        old, new = self.demand, demand(self._cadence, load)
        self.demand = new
        self._metrics.show_demand(new)
        moved = new.over_budget != old.over_budget or (
            new.over_budget and abs(new.interval_stretch / old.interval_stretch - 1.0) > 0.1
        )
        if announce or moved:
            report = log.warning if new.over_budget else log.info
            report(
                "request_demand",
                summary=new.describe(),
                ratio=round(new.ratio, 3),
                gets=gets,
                fast=fast,
                lists=load.lists,
            )
        return new

    async def _get(self, rid: str, started: float) -> None:
        error: FoundryError | None = None
        try:
            snapshot = await self._reader.get_live_deployment(rid)
        except FoundryError as exc:
            error = exc
        finished = self._finished(started, error)
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
        self._place(rid, finished, error)

    async def _list(self, key: GroupKey, started: float) -> None:
        members = self.batches.members(key)
        if not members:
            self._due.pop(key, None)  # every member left while the group waited
            return
        try:
            answer = await self._reader.list_live_deployments(*key)
        except FoundryError as exc:
            self._finished(started, exc)
            self._metrics.list_errors.labels(exc.kind).inc()
            log.info("list_failed", model_rid=key[0], branch=key[1], error=exc.kind)
            # This round, each member asks on its own: its GET's outcome goes through the usual rules.
            self._due.pop(key, None)
            for rid in self.batches.members(key):
                self._unbatch(rid, self._monotonic())
            return
        finished = self._finished(started, None)
        matched = match(members, answer)
        now = self._wall()
        events: list[Event] = []
        for rid, snapshot in matched.present:
            if self.batches.group_of(rid) != key:
                continue  # removed or moved while the request was out
            events.extend(self._tracker.observe(rid, snapshot, now))
            self._place(rid, finished, None)
        self._bus.publish(events)
        for rid in matched.missing:
            # Gone, or moved to another branch or pinned: only its own GET can tell which.
            if self.batches.group_of(rid) == key:
                self._unbatch(rid, finished)
        if self.batches.members(key):
            self._schedule(key, finished + self._delay(self.demand.effective_interval))
        else:
            self._due.pop(key, None)

    def _place(self, rid: str, finished: float, error: FoundryError | None) -> None:
        """After an answer for ``rid``: into the group its snapshot names, or its own next GET."""
        key = group_key(self._tracker.records[rid]) if self._batching and error is None else None
        if key is None:
            self._unbatch(rid, finished + self._next_delay(rid, error))
            return
        self._due.pop(rid, None)
        if self.batches.group_of(rid) is None:
            # The client's copy of its last GET answer would only double what the record holds.
            self._reader.forget(rid)
        self.batches.place(rid, key)
        if key not in self._due and key not in self._in_flight:
            self._schedule(key, finished + self._delay(self.demand.effective_interval))

    def _unbatch(self, rid: str, when: float) -> None:
        self.batches.place(rid, None)
        self._schedule(rid, when)

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
            base = min(cadence.error_backoff_max, self.demand.effective_interval * 2.0 ** (exponent - 1))
        elif record.wants_fast_poll:
            base = self.demand.effective_fast_interval
        else:
            base = self.demand.effective_interval
        delay = self._delay(base)
        # A Retry-After that outlived the poll's own retries still holds for the next poll, within the cap
        # that also bounds error backoff (a hostile header must not park a deployment for days).
        retry_after = getattr(error, "retry_after", None)
        if retry_after is None:
            return delay
        return max(delay, min(float(retry_after), cadence.error_backoff_max))

    def _delay(self, base: float) -> float:
        jitter = self._cadence.jitter
        return base * (1.0 + self._rng.uniform(-jitter, jitter))
