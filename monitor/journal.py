"""Group commit of watch state and events: what polls changed is written with the events it caused, and
events reach the sinks only once they are in the outbox, so a crash at any point loses none.

While the database does not answer, the events are held in memory (at most ``buffer_events``: beyond it
the oldest are dropped and counted) and the records that changed stay marked as not written; flushes are
tried again with a capped backoff, and once one goes through everything is written in order and the events
go on to the sinks. Polling never waits for the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence

import anyio
import structlog
from anyio.abc import TaskStatus

from monitor.events import Event
from monitor.records import record_to_data
from monitor.retry import Backoff
from monitor.sinks import EventBus
from monitor.state import DatabaseHealth, RecordWrite, State, StateUnavailable
from monitor.state.health import RETRY_INITIAL, RETRY_MAX
from monitor.state.ports import LeaseLost
from monitor.tracker import Record, Tracker

log = structlog.get_logger(__name__)

#: Flushes at close after fenced writes were dropped: each refusal drops some deployments, so few suffice.
_FENCED_RETRIES = 3
#: Records written per transaction when many changed at once.
_CHUNK = 500


class Journal:
    """Stands between the scheduler and the event bus (it is the scheduler's ``EventPublisher``)."""

    def __init__(
        self,
        store: State,
        tracker: Tracker,
        bus: EventBus,
        *,
        health: DatabaseHealth,
        buffer_events: int = 100_000,
        interval: float = 0.2,
        retention: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._tracker = tracker
        self._bus = bus
        self._health = health
        self._buffer_events = buffer_events
        self._interval = interval
        self._retention = retention
        self._clock = clock
        self._pending: list[Event] = []
        #: Each record's version as last written: a record whose version differs is not written yet.
        self._versions: dict[str, int] = {}
        #: Stored records of deployments this run never watched, to delete at the next flush.
        self._forgotten: set[str] = set()
        #: True from a flush the database refused to the next one it took: events are held meanwhile.
        self._holding = False
        self._backoff = Backoff(RETRY_INITIAL, RETRY_MAX)
        self._wake = anyio.Event()
        self._last_prune = clock()

    def publish(self, events: Sequence[Event], *, forget: Iterable[str] = ()) -> None:
        """Events of a poll (or a removal): written with the state at the next flush, then delivered.

        ``forget`` names stored records this run never watched (a removal found at start, a deployment
        another shard owns now): they are deleted in the transaction that writes ``events``, so a removal is
        reported once, not again at every start.
        """
        self._forgotten.update(forget)
        if events:
            self._pending.extend(events)
            if self._holding:
                self._hold()
        if events or self._forgotten:
            self._wake.set()

    def _hold(self) -> None:
        """Keep the pending events within the bound, dropping the oldest, and show how many are held."""
        excess = len(self._pending) - self._buffer_events
        if excess > 0:
            del self._pending[:excess]
            self._health.dropped(excess)
        self._health.holding(len(self._pending))

    def _release(self) -> None:
        """Nothing is held any more: the database has everything."""
        if self._holding:
            self._holding = False
            self._health.holding(0)

    async def flush(self) -> None:
        """Write changed records and pending events, then hand the events to the sinks.

        The events go in transactions of at most ``_CHUNK`` (a first flush of a large fleet would otherwise
        build every event's JSON at once), each with the records of the deployments whose last event it
        holds, so that no record is stored ahead of its events: a restart diffs against the stored records,
        and one stored without its event would hide that change for good. Records without events go first, in
        transactions of their own. When a transaction fails, the events of those before it are in the outbox
        already: they go on to the sinks, and only the rest is held.
        """
        events, self._pending = self._pending, []
        changed: dict[str, Record] = {}
        versions: dict[str, int] = {}
        for record in self._tracker:
            rid = record.target.rid
            versions[rid] = record.version
            if self._versions.get(rid) != record.version:
                changed[rid] = record
        forgotten, self._forgotten = self._forgotten - versions.keys(), set()
        gone = self._versions.keys() - versions.keys() | forgotten
        if not changed and not gone and not events:
            self._release()
            return
        starts = range(0, len(events) or 1, _CHUNK)
        last_chunk = {event.rid: i // _CHUNK for i, event in enumerate(events)}
        with_events: list[list[str]] = [[] for _ in starts]
        alone: list[str] = []
        for rid in [*gone, *changed]:
            number = last_chunk.get(rid)
            (alone if number is None else with_events[number]).append(rid)

        def writes(rids: Sequence[str]) -> list[RecordWrite]:
            return [(rid, None) if rid in gone else (rid, record_to_data(changed[rid])) for rid in rids]

        written: list[Event] = []
        try:
            while len(alone) > _CHUNK:
                rids, alone = alone[:_CHUNK], alone[_CHUNK:]
                await self._store.append([], records=writes(rids))
            with_events[0][:0] = alone
            for start, rids in zip(starts, with_events, strict=True):
                chunk = events[start : start + _CHUNK]
                seqs = await self._store.append([event.to_json() for event in chunk], records=writes(rids))
                written += [dataclasses.replace(e, outbox_seq=s) for e, s in zip(chunk, seqs, strict=True)]
        except LeaseLost as lost:
            # Another replica owns these now and continues from their stored records, so it reports what
            # this one saw but could not write: dropped here for good, not held. The rest goes next time.
            kept = [event for event in events[len(written) :] if event.rid not in lost.rids]
            self._pending[:0] = kept
            self._versions.update((rid, versions[rid]) for rid in lost.rids & versions.keys())
            self._forgotten |= forgotten - lost.rids
            self._bus.publish(written)
            log.info(
                "journal_writes_fenced",
                deployments=len(lost.rids),
                events=len(events) - len(written) - len(kept),
            )
            self._wake.set()
            raise
        except BaseException as exc:
            self._pending[:0] = events[len(written) :]  # not written: keep them for the next flush
            self._forgotten |= forgotten
            self._bus.publish(written)
            if isinstance(exc, StateUnavailable):
                self._holding = True
                self._hold()
            raise
        self._versions = versions
        self._release()
        self._bus.publish(written)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush whenever events wait (at most every ``interval``), and state-only changes every interval;
        after a flush the database refused, again after the backoff (events are held meanwhile)."""
        task_status.started()
        while True:
            with anyio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.flush()
                await self._prune()
            except StateUnavailable:
                # Counted and logged by the database's health; what was not written is tried again.
                await anyio.sleep(self._backoff.failed())
                continue
            except LeaseLost:
                continue  # the fenced writes are dropped; the rest is written at the next pass
            self._backoff.succeeded()

    async def _prune(self) -> None:
        """Once a minute, events older than the retention leave the outbox. One refused is tried again
        after the backoff, as a flush is: until it answers, the database's health does not count it up."""
        now = self._clock()
        if now - self._last_prune <= 60.0:
            return
        _, undelivered = await self._store.prune(
            older_than=now - self._retention, sinks=[s.name for s in self._bus.sinks]
        )
        self._last_prune = now
        if undelivered:
            log.warning("outbox_pruned_undelivered", events=undelivered)

    async def close(self) -> None:
        """The last flush, shielded and bounded: what the run observed is on disk before the store closes.

        What the database does not take then is lost with the process: logged, with how many."""
        with anyio.move_on_after(5, shield=True):
            for _ in range(_FENCED_RETRIES):
                with contextlib.suppress(LeaseLost, StateUnavailable):
                    await self.flush()
                    break
        if self._pending:
            log.error(
                "state_events_not_written",
                events=len(self._pending),
                dropped=self._health.dropped_in_outage,
            )
