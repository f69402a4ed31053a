"""Tests for monitor.journal: group commit of records and events, and their hand-over to the sinks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from monitor.events import Event, EventType
from monitor.journal import Journal
from monitor.metrics import ProcessMetrics
from monitor.sinks import EventBus, QueuedSink
from monitor.state import Outbox, RecordWrite, SqliteState
from monitor.tracker import Target, Tracker


def rid(i: int) -> str:
    return f"ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{i:012d}"


class CountingState(SqliteState):
    """The real store, counting transactions as (records, events) written."""

    saves: list[tuple[int, int]]

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        self.saves.append((len(records), len(events)))
        return await super().append(events, records=records)


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


class Collecting(QueuedSink):
    """A sink with a small queue that keeps what it is given."""

    def __init__(self, metrics: ProcessMetrics, outbox: Outbox) -> None:
        super().__init__("collect", metrics, outbox, queue_size=3)
        self.got: list[int] = []

    async def deliver(self, batch: Sequence[Event]) -> None:
        self.got.extend(event.sequence for event in batch)


async def test_events_beyond_a_full_queue_are_read_back_from_the_outbox(tmp_path: Path) -> None:
    """1,200 events in one flush go in three transactions; a running sink holding three at a time gets
    all of them, in order, once each, reading the rest back from the outbox, which ends fully
    acknowledged."""
    store = CountingState(tmp_path / "s.sqlite3")
    store.saves = []
    await store.open()
    metrics = ProcessMetrics()
    sink = Collecting(metrics, store)
    journal = Journal(store, Tracker(), EventBus([sink], metrics))
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        journal.publish(
            [Event(EventType.CHANGED, rid(1), "d", (), 1.0, i + 1, "ACTIVE", "FAILED") for i in range(1200)]
        )
        await journal.flush()
        assert store.saves == [(0, 500), (0, 500), (0, 200)]
        assert len(sink._queue) == 3
        assert sample(metrics, "foundry_monitor_sink_outbox_backlog", {"sink": "collect"}) == 1197
        with anyio.fail_after(10):
            while len(sink.got) < 1200:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert sink.got == list(range(1, 1201))
    assert await store.pending("collect") == []
    assert sample(metrics, "foundry_monitor_sink_dropped_events_total", {"sink": "collect"}) == 0
    await store.close()


def sample(metrics: ProcessMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)
