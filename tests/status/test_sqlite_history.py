"""Tests for monitor.state.sqlite_history: the bytes a deployment-year costs, and the state file's migration."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from monitor.state.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteState
from monitor.status.conditions import Condition
from monitor.status.store import RETENTION_DAYS, DayIncrement, HistoryBatch
from tests.status.helpers import RID
from tests.status.stores import sqlite_history

pytestmark = pytest.mark.anyio

#: The bound the module's docstring states.
BYTES_PER_DEPLOYMENT_YEAR = 16 * 1024


def file_bytes(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        return int(db.execute("PRAGMA page_count").fetchone()[0]) * int(
            db.execute("PRAGMA page_size").fetchone()[0]
        )
    finally:
        db.close()


async def test_a_deployment_year_of_days_stays_under_the_stated_bytes(tmp_path: Path) -> None:
    """200 deployments x 365 days (mostly up, some days with two or three conditions) cost less than
    BYTES_PER_DEPLOYMENT_YEAR each in the SQLite file."""
    rng = random.Random(12)
    deployments = [RID[:-4] + f"{i:04d}" for i in range(200)]
    path = tmp_path / "history.sqlite3"
    async with sqlite_history(path) as store:
        empty = file_bytes(path)
        for day in range(365):
            increments = []
            for rid in deployments:
                millis = {Condition.UP: 86_400_000}
                if rng.random() < 0.1:
                    millis = {
                        Condition.UP: 80_000_000,
                        Condition.FAILED: 6_000_000,
                        Condition.UNKNOWN: 400_000,
                    }
                increments.append(DayIncrement(rid, 20_000 + day, millis))
            await store.write(HistoryBatch(days=tuple(increments)))
        used = file_bytes(path) - empty
    per_year = used / len(deployments)
    print(f"history: {per_year:.0f} bytes per deployment-year")
    assert per_year < BYTES_PER_DEPLOYMENT_YEAR


async def test_retention_bounds_days_per_deployment(tmp_path: Path) -> None:
    """After pruning at RETENTION_DAYS, a deployment written for 500 days keeps RETENTION_DAYS rows."""
    async with sqlite_history(tmp_path / "history.sqlite3") as store:
        today = 20_500
        await store.write(
            HistoryBatch(days=tuple(DayIncrement(RID, today - d, {Condition.UP: 1}) for d in range(500)))
        )
        await store.prune(before_day=today - RETENTION_DAYS + 1, points_before=0)
        assert len(await store.days(RID, 0, today)) == RETENTION_DAYS


async def test_a_state_file_of_the_last_version_gains_the_history_tables(tmp_path: Path) -> None:
    """A state file written before the history existed (schema 2) migrates forward and keeps its records."""
    path = tmp_path / "monitor.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in (s for step in MIGRATIONS[:2] for s in step):
        db.execute(statement)
    db.execute("INSERT INTO deployments (rid, record) VALUES (?, '{}')", (RID,))
    db.execute("PRAGMA user_version=2")
    db.close()
    state = SqliteState(path)
    loaded = await state.open()
    try:
        assert RID in loaded.records
        await state.history.write(HistoryBatch(days=(DayIncrement(RID, 1, {Condition.UP: 5}),)))
        assert (await state.history.days(RID, 0, 2))[0].millis[Condition.UP] == 5
    finally:
        await state.close()
    db = sqlite3.connect(path)
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    assert {"status_deployments", "status_days", "status_points", "status_transitions"} <= names
    assert version == SCHEMA_VERSION == 3


async def test_an_unreadable_file_is_moved_aside_and_history_starts_afresh(tmp_path: Path) -> None:
    """A corrupt state file does not stop the monitor: it is kept aside and history starts afresh."""
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    async with sqlite_history(path) as store:
        assert await store.load_open() == {}
        await store.write(HistoryBatch(days=(DayIncrement(RID, 1, {Condition.UP: 5}),)))
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.glob("*.corrupt-*")] == ["history.sqlite3"]
