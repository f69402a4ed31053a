"""The file sink: events as JSON lines appended to a file, with what a crash left on it taken into account."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import anyio

from monitor.config.model import FileSinkConfig
from monitor.events import Event
from monitor.formats import DEFAULT_SOURCE
from monitor.metrics import ProcessMetrics
from monitor.sinks.lines import write_lines
from monitor.sinks.queued import QueuedSink
from monitor.state import Outbox

#: How much of the file's end is searched for events written but not acknowledged before a crash.
TAIL_BYTES = 8 << 20


class FileSink(QueuedSink):
    """JSON lines appended to a file; reads and writes happen in a worker thread."""

    def __init__(
        self,
        metrics: ProcessMetrics,
        outbox: Outbox,
        config: FileSinkConfig,
        *,
        source: str = DEFAULT_SOURCE,
    ) -> None:
        super().__init__("file", metrics, outbox, queue_size=10_000, output=config, source=source)
        self._path = Path(config.path)
        self._checked_end = False

    async def deliver(self, batch: Sequence[Event]) -> None:
        await write_lines(self._append, "".join(map(self._formatter.line, batch)))

    async def already_delivered(self, event_ids: set[str]) -> set[str]:
        """Ids among ``event_ids`` on complete lines of the file's last 8 MiB: written, never acknowledged.

        Lines in either format count (the format may have changed since): a native event's ``event_id``,
        a CloudEvent's ``id``."""
        return await anyio.to_thread.run_sync(self._written, event_ids)

    def _written(self, event_ids: set[str]) -> set[str]:
        try:
            with self._path.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(0, size - TAIL_BYTES))
                tail = handle.read()
        except OSError:
            return set()
        found: set[str] = set()
        # A crash can cut the last line short: only whole lines (ending in a newline) count as written.
        for line in tail.split(b"\n")[:-1]:
            try:
                body = json.loads(line)
                event_id = body.get("id") if "specversion" in body else body.get("event_id")
            except (ValueError, AttributeError, TypeError):
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
