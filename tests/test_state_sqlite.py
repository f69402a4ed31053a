"""Tests for monitor.state.sqlite: the state file itself, its migrations and corruption handling (the
outbox contract it shares with the memory backend is in test_outbox.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.state import StateUnavailable
from monitor.state.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteState


async def test_a_new_file_is_created_with_the_current_schema(tmp_path: Path) -> None:
    """First start creates the file (and its directory) in WAL mode, at the current schema version."""
    path = tmp_path / "sub" / "state.sqlite3"
    store = SqliteState(path)
    loaded = await store.open()
    await store.close()
    assert loaded.records == {}
    assert len(loaded.digest_key) == 32
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_an_old_schema_is_migrated_forward_keeping_its_data(tmp_path: Path) -> None:
    """A version-1 file (before the ``updated`` column) opens, migrates to the current version, keeps rows."""
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO meta (key, value) VALUES ('digest_key', ?)", (b"k" * 32,))
    db.execute("INSERT INTO deployments (rid, record) VALUES ('rid-1', '{\"kept\": true}')")
    db.close()
    store = SqliteState(path)
    loaded = await store.open()
    await store.append([], records=[("rid-2", {"new": True})])
    await store.close()
    assert loaded.records == {"rid-1": {"kept": True}}
    assert loaded.digest_key == b"k" * 32
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT updated FROM deployments WHERE rid='rid-2'").fetchone()[0] is not None
    db.close()


async def test_a_corrupt_file_is_moved_aside_and_a_fresh_one_started(tmp_path: Path) -> None:
    """Garbage in the state file: the service says so, keeps the file for inspection, starts empty."""
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = SqliteState(path, clock=lambda: 1234.0)
    loaded = await store.open()
    await store.append([], records=[("rid", {"ok": 1})])
    await store.close()
    assert loaded.records == {}
    aside = tmp_path / "state.sqlite3.corrupt-1234"
    assert aside.read_bytes().startswith(b"this is not a database")
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM deployments").fetchone()[0] == 1


async def test_a_file_from_a_newer_version_is_not_used(tmp_path: Path) -> None:
    """A schema newer than this monitor knows is moved aside rather than misread."""
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    db.close()
    store = SqliteState(path, clock=lambda: 99.0)
    await store.open()
    await store.close()
    assert (tmp_path / "state.sqlite3.corrupt-99").exists()


async def test_a_file_locked_at_start_is_left_as_it_is_not_moved_aside(tmp_path: Path) -> None:
    """An upgrade's migration that finds the file's write lock held by another process past the busy timeout
    fails the open as ``StateUnavailable``: the file is not taken for corrupt, moved aside and replaced by an
    empty one (which would lose its records and undelivered events); once the lock is gone it migrates."""
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version=1")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("INSERT INTO meta (key, value) VALUES ('digest_key', ?)", (b"k" * 32,))
    db.execute("INSERT INTO deployments (rid, record) VALUES ('rid-1', '{\"kept\": true}')")
    db.execute("BEGIN IMMEDIATE")
    with pytest.raises(StateUnavailable, match="locked"):
        await SqliteState(path, busy_timeout=0.05, clock=lambda: 77.0).open()
    db.execute("ROLLBACK")
    db.close()
    assert not (tmp_path / "state.sqlite3.corrupt-77").exists()
    store = SqliteState(path)
    loaded = await store.open()
    await store.close()
    assert loaded.records == {"rid-1": {"kept": True}}


async def test_a_file_locked_past_the_busy_timeout_is_unavailable_and_written_once_released(
    tmp_path: Path,
) -> None:
    """Another process holding the file's write lock longer than the busy timeout: an append fails as
    ``StateUnavailable`` (as a database that does not answer) and writes nothing, and so do a cursor's
    write and a history write; once the lock is released the same append goes through."""
    path = tmp_path / "state.sqlite3"
    store = SqliteState(path, busy_timeout=0.05)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    event = {"event_id": "e-1", "type": "deployment.observed"}
    with pytest.raises(StateUnavailable, match="locked"):
        await store.append([event], records=[("rid-1", {"kept": True})])
    with pytest.raises(StateUnavailable):
        await store.acknowledge("file", 1)
    with pytest.raises(StateUnavailable):
        await store.history.prune(before_day=0, points_before=0.0)
    other.execute("ROLLBACK")
    other.close()
    assert await store.append([event], records=[("rid-1", {"kept": True})]) == [1]
    await store.close()
    assert (await SqliteState(path).open()).records == {"rid-1": {"kept": True}}


async def test_a_full_file_is_unavailable_and_written_once_there_is_room(tmp_path: Path) -> None:
    """The file cannot grow (SQLite's page limit standing in for a full disk): an append fails as
    ``StateUnavailable`` and leaves nothing half-written; with room again the same append goes through."""
    path = tmp_path / "state.sqlite3"
    store = SqliteState(path)
    await store.open()

    def limit(pages: int | None) -> Callable[[sqlite3.Connection], None]:
        def set_limit(db: sqlite3.Connection) -> None:
            count = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={count if pages is None else pages}")

        return set_limit

    await store._with_connection(limit(None))
    big = {"event_id": "e-1", "type": "deployment.observed", "padding": "x" * 200_000}
    with pytest.raises(StateUnavailable, match="full"):
        await store.append([big], records=[("rid-1", {"kept": True})])
    assert await store.pending("file") == []
    await store._with_connection(limit(1 << 20))
    assert await store.append([big], records=[("rid-1", {"kept": True})]) == [1]
    await store.close()
