"""The stream sink: events as JSON lines on a text stream, stdout by default."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from monitor.config.model import OutputConfig
from monitor.events import Event
from monitor.formats import DEFAULT_SOURCE
from monitor.metrics import ProcessMetrics
from monitor.sinks.lines import write_lines
from monitor.sinks.queued import PLAIN, QueuedSink
from monitor.state import Outbox


class StreamSink(QueuedSink):
    """JSON lines to a text stream (stdout by default), written in a worker thread."""

    def __init__(
        self,
        metrics: ProcessMetrics,
        outbox: Outbox,
        output: OutputConfig = PLAIN,
        *,
        stream: TextIO | None = None,
        name: str = "stdout",
        source: str = DEFAULT_SOURCE,
    ) -> None:
        super().__init__(name, metrics, outbox, queue_size=10_000, output=output, source=source)
        self._stream = stream

    async def deliver(self, batch: Sequence[Event]) -> None:
        await write_lines(self._write, "".join(map(self._formatter.line, batch)))

    def _write(self, text: str) -> None:
        # sys.stdout is looked up at each write: it is replaced while tests capture output.
        stream = self._stream or sys.stdout
        stream.write(text)
        stream.flush()
