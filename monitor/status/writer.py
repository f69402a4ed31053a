"""The recorder's I/O: loads the open intervals at start, ticks and writes a batch every interval, prunes
once an hour, and writes the last batch at shutdown (shielded and bounded). A batch the database refuses
is kept and written with the next one."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
import structlog
from anyio.abc import TaskStatus

from monitor.events import Event
from monitor.metrics import ProcessMetrics
from monitor.scheduler import EventPublisher
from monitor.state.ports import StateUnavailable
from monitor.status.conditions import Condition
from monitor.status.history import DAY, day_of
from monitor.status.recorder import Recorder, Unwritten
from monitor.status.store import POINTS_DAYS, RETENTION_DAYS, HistoryBatch, HistoryStore
from monitor.tracker import Tracker

log = structlog.get_logger(__name__)

T = TypeVar("T")

_PRUNE_EVERY = 3_600.0
#: What may wait for a store that refuses writes, change points and transitions together: so many per
#: watched deployment, and at least the floor; beyond it the oldest are dropped (and counted).
HELD_ROWS_PER_DEPLOYMENT = 10
HELD_ROWS_MIN = 5_000


class HistoryWriter:
    """Keeps the history store up to date from the tracker; its ``publish`` takes the service's events."""

    def __init__(
        self,
        store: HistoryStore,
        tracker: Tracker,
        *,
        interval: float = 30.0,
        tick: float = 5.0,
        clock: Callable[[], float] = time.time,
        held_rows: int | None = None,
        metrics: ProcessMetrics | None = None,
    ) -> None:
        self.store = store
        self._tracker = tracker
        self._interval = interval
        self._tick = min(tick, interval)
        self._clock = clock
        self._recorder = Recorder(started=clock())
        self._last_prune = 0.0
        #: Held while history moves from the recorder to the store, and while a page reads both.
        self._moving = anyio.Lock()
        self._held_rows = held_rows
        self._dropped = (metrics or ProcessMetrics()).history_dropped
        #: Whether this outage's drops were logged: once per outage, which a written batch ends.
        self._dropping = False

    async def open(self) -> None:
        """Read what the last run left open; call before the first event is published."""
        self._recorder = Recorder(started=self._clock(), stored=await self.store.load_open())

    def publish(self, events: Sequence[Event]) -> None:
        self._recorder.publish(events, self._tracker.records)

    def current(self, rid: str) -> tuple[Condition, float] | None:
        """The condition of ``rid`` and since when, as far as the history knows."""
        return self._recorder.current(rid)

    async def read(self, rid: str | None, read: Callable[[], Awaitable[T]]) -> tuple[T, Unwritten]:
        """``read()`` from the store together with what is not written yet, consistent with each other: a
        flush in between would count its batch twice or not at all, so the two exclude each other."""
        async with self._moving:
            return await read(), self._recorder.unwritten(rid, self._clock())

    def tick(self) -> None:
        """Take the tracker's conditions now (cheap and in memory: the fleet page reads them)."""
        self._recorder.tick(self._clock(), self._tracker)

    async def flush(self) -> None:
        """Tick, and write what was gathered since the last flush."""
        now = self._clock()
        async with self._moving:
            self._recorder.tick(now, self._tracker)
            batch = self._recorder.take()
            if batch:
                try:
                    await self.store.write(batch)
                except BaseException:
                    self._restore(batch)  # written with the next flush instead
                    raise
                self._dropping = False
        if now - self._last_prune >= _PRUNE_EVERY:
            self._last_prune = now
            await self.store.prune(
                before_day=day_of(now) - RETENTION_DAYS, points_before=now - POINTS_DAYS * DAY
            )

    def _restore(self, batch: HistoryBatch) -> None:
        held = self._held_rows or max(HELD_ROWS_MIN, HELD_ROWS_PER_DEPLOYMENT * len(self._tracker))
        dropped = self._recorder.restore(batch, held=held)
        if dropped:
            self._dropped.inc(dropped)
            if not self._dropping:
                self._dropping = True
                log.warning("status_history_dropped", rows=dropped, held=held)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Tick every ``tick`` seconds and flush every ``interval``, until cancelled."""
        task_status.started()
        last_flush = self._clock()
        while True:
            await anyio.sleep(self._tick)
            if self._clock() - last_flush < self._interval:
                self.tick()
                continue
            last_flush = self._clock()
            try:
                await self.flush()
            except StateUnavailable:
                pass  # counted and logged by the database's health; the batch waits for the next flush
            except Exception:
                # The page's history may lag; polling and the state file must not stop for it.
                log.exception("status_history_write_failed")

    async def close(self) -> None:
        """Count time up to now and write it: the next run's unknown stretch starts where this one stops."""
        with anyio.move_on_after(5, shield=True):
            try:
                await self.flush()
            except StateUnavailable:
                # The next run counts the time from where the stored history stops as unknown.
                log.warning("status_history_not_written")


class Tap:
    """An event publisher that hands each batch to every one of ``publishers`` (the journal, then the
    history writer), so the history sees events as the scheduler publishes them."""

    def __init__(self, *publishers: EventPublisher) -> None:
        self._publishers = publishers

    def publish(self, events: Sequence[Event]) -> None:
        for publisher in self._publishers:
            publisher.publish(events)
