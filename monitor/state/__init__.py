"""Durable state behind two ports (``ports``): the records the journal writes and the outbox the sinks
deliver from; ``sqlite`` is the default backend, ``memory`` keeps the same contract in this process."""

from __future__ import annotations

from monitor.state.memory import MemoryState
from monitor.state.ports import Loaded, Outbox, OutboxEvent, RecordStore, RecordWrite, State, StateUnavailable
from monitor.state.sqlite import SqliteState

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
]
