"""Tests for monitor.status.sqlite_history: the bytes a deployment-year costs, and the migration."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from monitor.status.conditions import Condition
from monitor.status.sqlite_history import MIGRATION, migrate, open_sqlite_history
from monitor.status.store import RETENTION_DAYS, DayIncrement, HistoryBatch
from tests.status.helpers import RID

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
    async with open_sqlite_history(path) as store:
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
    async with open_sqlite_history(tmp_path / "history.sqlite3") as store:
        today = 20_500
        await store.write(
            HistoryBatch(days=tuple(DayIncrement(RID, today - d, {Condition.UP: 1}) for d in range(500)))
        )
        await store.prune(before_day=today - RETENTION_DAYS + 1, points_before=0)
        assert len(await store.days(RID, 0, today)) == RETENTION_DAYS


def test_migration_is_one_step_a_schema_can_run() -> None:
    """The migration statements run inside another schema's transaction; migrate() is idempotent."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE deployments (rid TEXT PRIMARY KEY)")
    db.execute("BEGIN IMMEDIATE")
    for statement in MIGRATION:
        db.execute(statement)
    db.execute("COMMIT")
    migrate(db)
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"status_deployments", "status_days", "status_points", "status_transitions"} <= names


async def test_an_unreadable_file_is_moved_aside_and_history_starts_afresh(tmp_path: Path) -> None:
    """A corrupt history file does not stop the monitor: it is kept aside and a new one is started."""
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    async with open_sqlite_history(path) as store:
        assert await store.load_open() == {}
        await store.write(HistoryBatch(days=(DayIncrement(RID, 1, {Condition.UP: 5}),)))
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.glob("*.corrupt-*")] == ["history.sqlite3"]
