"""The stream sink: events as JSON lines on a text stream, stdout by default."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from monitor.events import Event
from monitor.formats import NATIVE_FORMAT, Formatter
from monitor.metrics import ProcessMetrics
from monitor.shaping import UNSHAPED, Shaping
from monitor.sinks.lines import write_lines
from monitor.sinks.queued import QueuedSink
from monitor.state import Outbox


class StreamSink(QueuedSink):
    """JSON lines to a text stream (stdout by default), written in a worker thread."""

    def __init__(
        self,
        metrics: ProcessMetrics,
        outbox: Outbox,
        *,
        stream: TextIO | None = None,
        name: str = "stdout",
        formatter: Formatter = NATIVE_FORMAT,
        shaping: Shaping = UNSHAPED,
    ) -> None:
        super().__init__(name, metrics, outbox, queue_size=10_000, formatter=formatter, shaping=shaping)
        self._stream = stream

    async def deliver(self, batch: Sequence[Event]) -> None:
        await write_lines(self._write, "".join(map(self._formatter.line, batch)))

    def _write(self, text: str) -> None:
        # sys.stdout is looked up at each write: it is replaced while tests capture output.
        stream = self._stream or sys.stdout
        stream.write(text)
        stream.flush()
