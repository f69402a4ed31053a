"""Whether the state database answers, as this process's uses of it find it: ``WatchedState`` wraps a
backend so that every use reports to one ``DatabaseHealth``, which goes down at a failure and up once every
operation that failed has answered again (a full disk or a read-only standby still answers reads, which must
not bring it up while writes fail), logs each once (never once per retry), and shows it in the metrics and
on /readyz."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from monitor.metrics import ProcessMetrics
from monitor.state.ports import Loaded, OutboxEvent, RecordWrite, State, StateUnavailable
from monitor.status.history import ChangePoint, DayDurations
from monitor.status.store import HistoryBatch, HistoryStore, OpenInterval, Transition

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: The wait before a use that failed because the database did not answer is tried again: from 0.2 s,
#: doubling to 5 s, so that a database back after an outage is written to within 5 s.
RETRY_INITIAL = 0.2
RETRY_MAX = 5.0


class DatabaseHealth:
    """The database's state (up or down, and since when) and the events held in memory meanwhile."""

    def __init__(self, metrics: ProcessMetrics, *, clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._clock = clock
        self.up = True
        self.since = clock()
        #: Events held in memory, waiting for the database.
        self.held = 0
        #: Held events dropped since the database went down (the bound was exceeded).
        self.dropped_in_outage = 0
        #: The operations whose last use failed: the database is up again once none is left.
        self._failing: set[str] = set()
        metrics.database_up.set(1)

    async def watch(self, operation: str, use: Awaitable[T]) -> T:
        """Await ``use``, counting and reporting its outcome under ``operation``; a failure still raises."""
        try:
            result = await use
        except StateUnavailable as exc:
            self.failed(operation, exc)
            raise
        self.answered(operation)
        return result

    def failed(self, operation: str, error: StateUnavailable) -> None:
        self._metrics.database_errors.labels(operation).inc()
        self._failing.add(operation)
        if not self.up:
            return
        self.up = False
        self.since = self._clock()
        self._metrics.database_up.set(0)
        # The error's text, no traceback: the backends' messages name the database, never its password.
        log.warning("state_database_unavailable", operation=operation, error=str(error))

    def answered(self, operation: str) -> None:
        self._failing.discard(operation)
        if self.up or self._failing:
            return
        now = self._clock()
        log.info("state_database_available", operation=operation, down_seconds=round(now - self.since, 3))
        if self.dropped_in_outage:
            log.warning("state_events_dropped", events=self.dropped_in_outage)
        self.up = True
        self.since = now
        self.dropped_in_outage = 0
        self._metrics.database_up.set(1)

    def holding(self, events: int) -> None:
        """``events`` are held in memory now (0: none, the database has them all)."""
        self.held = events
        self._metrics.state_buffered.set(events)

    def dropped(self, events: int) -> None:
        """``events`` held ones were dropped, the oldest first, to stay within the bound."""
        self.dropped_in_outage += events
        self._metrics.state_dropped.inc(events)

    def report(self) -> dict[str, Any]:
        """What /readyz shows of the database."""
        since = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {
            "up": self.up,
            "since": since,
            "events_held": self.held,
            "events_dropped": self.dropped_in_outage,
        }


class WatchedState:
    """A ``State`` whose every use after ``open`` reports to ``health`` (operations ``append``, ``cursor``,
    ``prune`` and ``history``); what fails still raises ``StateUnavailable``, for its caller to retry."""

    def __init__(self, state: State, health: DatabaseHealth) -> None:
        self._state = state
        self._health = health
        self.history = WatchedHistory(state.history, health)

    def __repr__(self) -> str:
        return f"WatchedState({self._state!r})"

    async def open(self) -> Loaded:
        # Not watched: a database that cannot be opened stops the start, as it always did.
        return await self._state.open()

    async def close(self) -> None:
        await self._state.close()

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        return await self._health.watch("append", self._state.append(events, records=records))

    async def pending(self, sink: str, *, after: int | None = None, limit: int = 500) -> list[OutboxEvent]:
        return await self._health.watch("cursor", self._state.pending(sink, after=after, limit=limit))

    async def last_seq(self) -> int:
        return await self._health.watch("cursor", self._state.last_seq())

    async def acknowledge(self, sink: str, seq: int) -> None:
        await self._health.watch("cursor", self._state.acknowledge(sink, seq))

    async def prune(self, *, older_than: float, sinks: Sequence[str]) -> tuple[int, int]:
        return await self._health.watch("prune", self._state.prune(older_than=older_than, sinks=sinks))


class WatchedHistory:
    """The status history of a ``WatchedState``, its uses reported as the operation ``history``."""

    def __init__(self, store: HistoryStore, health: DatabaseHealth) -> None:
        self._store = store
        self._health = health

    async def load_open(self) -> dict[str, OpenInterval]:
        return await self._health.watch("history", self._store.load_open())

    async def write(self, batch: HistoryBatch) -> None:
        await self._health.watch("history", self._store.write(batch))

    async def days(self, rid: str, first: int, last: int) -> list[DayDurations]:
        return await self._health.watch("history", self._store.days(rid, first, last))

    async def points(self, rid: str, since: float) -> list[ChangePoint]:
        return await self._health.watch("history", self._store.points(rid, since))

    async def transitions(self, rid: str | None, limit: int) -> list[Transition]:
        return await self._health.watch("history", self._store.transitions(rid, limit))

    async def prune(self, *, before_day: int, points_before: float) -> None:
        pruned = self._store.prune(before_day=before_day, points_before=points_before)
        await self._health.watch("history", pruned)
