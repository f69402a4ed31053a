"""The ports of durable state: the record store the journal writes and the outbox the sinks deliver from.

Backend-neutral on purpose: events are numbered by one outbox-wide, increasing sequence; each sink has its
own cursor, kept by the backend under the sink's name, so that a shared backend can let replicas deliver
a sink each from where the last one stopped. Nothing here names a database type.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from monitor.status.store import HistoryStore


class StateUnavailable(Exception):
    """The state cannot be used (corrupt, unreadable, from a newer version, or not open)."""


class LeaseLost(Exception):
    """Writes for these deployments were refused: this process no longer holds their leases (another
    replica owns them now, and continues from what was written before). Nothing of the call was written:
    the caller drops these deployments' records and events for good and appends the rest again."""

    def __init__(self, rids: Sequence[str]) -> None:
        super().__init__(f"leases lost on {len(rids)} deployments")
        self.rids = frozenset(rids)


class Fence(Protocol):
    """Which deployments a process may write for: those whose lease it holds, by the lease's token."""

    @property
    def replica(self) -> str: ...

    def token(self, rid: str) -> int | None:
        """The fencing token of this process's lease on ``rid`` (None: it holds none)."""
        ...

    def retired(self, rid: str) -> bool:
        """Whether ``rid`` left the fleet (no replica is to watch it): its record may be deleted by the
        last owner, or by anyone once no live lease holds it."""
        ...

    def refused(self, rids: Collection[str]) -> None:
        """The database refused writes for ``rids``: their leases are lost."""
        ...


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a store holds at start: the digest key, each deployment's record, and the outbox's last seq."""

    digest_key: bytes
    records: dict[str, dict[str, Any]]
    last_seq: int


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event waiting in the outbox, as its JSON body, with its place in the outbox."""

    seq: int
    event_id: str
    body: dict[str, Any]


#: A deployment's record to write (by RID), or None to delete it.
RecordWrite = tuple[str, dict[str, Any] | None]


class Outbox(Protocol):
    """Events on their way to the sinks, each sink reading and acknowledging from its own cursor."""

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        """Append ``events`` and write the ``records`` they come from, in one transaction.

        Returns each event's sequence number; an event already in the outbox (same ``event_id``) keeps its
        first one.
        """
        ...

    async def pending(self, sink: str, *, after: int | None = None, limit: int = 500) -> list[OutboxEvent]:
        """Up to ``limit`` events after ``sink``'s cursor (or, with ``after``, that seq), oldest first."""
        ...

    async def acknowledge(self, sink: str, seq: int) -> None:
        """``sink`` has had every event up to ``seq``; a cursor never moves back."""
        ...

    async def last_seq(self) -> int:
        """The seq of the newest event the outbox holds (0 when it holds none), whoever appended it."""
        ...

    async def prune(self, *, older_than: float, sinks: Sequence[str]) -> tuple[int, int]:
        """Delete events older than ``older_than`` (Unix time), delivered or not: the retention bounds the
        outbox even while a sink's receiver is down for good. Returns (deleted, of which some sink had not
        had)."""
        ...


class RecordStore(Protocol):
    """Where the watch state lives between runs: opened (and loaded) at start, closed at the end."""

    async def open(self) -> Loaded:
        """Open (creating or migrating as needed) and load what the last run left."""
        ...

    async def close(self) -> None: ...


class State(RecordStore, Outbox, Protocol):
    """A backend of both ports, as the journal and the service use it, with the status history beside them
    (in the same file or database, so every backend carries it)."""

    @property
    def history(self) -> HistoryStore: ...
