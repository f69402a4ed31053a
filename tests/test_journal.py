"""Tests for monitor.journal: group commit of records and events, their hand-over to the sinks, and what it
holds (bounded) while the database does not answer, against the in-memory backend told to fail."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from monitor.events import Event, EventType
from monitor.journal import Journal
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.sinks import EventBus, QueuedSink
from monitor.state import (
    DatabaseHealth,
    MemoryState,
    Outbox,
    RecordWrite,
    SqliteState,
    StateUnavailable,
    WatchedState,
)
from monitor.state.ports import LeaseLost
from monitor.tracker import Target, Tracker
from tests.logcapture import configured_logging, json_lines
from tests.test_sinks import until


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
    journal = Journal(store, tracker, bus, health=DatabaseHealth(metrics))
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
    journal = Journal(store, Tracker(), EventBus([sink], metrics), health=DatabaseHealth(metrics))
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


def change(sequence: int) -> Event:
    return Event(EventType.CHANGED, rid(1), "d", (), 1.0, sequence, "ACTIVE", "FAILED")


class Offered:
    """A sink that keeps what the bus offers it, as (sequence, outbox seq)."""

    name = "offered"

    def __init__(self) -> None:
        self.got: list[tuple[int, int]] = []

    def offer(self, event: Event) -> None:
        self.got.append((event.sequence, event.outbox_seq))


class Rig:
    """A journal over a watched in-memory state that can be told to stop answering, with its sink."""

    def __init__(
        self,
        *,
        buffer_events: int = 100_000,
        clock: Callable[[], float] | None = None,
        memory: MemoryState | None = None,
    ) -> None:
        self.metrics = ProcessMetrics()
        self.health = DatabaseHealth(self.metrics)
        self.memory = memory or MemoryState()
        self.store = WatchedState(self.memory, self.health)
        self.tracker = Tracker()
        self.sink = Offered()
        self.journal = Journal(
            self.store,
            self.tracker,
            EventBus([self.sink], self.metrics),
            health=self.health,
            buffer_events=buffer_events,
            clock=clock or time.time,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels or {})

    async def stored_records(self) -> dict[str, dict[str, Any]]:
        """What the state would load at a restart."""
        await self.memory.close()
        loaded = await self.memory.open()
        return loaded.records


SNAPSHOT = LiveDeployment(
    rid=rid(1),
    model_rid="ri.models.main.model.1",
    model_version_rid="ri.models.main.model-version.1",
    runtime=RuntimeConfiguration(min_replicas=1, max_replicas=1),
    state="ACTIVE",
    is_ready=True,
)


async def test_while_the_database_is_down_events_are_held_and_reach_the_sinks_in_order_once_written() -> None:
    """A flush the database refuses raises, offers nothing to the sinks and holds the events and the changed
    record (database_up 0, buffered 2, one append error); the next flush once it answers writes the record
    and every held event, older ones first, and only then offers them, with their outbox seqs."""
    rig = Rig()
    await rig.memory.open()
    rig.tracker.add(Target(rid(1), "d"))
    rig.memory.reachable = False
    rig.journal.publish([change(1)])
    with pytest.raises(StateUnavailable):
        await rig.journal.flush()
    rig.tracker.observe(rid(1), SNAPSHOT, 5.0)  # the record changes again while the database is down
    rig.journal.publish([change(2)])
    with pytest.raises(StateUnavailable):
        await rig.journal.flush()
    assert rig.sink.got == []
    assert rig.value("foundry_monitor_database_up") == 0
    assert rig.value("foundry_monitor_state_buffered_events") == 2
    assert rig.value("foundry_monitor_database_errors_total", {"operation": "append"}) == 2
    assert rig.health.report()["events_held"] == 2

    rig.memory.reachable = True
    await rig.journal.flush()
    assert rig.sink.got == [(1, 1), (2, 2)]
    assert rig.value("foundry_monitor_database_up") == 1
    assert rig.value("foundry_monitor_state_buffered_events") == 0
    assert [e.body["sequence"] for e in await rig.memory.pending("file")] == [1, 2]
    records = await rig.stored_records()
    assert records[rid(1)]["snapshot"]["state"] == "ACTIVE"


async def test_beyond_the_bound_the_oldest_held_events_are_dropped_counted_and_logged_once() -> None:
    """With buffer_events 3, eight events published during an outage keep the newest three; five are
    counted as dropped; when the database returns those three are written, and one warning gives the count."""
    rig = Rig(buffer_events=3)
    await rig.memory.open()
    rig.memory.reachable = False
    with configured_logging("info", "json") as logged:
        rig.journal.publish([change(1), change(2)])
        with pytest.raises(StateUnavailable):
            await rig.journal.flush()
        for sequence in range(3, 9):
            rig.journal.publish([change(sequence)])
        assert rig.value("foundry_monitor_state_buffered_events") == 3
        assert rig.value("foundry_monitor_state_dropped_events_total") == 5
        with pytest.raises(StateUnavailable):
            await rig.journal.flush()
        rig.memory.reachable = True
        await rig.journal.flush()
    assert [sequence for sequence, _ in rig.sink.got] == [6, 7, 8]
    assert rig.value("foundry_monitor_state_dropped_events_total") == 5
    lines = json_lines(logged.getvalue())
    dropped = [line for line in lines if line["event"] == "state_events_dropped"]
    assert [line["events"] for line in dropped] == [5]
    assert [line["event"] for line in lines if line["event"].startswith("state_database")] == [
        "state_database_unavailable",
        "state_database_available",
    ]


async def test_the_running_journal_retries_with_backoff_logs_once_each_way_and_delivers_after() -> None:
    """Running through an outage: the journal keeps trying (several append errors), logs one warning when
    the database goes away and one info line when it returns, and then the held events reach the sink."""
    rig = Rig()
    await rig.memory.open()
    rig.memory.reachable = False
    with configured_logging("info", "json") as logged:
        async with anyio.create_task_group() as tg:
            await tg.start(rig.journal.run)
            rig.journal.publish([change(1), change(2)])
            with anyio.fail_after(10):
                while (rig.value("foundry_monitor_database_errors_total", {"operation": "append"}) or 0) < 4:
                    await anyio.sleep(0.01)
            rig.journal.publish([change(3)])
            assert rig.sink.got == []
            rig.memory.reachable = True
            with anyio.fail_after(10):
                while len(rig.sink.got) < 3:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert rig.sink.got == [(1, 1), (2, 2), (3, 3)]
    events = [line["event"] for line in json_lines(logged.getvalue())]
    assert events.count("state_database_unavailable") == 1
    assert events.count("state_database_available") == 1
    assert rig.value("foundry_monitor_database_up") == 1


async def test_a_prune_the_database_refuses_is_counted_and_the_journal_goes_on() -> None:
    """The minutely prune of the outbox failing does not stop the journal: counted under ``prune``, tried
    again (not a minute later) until it answers, which brings database_up back to 1, and the journal still
    writes what comes next."""
    now = [1000.0]
    rig = Rig(clock=lambda: now[0])
    await rig.memory.open()
    async with anyio.create_task_group() as tg:
        await tg.start(rig.journal.run)
        rig.memory.reachable = False
        now[0] += 120.0  # a prune is due
        with anyio.fail_after(10):
            while rig.value("foundry_monitor_database_errors_total", {"operation": "prune"}) is None:
                await anyio.sleep(0.01)
        rig.memory.reachable = True
        rig.journal.publish([change(1)])
        with anyio.fail_after(10):
            while not rig.sink.got or not rig.health.up:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert (rig.value("foundry_monitor_database_errors_total", {"operation": "prune"}) or 0) >= 1
    assert rig.value("foundry_monitor_database_up") == 1


async def test_closing_while_the_database_is_down_logs_what_is_lost_and_does_not_raise() -> None:
    """Shutdown during an outage: the last flush is refused, close returns, and an error line says how many
    held events the process takes with it."""
    rig = Rig()
    await rig.memory.open()
    rig.memory.reachable = False
    rig.journal.publish([change(1), change(2)])
    with configured_logging("info", "json") as logged:
        await rig.journal.close()
    (line,) = [line for line in json_lines(logged.getvalue()) if line["event"] == "state_events_not_written"]
    assert (line["level"], line["events"]) == ("error", 2)


async def test_a_locked_sqlite_file_is_held_through_like_a_database_outage(tmp_path: Path) -> None:
    """The same through the SQLite backend: while another process holds the file's lock the journal holds
    its event (database_up 0); once the lock is gone the event is written and offered."""
    path = tmp_path / "s.sqlite3"
    metrics = ProcessMetrics()
    health = DatabaseHealth(metrics)
    store = WatchedState(SqliteState(path, busy_timeout=0.05), health)
    await store.open()
    sink = Offered()
    journal = Journal(store, Tracker(), EventBus([sink], metrics), health=health)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    journal.publish([change(1)])
    with pytest.raises(StateUnavailable):
        await journal.flush()
    assert (sink.got, health.up, health.held) == ([], False, 1)
    other.execute("ROLLBACK")
    other.close()
    await journal.flush()
    assert (sink.got, health.up, health.held) == ([(1, 1)], True, 0)
    await store.close()


class FailingAfter(MemoryState):
    """The in-memory state, which stops answering after its first ``answers`` appends."""

    def __init__(self, answers: int) -> None:
        super().__init__()
        self.answers = answers

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        if self.answers == 0:
            self.reachable = False
        self.answers -= 1
        return await super().append(events, records=records)


async def test_an_outage_mid_flush_offers_what_was_written_and_holds_only_the_rest() -> None:
    """600 events, and the database goes away after the first transaction (500 of them): those 500 are in
    the outbox, so they go on to the sinks at once and are neither held nor dropped by a bound of 100; the
    other 100 are held and follow, in order, once the database answers."""
    memory = FailingAfter(1)
    rig = Rig(buffer_events=100, memory=memory)
    await memory.open()
    rig.journal.publish([change(i) for i in range(1, 601)])
    with pytest.raises(StateUnavailable):
        await rig.journal.flush()
    assert rig.sink.got == [(i, i) for i in range(1, 501)]
    assert rig.value("foundry_monitor_state_dropped_events_total") == 0
    assert rig.value("foundry_monitor_state_buffered_events") == 100
    memory.reachable = True
    await rig.journal.flush()
    assert rig.sink.got == [(i, i) for i in range(1, 601)]
    assert len(await memory.pending("any", limit=1000)) == 600


async def test_no_record_is_written_ahead_of_its_event_when_a_flush_is_cut_short() -> None:
    """1,200 changed records and one event of the second: the record goes in the transaction of its event,
    so when the database goes away after the first transaction, the stored records (what a restart would
    diff against) do not hold that deployment's new state without its event in the outbox."""
    memory = FailingAfter(1)
    rig = Rig(memory=memory)
    await memory.open()
    for i in range(1200):
        rig.tracker.add(Target(rid(i), f"d{i}"))
    rig.journal.publish([change(1)])
    with pytest.raises(StateUnavailable):
        await rig.journal.flush()
    memory.reachable = True
    stored = await rig.stored_records()
    assert len(stored) == 500
    assert rid(1) not in stored
    assert await memory.pending("any") == []


