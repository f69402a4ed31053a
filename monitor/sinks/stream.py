"""The stream sink: events as JSON lines on a text stream, stdout by default."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from monitor.events import Event
from monitor.metrics import ProcessMetrics
from monitor.sinks.lines import event_line, write_lines
from monitor.sinks.queued import QueuedSink
from monitor.state import Outbox


class StreamSink(QueuedSink):
    """JSON lines to a text stream (stdout by default), written in a worker thread."""

    def __init__(
        self, metrics: ProcessMetrics, outbox: Outbox, *, stream: TextIO | None = None, name: str = "stdout"
    ) -> None:
        super().__init__(name, metrics, outbox, queue_size=10_000)
        self._stream = stream

    async def deliver(self, batch: Sequence[Event]) -> None:
        await write_lines(self._write, "".join(event_line(event) for event in batch))

    def _write(self, text: str) -> None:
        # sys.stdout is looked up at each write: it is replaced while tests capture output.
        stream = self._stream or sys.stdout
        stream.write(text)
        stream.flush()
