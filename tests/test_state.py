"""Tests for monitor.state: the SQLite state file, its outbox, migrations and corruption handling."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from monitor.state import MIGRATIONS, SCHEMA_VERSION, SqliteState


def event(n: int) -> dict[str, object]:
    return {"event_id": f"id-{n}", "type": "deployment.changed", "n": n}


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


async def test_records_events_and_the_digest_key_survive_a_reopen(tmp_path: Path) -> None:
    """What was saved is loaded again; the digest key stays the same so digests stay comparable."""
    path = tmp_path / "state.sqlite3"
    store = SqliteState(path)
    first = await store.open()
    seqs = await store.save([("rid-1", {"a": 1}), ("rid-2", {"b": 2})], [event(1), event(2)])
    await store.save([("rid-2", None)], [event(1)])  # the same event again keeps its first place
    await store.close()
    store = SqliteState(path)
    second = await store.open()
    assert second.digest_key == first.digest_key
    assert second.records == {"rid-1": {"a": 1}}
    assert second.last_seq == max(seqs)
    pending = await store.pending("file")
    assert [p.event_id for p in pending] == ["id-1", "id-2"]
    await store.close()


async def test_each_sink_has_its_own_cursor_and_retention_bounds_the_outbox(tmp_path: Path) -> None:
    """mark_delivered moves one sink's cursor; prune deletes what is older than the retention, delivered
    or not, and tells how many of those some sink had not had; younger events stay."""
    now = [1000.0]
    store = SqliteState(tmp_path / "state.sqlite3", clock=lambda: now[0])
    await store.open()
    seqs = await store.save([], [event(i) for i in range(5)])
    await store.mark_delivered("file", seqs[2])
    assert [p.event_id for p in await store.pending("file")] == ["id-3", "id-4"]
    assert [p.event_id for p in await store.pending("file", after=seqs[0], limit=2)] == ["id-1", "id-2"]
    assert len(await store.pending("webhook[0]")) == 5
    await store.mark_delivered("webhook[0]", seqs[1])
    now[0] = 3000.0
    young = await store.save([], [event(9)])
    assert await store.prune(older_than=500.0, sinks=["file", "webhook[0]"]) == (0, 0)  # too young
    assert await store.prune(older_than=2000.0, sinks=["file", "webhook[0]"]) == (5, 3)
    assert [p.seq for p in await store.pending("webhook[0]")] == young
    await store.close()


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
    await store.save([("rid-2", {"new": True})], [])
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
    await store.save([("rid", {"ok": 1})], [])
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
