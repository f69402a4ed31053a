"""Durable state behind two ports (``ports``): the records the journal writes and the outbox the sinks
deliver from; ``sqlite`` is the default backend, ``postgres`` a database several processes may share
(imported with its driver only when chosen), ``memory`` keeps the same contract in this process; ``health``
watches a backend's uses to tell whether its database answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from monitor.config.model import StateConfig
from monitor.state.health import DatabaseHealth, WatchedState
from monitor.state.memory import MemoryState
from monitor.state.ports import (
    Fence,
    LeaseLost,
    Loaded,
    Outbox,
    OutboxEvent,
    RecordStore,
    RecordWrite,
    State,
    StateUnavailable,
)
from monitor.state.sqlite import SqliteState

S = TypeVar("S", bound=State)


def state_for(config: StateConfig) -> State:
    """The backend ``config`` chooses, not yet opened."""
    if config.backend == "postgres":
        # Imported only for this backend: asyncpg costs a process that keeps its state in SQLite 3 MB of RSS.
        from monitor.state.postgres import PostgresState

        assert config.dsn is not None  # the configuration requires it with this backend
        return PostgresState(config.dsn, password=config.password, password_file=config.password_file)
    return SqliteState(config.path)


def whereabouts(config: StateConfig) -> dict[str, str]:
    """The backend ``config`` chooses and where it lives (the DSN's hosts or the file), without credentials
    or parameters: for a log line."""
    if config.backend == "postgres":
        assert config.dsn is not None
        parts = urlsplit(config.dsn)
        hosts = parts.netloc.rpartition("@")[2] or ",".join(parse_qs(parts.query).get("host", ()))
        return {"backend": "postgres", "host": hosts or "localhost"}
    return {"backend": "sqlite", "path": config.path}


@asynccontextmanager
async def opened(state: S) -> AsyncIterator[S]:
    """``state`` opened (created or migrated forward) for the block, and closed after it."""
    await state.open()
    try:
        yield state
    finally:
        await state.close()


__all__ = [
    "DatabaseHealth",
    "Fence",
    "LeaseLost",
    "Loaded",
    "MemoryState",
    "Outbox",
    "OutboxEvent",
    "RecordStore",
    "RecordWrite",
    "SqliteState",
    "State",
    "StateUnavailable",
    "WatchedState",
    "opened",
    "state_for",
    "whereabouts",
]
