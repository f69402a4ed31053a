"""The in-memory backend of the state ports: the same contract as the SQLite file, kept in this process.

For tests and for runs that need no durability. What ``close`` leaves is there again at the next ``open``
of the same object, as a file would be, so a restart can be played without a disk; and setting
``reachable`` to False plays a database that stopped answering (every use raises ``StateUnavailable``).
"""

from __future__ import annotations

import bisect
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from monitor.state.ports import Loaded, OutboxEvent, RecordWrite, StateUnavailable
from monitor.status.store import MemoryHistory


@dataclass(frozen=True, slots=True)
class _Stored:
    seq: int
    event_id: str
    #: The body as JSON text: what is read back is a fresh copy, and a body that is not JSON fails here.
    text: str
    created: float


class MemoryState:
    """Records, outbox and cursors in dictionaries and a list ordered by seq (a ``State``)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._open = False
        self._digest_key = secrets.token_bytes(32)
        self._records: dict[str, str] = {}
        self._outbox: list[_Stored] = []
        self._seqs: dict[str, int] = {}
        self.history = MemoryHistory()
        self._cursors: dict[str, int] = {}
        self._last_seq = 0
        self.reachable = True

    def _check_open(self) -> None:
        if not self._open:
            raise StateUnavailable("state is not open")
        if not self.reachable:
            raise StateUnavailable("state is unreachable")

    async def open(self) -> Loaded:
        await anyio.lowlevel.checkpoint()
        self._open = True
        records = {rid: json.loads(text) for rid, text in self._records.items()}
        last = self._outbox[-1].seq if self._outbox else 0
        return Loaded(digest_key=self._digest_key, records=records, last_seq=last)

    async def close(self) -> None:
        await anyio.lowlevel.checkpoint()
        self._open = False

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        """Append events and write records; all of them or, when one cannot be serialised, none."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        now = self._clock()
        # Serialised before anything changes: a failure leaves the state as it was, like a rollback.
        written = {rid: None if record is None else json.dumps(record) for rid, record in records}
        bodies = [(str(event["event_id"]), json.dumps(event, separators=(",", ":"))) for event in events]
        for rid, text in written.items():
            if text is None:
                self._records.pop(rid, None)
            else:
                self._records[rid] = text
        seqs = []
        for event_id, text in bodies:
            seq = self._seqs.get(event_id)
            if seq is None:
                self._last_seq += 1
                seq = self._seqs[event_id] = self._last_seq
                self._outbox.append(_Stored(seq, event_id, text, now))
            seqs.append(seq)
        return seqs

    async def pending(self, sink: str, *, after: int | None = None, limit: int = 500) -> list[OutboxEvent]:
        await anyio.lowlevel.checkpoint()
        self._check_open()
        start = self._cursors.get(sink, 0) if after is None else after
        first = bisect.bisect_right(self._outbox, start, key=lambda stored: stored.seq)
        return [
            OutboxEvent(stored.seq, stored.event_id, json.loads(stored.text))
            for stored in self._outbox[first : first + max(0, limit)]
        ]

    async def last_seq(self) -> int:
        await anyio.lowlevel.checkpoint()
        self._check_open()
        return self._outbox[-1].seq if self._outbox else 0

    async def acknowledge(self, sink: str, seq: int) -> None:
        await anyio.lowlevel.checkpoint()
        self._check_open()
        self._cursors[sink] = max(self._cursors.get(sink, 0), seq)

    async def prune(self, *, older_than: float, sinks: Sequence[str]) -> tuple[int, int]:
        await anyio.lowlevel.checkpoint()
        self._check_open()
        floor = min((self._cursors.get(s, 0) for s in sinks), default=self._last_seq)
        old = [stored for stored in self._outbox if stored.created < older_than]
        undelivered = sum(1 for stored in old if stored.seq > floor)
        self._outbox = [stored for stored in self._outbox if stored.created >= older_than]
        for stored in old:
            del self._seqs[stored.event_id]
        return len(old), undelivered
