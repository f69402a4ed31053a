"""Group commit of watch state and events: what polls changed is written in one transaction per flush, and
events reach the sinks only once they are in the outbox, so a crash at any point loses none."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import anyio
import structlog
from anyio.abc import TaskStatus

from monitor.events import Event
from monitor.records import record_to_data
from monitor.sinks import EventBus
from monitor.state import RecordWrite, State
from monitor.tracker import Record, Tracker

log = structlog.get_logger(__name__)

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
        interval: float = 0.2,
        retention: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._tracker = tracker
        self._bus = bus
        self._interval = interval
        self._retention = retention
        self._clock = clock
        self._pending: list[Event] = []
        self._versions: dict[str, int] = {}
        self._wake = anyio.Event()
        self._last_prune = clock()

    def publish(self, events: Sequence[Event]) -> None:
        """Events of a poll (or a removal): written with the state at the next flush, then delivered."""
        if events:
            self._pending.extend(events)
            self._wake.set()

    async def flush(self) -> None:
        """Write changed records and pending events in one transaction, then hand the events to the sinks."""
        events, self._pending = self._pending, []
        changed: list[Record] = []
        versions: dict[str, int] = {}
        for record in self._tracker:
            rid = record.target.rid
            versions[rid] = record.version
            if self._versions.get(rid) != record.version:
                changed.append(record)
        gone: list[RecordWrite] = [(rid, None) for rid in self._versions.keys() - versions.keys()]
        if not changed and not gone and not events:
            return
        try:
            # Records and events go in transactions of at most _CHUNK each (a first flush of a large fleet
            # would otherwise build every record's and event's JSON at once). The events come after the
            # records, so none outruns its state, and reach the sinks only once all are written.
            while len(changed) > _CHUNK:
                chunk, changed = changed[:_CHUNK], changed[_CHUNK:]
                await self._store.append([], records=[(r.target.rid, record_to_data(r)) for r in chunk])
            records = gone + [(r.target.rid, record_to_data(r)) for r in changed]
            seqs = await self._store.append([event.to_json() for event in events[:_CHUNK]], records=records)
            for start in range(_CHUNK, len(events), _CHUNK):
                seqs += await self._store.append([e.to_json() for e in events[start : start + _CHUNK]])
        except BaseException:
            self._pending[:0] = events  # not written: keep them for the next flush
            raise
        self._versions = versions
        self._bus.publish([dataclasses.replace(e, outbox_seq=s) for e, s in zip(events, seqs, strict=True)])

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush whenever events wait (at most every ``interval``), and state-only changes every interval."""
        task_status.started()
        while True:
            with anyio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()
            now = self._clock()
            if now - self._last_prune > 60.0:
                self._last_prune = now
                _, undelivered = await self._store.prune(
                    older_than=now - self._retention, sinks=[s.name for s in self._bus.sinks]
                )
                if undelivered:
                    log.warning("outbox_pruned_undelivered", events=undelivered)

    async def close(self) -> None:
        """The last flush, shielded and bounded: what the run observed is on disk before the store closes."""
        with anyio.move_on_after(5, shield=True):
            await self.flush()
