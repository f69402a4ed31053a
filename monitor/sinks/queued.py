"""What every sink shares: delivery from the sink's own outbox cursor, through an in-memory cache.

A sink never blocks polling: ``offer`` is non-blocking and delivery runs in the sink's own task. Events are
delivered in outbox order and acknowledged up to the last one delivered, never past one that is not. The
queue is only a cache of what comes next in the outbox: at start, and whenever it is full, the sink reads
back from the outbox after what it last took, so nothing that reached the outbox is dropped. When the
receiver is unavailable the events stay queued and delivery resumes with backoff. Only events that never
were in an outbox are dropped (and counted) on a full queue.

While the database does not answer, a sink delivers what it has queued and tries the outbox again with a
capped backoff: its cursor lags and is written once the database is back, so a restart in between
delivers those events again (at least once, with the same ``event_id``), but for what a sink can tell it
delivered before.

Events pass the sink's ``Shaper`` on their way into the queue. The cursor never passes an event the shaper
holds, so a crash while holding reads it again; the other deployments' events delivered meanwhile are read
again too and delivered a second time (at least once), but for what a sink can tell it delivered before.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Final

import anyio
import structlog
from anyio.abc import TaskStatus

from monitor.config.model import OutputConfig
from monitor.events import Event, event_from_json
from monitor.formats import DEFAULT_SOURCE, Formatter
from monitor.metrics import ProcessMetrics
from monitor.retry import Backoff
from monitor.shaping import Shaper
from monitor.state import Outbox, OutboxEvent, StateUnavailable
from monitor.state.health import RETRY_INITIAL, RETRY_MAX

log = structlog.get_logger(__name__)
#: Native JSON, every event sent as it comes: the output of a sink that has no settings for it.
PLAIN: Final = OutputConfig()

#: Events per delivery at most: a fleet's first round (an event per deployment) is not serialised at once.
BATCH = 500
#: How long an acknowledgement may hold up a cancellation (it is shielded so that none is lost).
ACK_SECONDS = 5.0


class SinkUnavailable(Exception):
    """The receiver cannot take events now: the first ``delivered`` of the batch went through."""

    def __init__(self, delivered: int) -> None:
        super().__init__(f"receiver unavailable after {delivered} events")
        self.delivered = delivered


def events_of(pending: Sequence[OutboxEvent]) -> list[Event]:
    """The events of outbox entries; one this version cannot read is logged and passed over."""
    events = []
    for item in pending:
        try:
            events.append(event_from_json(item.body, outbox_seq=item.seq))
        except ValueError:
            log.warning("outbox_event_unreadable", seq=item.seq)
    return events


class QueuedSink(ABC):
    """Shared mechanics: the outbox cursor, the cache in front of it, delivery in batches, metrics."""

    def __init__(
        self,
        name: str,
        metrics: ProcessMetrics,
        outbox: Outbox,
        *,
        queue_size: int = 1000,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        output: OutputConfig = PLAIN,
        source: str = DEFAULT_SOURCE,
    ) -> None:
        self.name = name
        self._metrics = metrics
        self._outbox = outbox
        self._formatter = Formatter(output.format, source)
        self._shaping = output.shaping
        #: What is ready to deliver, shaped; in outbox order but for held events released later.
        self._queue: deque[Event] = deque()
        self._queue_size = queue_size
        self._wake = anyio.Event()
        self._backoff = Backoff(retry_initial, retry_max)
        #: Between tries of an outbox that does not answer (reads, or the cursor's writes).
        self._outbox_backoff = Backoff(RETRY_INITIAL, RETRY_MAX)
        #: With an outbox other processes append to, how often it is read for what they appended (every
        #: event is then read from the outbox, in its order); None while this process is its only writer.
        self._shared: float | None = None
        self.reset()
        self._metrics.sink_backlog.labels(name).set(0)
        self._metrics.sink_failures.labels(name)
        self._metrics.sink_dropped.labels(name)

    def follow_shared_outbox(self, every: float) -> None:
        """Other replicas append to the outbox too: read it every ``every`` seconds, offers only wake."""
        self._shared = every

    def reset(self) -> None:
        """Forget what was read and queued: the next ``run`` starts again from the cursor, which another
        replica may have moved (the sink's lease came back to this one). A new sink starts so too."""
        self._queue.clear()
        self._shaper = Shaper(self._shaping)
        #: The last outbox seq taken into the queue; None until the first read, which starts at the
        #: sink's cursor in the outbox.
        self._read_to: int | None = None
        #: While True, offered events are left in the outbox and read back from it in order. True at
        #: start: what the last run did not deliver comes first.
        self._behind = True
        #: The highest seq offered while behind: the outbox holds at least that much.
        self._known_to = 0
        #: The cursor as this run last moved it.
        self._acked = 0
        self._metrics.sink_queue.labels(self.name).set(0)

    def offer(self, event: Event) -> None:
        """Take ``event`` into the queue without waiting, or leave it in the outbox for later."""
        seq = event.outbox_seq
        if seq == 0:
            # In no outbox, so it cannot be read back later: a full queue drops it.
            if len(self._queue) >= self._queue_size:
                self._metrics.sink_dropped.labels(self.name).inc()
                log.warning("sink_queue_full", sink=self.name, event_id=event.event_id)
                return
            self._queue.extend(self._shaper.push(event))
        elif self._read_to is not None and seq <= self._read_to:
            return  # queued or delivered already (the journal offers again what a failed flush wrote)
        elif self._behind or self._shared is not None or len(self._queue) >= self._queue_size:
            if not self._behind and self._shared is None:
                log.warning("sink_queue_full_backlog_in_outbox", sink=self.name, first_seq=seq)
            self._behind = True
            self._known_to = max(self._known_to, seq)
            self._show_backlog()
        else:
            self._queue.extend(self._shaper.push(event))
            self._read_to = seq
        self._metrics.sink_queue.labels(self.name).set(len(self._queue))
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Read what the last run left undelivered, then deliver until cancelled."""
        with contextlib.suppress(StateUnavailable):  # still behind: the loop reads it once it answers
            await self._read_back()
        task_status.started()
        while True:
            try:
                await self._round()
            except StateUnavailable:
                # Counted and logged by the database's health; the cursor is written at a later round.
                await anyio.sleep(self._outbox_backoff.failed())
            else:
                self._outbox_backoff.succeeded()

    async def _round(self) -> None:
        """Deliver a batch, or read the outbox, or move the cursor and wait for more."""
        self._queue.extend(self._shaper.due(time.time()))
        if self._queue:
            if not await self._deliver_queued():
                await anyio.sleep(self._backoff.failed())
        elif self._behind:
            await self._read_back()
        else:
            # What the shaper passed over (a dropped flap) moves the cursor too, and a cursor the
            # database refused before is written now.
            await self._settle()
            self._wake = anyio.Event()
            deadline = self._shaper.next_deadline()
            wait = math.inf if deadline is None else deadline - time.time()
            with anyio.move_on_after(wait if self._shared is None else min(wait, self._shared)):
                await self._wake.wait()
            if self._shared is not None:
                self._behind = True

    async def drain(self, within: float) -> None:
        """Deliver what is queued and what waits in the outbox, for at most ``within`` seconds (shutdown)."""
        with anyio.move_on_after(within, shield=True):
            try:
                while self._queue or self._behind:
                    if not self._queue:
                        await self._read_back()
                    elif not await self._deliver_queued():
                        break
                await self._settle()  # a cursor that lagged behind an outage, written while there is time
            except StateUnavailable:
                pass
        if self._queue or self._behind:
            # Not lost: unacknowledged events are read from the outbox again at the next start.
            log.warning("sink_drain_incomplete", sink=self.name, left=len(self._queue))

    async def _read_back(self) -> None:
        """Fill the queue from the outbox after what it last took (after the cursor, the first time)."""
        first = self._read_to is None
        limit = max(0, self._queue_size - len(self._queue))
        known = self._known_to
        pending = await self._outbox.pending(self.name, after=self._read_to, limit=limit)
        events = [shaped for event in events_of(pending) for shaped in self._shaper.push(event)]
        if first:
            events.extend(self._shaper.due(time.time()))
        if first and events:
            # A crash between a delivery and its acknowledgement leaves that batch (and what was delivered
            # while an event was held) at the head of the outbox, shaped again alike; a sink that can tell
            # it delivered some of it before does not deliver them again.
            done = await self.already_delivered({event.event_id for event in events})
            events = [event for event in events if event.event_id not in done]
        if pending:
            self._read_to = pending[-1].seq
        self._queue.extend(events)
        reached_end = len(pending) < limit
        if not reached_end:
            # More waits than the queue takes (at start, nothing offered yet says how much): the outbox's
            # newest seq bounds it. Should the outbox not answer, the offers still tell.
            with contextlib.suppress(StateUnavailable):
                self._known_to = max(self._known_to, await self._outbox.last_seq())
        # Offers while reading may or may not be in what was read: then read once more to be sure.
        if reached_end and (self._known_to == known or (self._read_to or 0) >= self._known_to):
            self._behind = False
        self._metrics.sink_queue.labels(self.name).set(len(self._queue))
        self._show_backlog()
        if pending and not events:
            # Everything read was delivered before, cannot be read or is held: the cursor moves up to it.
            await self._settle()

    def _show_backlog(self) -> None:
        # Outbox sequence numbers are shared by all sinks, so the span is exact until events are pruned.
        backlog = 0
        if self._behind and self._read_to is not None:
            backlog = max(0, self._known_to - self._read_to)
        self._metrics.sink_backlog.labels(self.name).set(backlog)

    async def already_delivered(self, event_ids: set[str]) -> set[str]:
        """Which of these events, read at start, this sink can tell it delivered before a crash (none)."""
        return set()

    async def _deliver_queued(self) -> bool:
        """Deliver the head of the queue; False when the receiver failed (the rest stays queued)."""
        batch = list(itertools.islice(self._queue, BATCH))
        try:
            await self.deliver(batch)
            delivered = len(batch)
        except SinkUnavailable as exc:
            delivered = exc.delivered
            self._failed(len(batch) - delivered, "receiver unavailable")
        except Exception as exc:  # a sink's failure is counted and logged, never fatal to the service
            # Which events went through is unknown: all of them are sent again (at least once).
            delivered = 0
            self._failed(len(batch), type(exc).__name__)
        else:
            self._backoff.succeeded()
        for _ in range(delivered):
            self._queue.popleft()
        self._metrics.sink_queue.labels(self.name).set(len(self._queue))
        if delivered:
            await self._settle()
        return delivered == len(batch)

    async def _settle(self) -> None:
        """Move the cursor up to what was taken, but never onto an event still queued or held."""
        bound = self._read_to or 0
        held = self._shaper.held_from()
        queued = min((event.outbox_seq for event in self._queue if event.outbox_seq), default=None)
        for first_open in (held, queued):
            if first_open is not None:
                bound = min(bound, first_open - 1)
        if bound > self._acked:
            # Shielded (and bounded): a shutdown arriving now must not leave delivered events
            # unacknowledged, to be sent again at the next start.
            with anyio.move_on_after(ACK_SECONDS, shield=True) as scope:
                await self._outbox.acknowledge(self.name, bound)
            if not scope.cancelled_caught:
                self._acked = bound

    def _failed(self, waiting: int, reason: str) -> None:
        self._metrics.sink_failures.labels(self.name).inc()
        # No traceback: a library error's repr can carry a webhook's secret headers.
        log.error("sink_delivery_failed", sink=self.name, error=reason, waiting=waiting)

    @abstractmethod
    async def deliver(self, batch: Sequence[Event]) -> None:
        """Send ``batch`` in order; raise ``SinkUnavailable`` (or any error) to have the rest sent later."""
