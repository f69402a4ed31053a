"""Tests for monitor.journal: group commit of records and events, and replay of the outbox."""

from __future__ import annotations

import io
from pathlib import Path

from monitor.events import Event, EventType
from monitor.journal import Journal
from monitor.metrics import ProcessMetrics
from monitor.sinks import EventBus, StreamSink
from monitor.state import SqliteState
from monitor.tracker import Target, Tracker


def rid(i: int) -> str:
    return f"ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{i:012d}"


class CountingState(SqliteState):
    """The real store, counting transactions."""

    saves: list[tuple[int, int]]

    async def save(self, records, events):  # type: ignore[no-untyped-def]
        self.saves.append((len(records), len(events)))
        return await super().save(records, events)


async def test_a_large_flush_is_chunked_and_events_come_last(tmp_path: Path) -> None:
    """1,200 changed records go in three transactions; the events ride with the last one."""
    store = CountingState(tmp_path / "s.sqlite3")
    store.saves = []
    await store.open()
    tracker = Tracker()
    for i in range(1200):
        tracker.add(Target(rid(i), f"d{i}"))
    metrics = ProcessMetrics()
    bus = EventBus([], metrics)
    journal = Journal(store, tracker, bus)
    journal.publish([Event(EventType.REMOVED, rid(9999), "gone", (), 1.0, 1)])
    await journal.flush()
    assert store.saves == [(500, 0), (500, 0), (200, 1)]
    await journal.flush()  # nothing changed since: nothing written
    assert len(store.saves) == 3
    await store.close()
    reopened = await SqliteState(tmp_path / "s.sqlite3").open()
    assert len(reopened.records) == 1200


async def test_unacknowledged_events_are_replayed_to_each_sink(tmp_path: Path) -> None:
    """Events written but not acknowledged by a sink are offered to it again, once, after a restart."""
    store = SqliteState(tmp_path / "s.sqlite3")
    await store.open()
    metrics = ProcessMetrics()
    events = [Event(EventType.CHANGED, rid(1), "d", (), 1.0 + i, i + 1, "ACTIVE", "FAILED") for i in range(3)]
    seqs = await store.save([], [e.to_json() for e in events])
    await store.mark_delivered("stdout", seqs[0])
    sink = StreamSink(metrics, stream=io.StringIO())
    journal = Journal(store, Tracker(), EventBus([sink], metrics))
    assert await journal.replay([sink]) == 2
    await sink.drain(5.0)
    assert await store.pending("stdout") == []
    await store.close()
