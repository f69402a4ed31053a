"""Event sinks: JSON lines to stdout and to a file, and a webhook; each behind its own bounded queue.

A sink never blocks polling: ``offer`` is non-blocking and delivery runs in the sink's own task. Events
are delivered in outbox order and acknowledged up to the last one delivered, never past one that is not:
when the receiver is unavailable the events wait in the queue and delivery is retried with backoff; when
the queue is full, later events wait in the outbox (the state file) and are read back from it once the
queue has drained. Only events that never were in the outbox are dropped (and counted) on a full queue.
"""

from __future__ import annotations

import enum
import itertools
import json
import random
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import aiohttp
import anyio
import structlog
from anyio.abc import TaskStatus
from yarl import URL

from monitor import USER_AGENT
from monitor.events import Event
from monitor.metrics import ProcessMetrics
from monitor.retry import backoff_ceiling

log = structlog.get_logger(__name__)

#: Events per delivery at most: a fleet's first round (an event per deployment) is not serialised at once.
BATCH = 500


class SinkUnavailable(Exception):
    """The receiver cannot take events now: the first ``delivered`` of the batch went through."""

    def __init__(self, delivered: int) -> None:
        super().__init__(f"receiver unavailable after {delivered} events")
        self.delivered = delivered


class Sink(Protocol):
    """Where events go."""

    name: str

    def offer(self, event: Event) -> None:
        """Queue ``event`` without waiting; when the queue is full the event is dropped and counted."""
        ...

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued events until cancelled."""
        ...

    async def drain(self, within: float) -> None:
        """Deliver what is queued, for at most ``within`` seconds (used at shutdown)."""
        ...


def event_line(event: Event) -> str:
    return json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n"


class QueuedSink(ABC):
    """Shared mechanics: a bounded deque, a wake-up signal, delivery in batches, metrics."""

    def __init__(
        self,
        name: str,
        metrics: ProcessMetrics,
        *,
        queue_size: int = 1000,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        self.name = name
        self._metrics = metrics
        self._queue: deque[Event] = deque()
        self._queue_size = queue_size
        self._wake = anyio.Event()
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._failed_rounds = 0
        #: Told the outbox sequence number up to which events were delivered (set by the journal).
        self.acknowledge: Callable[[int], Awaitable[None]] | None = None
        #: Reads back up to ``limit`` outbox events after a sequence number, oldest first (set by the
        #: journal).
        self.backlog: Callable[[int, int], Awaitable[list[Event]]] | None = None
        #: While not None, offered events stay in the outbox: the first and the last of them.
        self._waiting: tuple[int, int] | None = None
        self._metrics.sink_queue.labels(name).set(0)
        self._metrics.sink_backlog.labels(name).set(0)
        self._metrics.sink_failures.labels(name)
        self._metrics.sink_dropped.labels(name)

    def offer(self, event: Event) -> None:
        readable = event.outbox_seq > 0 and self.backlog is not None
        if readable and (self._waiting is not None or len(self._queue) >= self._queue_size):
            # Behind the queue, in order: it is read back from the outbox once the queue has drained.
            if self._waiting is None:
                log.warning("sink_queue_full_backlog_in_outbox", sink=self.name, first_seq=event.outbox_seq)
                self._waiting = (event.outbox_seq, event.outbox_seq)
            else:
                self._waiting = (self._waiting[0], event.outbox_seq)
            self._show_backlog()
            self._wake.set()
            return
        if len(self._queue) >= self._queue_size:
            self._metrics.sink_dropped.labels(self.name).inc()
            log.warning("sink_queue_full", sink=self.name, event_id=event.event_id)
            return
        self._queue.append(event)
        self._metrics.sink_queue.labels(self.name).set(len(self._queue))
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._queue:
                if self._waiting is not None:
                    await self._read_backlog()
                    continue
                self._wake = anyio.Event()
                await self._wake.wait()
            elif not await self._deliver_queued():
                await anyio.sleep(self._retry_delay())

    async def drain(self, within: float) -> None:
        with anyio.move_on_after(within, shield=True):
            while self._queue and await self._deliver_queued():
                pass
        if self._queue or self._waiting is not None:
            # Not lost: unacknowledged events are offered again from the outbox at the next start.
            log.warning("sink_drain_incomplete", sink=self.name, left=len(self._queue))

    async def _read_backlog(self) -> None:
        assert self._waiting is not None
        assert self.backlog is not None
        first, waited_for = self._waiting
        events = await self.backlog(first - 1, self._queue_size)
        self._queue.extend(events)
        self._metrics.sink_queue.labels(self.name).set(len(self._queue))
        read_to = events[-1].outbox_seq if events else waited_for
        # Events offered while reading moved the end of the span on: they are read next time round.
        last = self._waiting[1]
        self._waiting = None if read_to >= last else (read_to + 1, last)
        self._show_backlog()

    def _show_backlog(self) -> None:
        # Outbox sequence numbers are shared by all sinks, so the span is exact until events are pruned.
        waiting = self._waiting
        self._metrics.sink_backlog.labels(self.name).set(
            0 if waiting is None else waiting[1] - waiting[0] + 1
        )

    def _retry_delay(self) -> float:
        ceiling = backoff_ceiling(self._retry_initial, self._retry_max, self._failed_rounds)
        return random.uniform(ceiling / 2, ceiling)

    def already_delivered(self, event_ids: set[str]) -> set[str]:
        """Which of these replayed events this sink can tell it delivered before a crash (default: none)."""
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
            self._failed_rounds = 0
        for _ in range(delivered):
            self._queue.popleft()
        self._metrics.sink_queue.labels(self.name).set(len(self._queue))
        last = max((event.outbox_seq for event in batch[:delivered]), default=0)
        if last and self.acknowledge is not None:
            # Shielded (and bounded): a shutdown arriving now must not leave delivered events unacknowledged,
            # to be sent again at the next start.
            with anyio.move_on_after(5, shield=True):
                await self.acknowledge(last)
        return delivered == len(batch)

    def _failed(self, waiting: int, reason: str) -> None:
        self._failed_rounds += 1
        self._metrics.sink_failures.labels(self.name).inc()
        # No traceback: a library error's repr can carry a webhook's secret headers.
        log.error("sink_delivery_failed", sink=self.name, error=reason, waiting=waiting)

    @abstractmethod
    async def deliver(self, batch: Sequence[Event]) -> None:
        """Send ``batch`` in order; raise ``SinkUnavailable`` (or any error) to have the rest sent later."""


class StreamSink(QueuedSink):
    """JSON lines to a text stream (stdout by default)."""

    def __init__(
        self, metrics: ProcessMetrics, *, stream: TextIO | None = None, name: str = "stdout"
    ) -> None:
        super().__init__(name, metrics, queue_size=10_000)
        self._stream = stream

    async def deliver(self, batch: Sequence[Event]) -> None:
        stream = self._stream or sys.stdout
        stream.write("".join(event_line(event) for event in batch))
        stream.flush()


class FileSink(QueuedSink):
    """JSON lines appended to a file; writes happen in a worker thread so the event loop never waits."""

    def __init__(self, metrics: ProcessMetrics, path: str) -> None:
        super().__init__("file", metrics, queue_size=10_000)
        self._path = Path(path)
        self._checked_end = False

    async def deliver(self, batch: Sequence[Event]) -> None:
        text = "".join(event_line(event) for event in batch)
        # The thread finishes the write even when the task is cancelled; shielding lets the caller see that it
        # did, instead of writing the batch a second time while draining.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._append, text)

    def already_delivered(self, event_ids: set[str]) -> set[str]:
        """Ids among ``event_ids`` on complete lines of the file's last 8 MiB: written, never acknowledged."""
        try:
            with self._path.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(0, size - (8 << 20)))
                tail = handle.read()
        except OSError:
            return set()
        found: set[str] = set()
        # A crash can cut the last line short: only whole lines (ending in a newline) count as written.
        for line in tail.split(b"\n")[:-1]:
            try:
                event_id = json.loads(line).get("event_id")
            except (ValueError, AttributeError):
                continue
            if event_id in event_ids:
                found.add(event_id)
        return found

    def _append(self, text: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a+b") as handle:
            if not self._checked_end:
                # A line cut short by a crash must not swallow the next event: end it first.
                self._checked_end = True
                if handle.seek(0, 2) > 0:
                    handle.seek(-1, 2)
                    if handle.read(1) != b"\n":
                        handle.write(b"\n")
            handle.write(text.encode("utf-8"))


class WebhookSink(QueuedSink):
    """POSTs each event as JSON, in order, retrying with capped, jittered backoff up to ``max_retries``
    times; after that the event waits and delivery resumes from it ``retry_initial``..``retry_max`` later.
    An event the receiver refuses with a 4xx (but 408/429) is counted as failed and passed over."""

    def __init__(
        self,
        metrics: ProcessMetrics,
        *,
        url: str,
        session: aiohttp.ClientSession,
        index: int = 0,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = 5.0,
        queue_size: int = 1000,
        max_retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        super().__init__(
            f"webhook[{index}]",
            metrics,
            queue_size=queue_size,
            retry_initial=retry_initial,
            retry_max=retry_max,
        )
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **dict(headers)}
        self._delivery = Delivery(session, url, timeout, max_retries, backoff_initial, backoff_max)

    async def deliver(self, batch: Sequence[Event]) -> None:
        for index, event in enumerate(batch):
            data = json.dumps(event.to_json(), separators=(",", ":")).encode()
            outcome = await self._delivery.post(data, self._headers)
            if outcome is Outcome.UNAVAILABLE:
                raise SinkUnavailable(index)
            if outcome is Outcome.REFUSED:
                # Sending it again would be refused again: counted, logged and passed over.
                self._metrics.sink_failures.labels(self.name).inc()
                log.warning("webhook_refused_event", sink=self.name, event_id=event.event_id)


class Outcome(enum.Enum):
    """How a delivery ended."""

    DELIVERED = "delivered"
    #: The receiver answered 4xx (but 408/429): this body will never be taken.
    REFUSED = "refused"
    #: Errors or 5xx through the last retry: worth sending again later.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Delivery:
    """POSTs a body to one URL, retrying failures with capped, fully jittered backoff."""

    session: aiohttp.ClientSession
    url: str
    timeout: float = 5.0
    max_retries: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    async def post(self, data: bytes, headers: Mapping[str, str]) -> Outcome:
        """Whether the receiver accepted ``data``, refused it for good, or could not be reached in time."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        for attempt in range(self.max_retries + 1):
            try:
                async with self.session.post(
                    self.url, data=data, headers=headers, timeout=timeout
                ) as response:
                    if response.status < 300:
                        return Outcome.DELIVERED
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        return Outcome.REFUSED
                    reason = f"status {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            if attempt < self.max_retries:
                ceiling = backoff_ceiling(self.backoff_initial, self.backoff_max, attempt + 1)
                log.debug("delivery_retry", url_host=URL(self.url).host, reason=reason, attempt=attempt + 1)
                await anyio.sleep(random.uniform(0, ceiling))
        return Outcome.UNAVAILABLE


class EventBus:
    """Fans events out to every sink, keeps the most recent ones for the API, and counts them."""

    def __init__(self, sinks: Sequence[QueuedSink], metrics: ProcessMetrics, *, keep: int = 1000) -> None:
        self.sinks = tuple(sinks)
        self._metrics = metrics
        self._recent: deque[Event] = deque(maxlen=keep)

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            self._recent.append(event)
            self._metrics.events.labels(event.type.value).inc()
            for sink in self.sinks:
                sink.offer(event)

    def recent(self, limit: int) -> list[Event]:
        """The last ``limit`` events, newest last."""
        if limit <= 0:
            return []
        return list(self._recent)[-limit:]
