"""The status history on a real SQLite state file or PostgreSQL database, opened and closed around a test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from monitor.state import SqliteState, opened
from monitor.state.postgres import PostgresState
from monitor.state.postgres_history import PostgresHistory
from monitor.state.sqlite_history import SqliteHistory
from tests.pg import PgDatabase


@asynccontextmanager
async def sqlite_history(path: str | os.PathLike[str]) -> AsyncIterator[SqliteHistory]:
    """The history store of the state file at ``path`` (created or migrated as the service would)."""
    async with opened(SqliteState(path)) as state:
        yield state.history


@asynccontextmanager
async def postgres_history(database: PgDatabase) -> AsyncIterator[PostgresHistory]:
    """The history store of ``database`` (migrated as the service would)."""
    async with opened(PostgresState(database.dsn, password=database.password)) as state:
        yield state.history
