"""Durable state behind two ports (``ports``): the records the journal writes and the outbox the sinks
deliver from; ``sqlite`` is the default backend, ``memory`` keeps the same contract in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from monitor.state.memory import MemoryState
from monitor.state.ports import Loaded, Outbox, OutboxEvent, RecordStore, RecordWrite, State, StateUnavailable
from monitor.state.sqlite import SqliteState

S = TypeVar("S", bound=State)


@asynccontextmanager
async def opened(state: S) -> AsyncIterator[S]:
    """``state`` opened (created or migrated forward) for the block, and closed after it."""
    await state.open()
    try:
        yield state
    finally:
        await state.close()


__all__ = [
    "Loaded",
    "MemoryState",
    "Outbox",
    "OutboxEvent",
    "RecordStore",
    "RecordWrite",
    "SqliteState",
    "State",
    "StateUnavailable",
    "opened",
]
