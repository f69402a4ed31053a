"""The event bus: fans events out to every sink, keeps the most recent ones for the API, and counts them."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

from monitor.events import Event
from monitor.metrics import ProcessMetrics


class Sink(Protocol):
    """What the bus needs of a sink: its name (its outbox cursor's) and a non-blocking ``offer``."""

    name: str

    def offer(self, event: Event) -> None: ...


class EventBus:
    """Fans events out to every sink, keeps the most recent ones for the API, and counts them."""

    def __init__(self, sinks: Sequence[Sink], metrics: ProcessMetrics, *, keep: int = 1000) -> None:
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