class Fenced(MemoryState):
    """The in-memory state with a fence: a write touching a deployment in ``lost`` is refused as a whole,
    as PostgreSQL refuses it once another replica holds the lease."""

    def __init__(self, lost: set[str]) -> None:
        super().__init__()
        self.lost = lost

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        touched = {event["rid"] for event in events} | {rid for rid, _ in records}
        if refused := touched & self.lost:
            raise LeaseLost(sorted(refused))
        return await super().append(events, records=records)


def other_change(sequence: int) -> Event:
    return Event(EventType.CHANGED, rid(2), "e", (), 1.0, sequence, "ACTIVE", "DEGRADED")


async def test_writes_fenced_by_a_lost_lease_are_dropped_and_the_rest_is_written_next() -> None:
    """A flush refused because another replica holds one deployment's lease drops that deployment's events and
    record for good (its new owner reports them from the stored record), neither held nor counted as dropped
    by the bound, and the next flush writes the other deployments' events and offers them; the running journal
    goes on instead of stopping the service."""
    memory = Fenced({rid(1)})
    rig = Rig(memory=memory)
    await memory.open()
    rig.tracker.add(Target(rid(1), "d"))
    rig.tracker.observe(rid(1), SNAPSHOT, 5.0)
    rig.journal.publish([change(1), other_change(1), change(2)])
    with pytest.raises(LeaseLost):
        await rig.journal.flush()
    assert rig.sink.got == []
    await rig.journal.flush()
    assert rig.sink.got == [(1, 1)]
    assert [item.body["rid"] for item in await memory.pending("any")] == [rid(2)]
    assert rig.value("foundry_monitor_state_dropped_events_total") == 0
    assert rid(1) not in await rig.stored_records()

    rig.journal.publish([change(3), other_change(2)])
    async with anyio.create_task_group() as tg:
        await tg.start(rig.journal.run)
        await until(lambda: len(rig.sink.got) == 2)
        tg.cancel_scope.cancel()
    assert rig.sink.got == [(1, 1), (2, 2)]
