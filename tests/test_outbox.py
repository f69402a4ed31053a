"""The contract of the state ports (monitor.state.ports), run against every backend: SQLite, PostgreSQL and
memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.state import MemoryState, SqliteState, State, StateUnavailable
from monitor.state.postgres import PostgresState

pytestmark = pytest.mark.anyio

Backend = Callable[[Callable[[], float]], State]


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Makes a store of the parametrised backend, with the clock given (one file or database per test)."""
    if request.param == "sqlite":
        return lambda clock: SqliteState(tmp_path / "state.sqlite3", clock=clock)
    if request.param == "postgres":
        db = request.getfixturevalue("pg_database")
        return lambda clock: PostgresState(db.dsn, password=db.password, clock=clock)
    return lambda clock: MemoryState(clock=clock)


def event(n: int) -> dict[str, object]:
    return {"event_id": f"id-{n}", "type": "deployment.changed", "n": n}


async def test_records_events_and_the_digest_key_survive_a_reopen(backend: Backend) -> None:
    """What was appended is loaded again by the same store; the digest key stays, a deleted record goes,
    and an event appended twice keeps its first place."""
    store = backend(lambda: 1.0)
    first = await store.open()
    seqs = await store.append([event(1), event(2)], records=[("rid-1", {"a": 1}), ("rid-2", {"b": 2})])
    assert await store.append([event(1)], records=[("rid-2", None)]) == seqs[:1]
    await store.close()
    second = await store.open()
    assert second.digest_key == first.digest_key
    assert second.records == {"rid-1": {"a": 1}}
    assert second.last_seq == max(seqs)
    assert [p.event_id for p in await store.pending("file")] == ["id-1", "id-2"]
    assert (await store.pending("file"))[0].body == event(1)
    await store.close()


async def test_each_sink_reads_after_its_own_cursor_which_never_moves_back(backend: Backend) -> None:
    """acknowledge moves one sink's cursor; pending reads after it (or after a given seq), oldest first,
    bounded by the limit; acknowledging an older seq leaves the cursor where it was."""
    store = backend(lambda: 1.0)
    await store.open()
    seqs = await store.append([event(i) for i in range(5)])
    assert seqs == sorted(seqs)
    await store.acknowledge("file", seqs[2])
    await store.acknowledge("file", seqs[0])
    assert [p.event_id for p in await store.pending("file")] == ["id-3", "id-4"]
    assert [p.event_id for p in await store.pending("file", after=seqs[0], limit=2)] == ["id-1", "id-2"]
    assert [p.event_id for p in await store.pending("webhook[0]", limit=1)] == ["id-0"]
    assert len(await store.pending("webhook[0]")) == 5
    await store.close()


async def test_last_seq_is_the_newest_event_held_whatever_the_cursors(backend: Backend) -> None:
    """last_seq is 0 for an empty outbox, then the seq of the newest event (an event appended again does
    not move it, nor does a cursor), again after a reopen, and 0 once retention removed every event."""
    now = [1000.0]
    store = backend(lambda: now[0])
    await store.open()
    assert await store.last_seq() == 0
    seqs = await store.append([event(i) for i in range(3)])
    await store.append([event(0)])
    await store.acknowledge("file", seqs[-1])
    assert await store.last_seq() == seqs[-1]
    await store.close()
    await store.open()
    assert await store.last_seq() == seqs[-1]
    seqs = await store.append([event(i) for i in range(3, 5)])
    assert await store.last_seq() == seqs[-1]
    now[0] = 3000.0
    await store.prune(older_than=2000.0, sinks=["file"])
    assert await store.last_seq() == 0
    await store.close()


async def test_retention_bounds_the_outbox_and_counts_what_a_sink_had_not_had(backend: Backend) -> None:
    """prune deletes what is older than the retention, delivered or not, and tells how many of those some
    sink had not had; younger events stay."""
    now = [1000.0]
    store = backend(lambda: now[0])
    await store.open()
    seqs = await store.append([event(i) for i in range(5)])
    await store.acknowledge("file", seqs[2])
    await store.acknowledge("webhook[0]", seqs[1])
    now[0] = 3000.0
    young = await store.append([event(9)])
    assert await store.prune(older_than=500.0, sinks=["file", "webhook[0]"]) == (0, 0)  # too young
    assert await store.prune(older_than=2000.0, sinks=["file", "webhook[0]"]) == (5, 3)
    assert [p.seq for p in await store.pending("webhook[0]")] == young
    await store.close()


async def test_an_append_that_fails_writes_nothing(backend: Backend) -> None:
    """A body that cannot be stored fails the whole append: neither its records nor its events remain."""
    store = backend(lambda: 1.0)
    await store.open()
    with pytest.raises(TypeError):
        await store.append([event(1), {"event_id": "bad", "body": object()}], records=[("rid-1", {"a": 1})])
    assert await store.pending("file") == []
    await store.close()
    assert (await store.open()).records == {}
    await store.close()


async def test_a_store_that_is_not_open_says_so(backend: Backend) -> None:
    """Reading or writing before open (or after close) raises StateUnavailable instead of losing data."""
    store = backend(lambda: 1.0)
    with pytest.raises(StateUnavailable):
        await store.pending("file")
    await store.open()
    await store.close()
    with pytest.raises(StateUnavailable):
        await store.append([event(1)])
