"""Tests for monitor.status.writer: history written to SQLite, a restart's gap unknown, a failed write kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.events import EventType
from monitor.metrics import ProcessMetrics
from monitor.state.ports import StateUnavailable
from monitor.status.conditions import Condition
from monitor.status.history import day_of
from monitor.status.store import HistoryBatch, MemoryHistory
from monitor.status.writer import HistoryWriter, Tap
from monitor.tracker import Target, Tracker
from tests.logcapture import configured_logging, json_lines
from tests.status.helpers import MIDNIGHT, RID, event, snapshot
from tests.status.stores import sqlite_history

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def watched(at: float) -> Tracker:
    tracker = Tracker()
    tracker.add(Target(rid=RID, name="scorer"))
    tracker.observe(RID, snapshot(), at)
    return tracker


async def test_restart_gap_is_unknown_in_the_stored_days(tmp_path: Path) -> None:
    """Up for an hour, monitor stopped for two, then up again: the stored day has 2 h unknown, never up."""
    path = tmp_path / "h.sqlite3"
    clock = Clock(MIDNIGHT)
    async with sqlite_history(path) as store:
        tracker = watched(MIDNIGHT + 1)
        writer = HistoryWriter(store, tracker, clock=clock)
        await writer.open()
        writer.publish([event(EventType.OBSERVED, MIDNIGHT + 1, new_state="ACTIVE", ready=True)])
        clock.now = MIDNIGHT + 3601
        await writer.close()
    clock.now = MIDNIGHT + 3 * 3600 + 1
    async with sqlite_history(path) as store:
        tracker = watched(MIDNIGHT + 1)  # restored: its last answer is from the last run
        writer = HistoryWriter(store, tracker, clock=clock)
        await writer.open()
        await writer.flush()
        tracker.observe(RID, snapshot(), clock.now)
        clock.now += 600
        await writer.flush()
        (day,) = await store.days(RID, 0, day_of(MIDNIGHT) + 1)
    assert day.millis == {Condition.UP: 3_600_000 + 600_000, Condition.UNKNOWN: 7_200_000}


async def test_a_failed_write_is_written_with_the_next_flush() -> None:
    """When the store refuses a batch, its history is kept and written by the next flush, none lost."""

    class Flaky(MemoryHistory):
        fail = True

        async def write(self, batch: HistoryBatch) -> None:
            if self.fail:
                self.fail = False
                raise OSError("disk full")
            await super().write(batch)

    clock = Clock(MIDNIGHT)
    store = Flaky()
    tracker = watched(MIDNIGHT)
    writer = HistoryWriter(store, tracker, clock=clock)
    writer.publish([event(EventType.OBSERVED, MIDNIGHT, new_state="ACTIVE", ready=True)])
    clock.now += 60
    with pytest.raises(OSError, match="disk full"):
        await writer.flush()
    clock.now += 60
    await writer.flush()
    (day,) = await store.days(RID, 0, day_of(MIDNIGHT))
    assert day.millis == {Condition.UP: 120_000}
    assert len(await store.transitions(RID, 10)) == 1


async def test_history_held_in_an_outage_is_bounded_counted_and_logged_once() -> None:
    """While the store is unreachable, what waits for it stays within ``held_rows``: the oldest are dropped,
    each counted in foundry_monitor_status_history_dropped_rows_total, with one warning for the outage, and
    a new outage warns again; once the store answers the newest history is written."""

    class Down(MemoryHistory):
        reachable = False

        async def write(self, batch: HistoryBatch) -> None:
            if not self.reachable:
                raise StateUnavailable("state database is down")
            await super().write(batch)

    clock = Clock(MIDNIGHT)
    store = Down()
    metrics = ProcessMetrics()
    writer = HistoryWriter(store, watched(MIDNIGHT), clock=clock, held_rows=30, metrics=metrics)

    def dropped() -> float:
        return metrics.registry.get_sample_value("foundry_monitor_status_history_dropped_rows_total") or 0.0

    async def outage(flushes: int) -> None:
        for _ in range(flushes):
            for state in ("DEGRADED", "ACTIVE"):
                clock.now += 1
                writer.publish([event(EventType.CHANGED, clock.now, new_state=state, ready=True)])
            with pytest.raises(StateUnavailable):
                await writer.flush()

    with configured_logging() as logs:
        await outage(20)
        assert dropped() > 0
        store.reachable = True
        await writer.flush()
        written = len(await store.transitions(RID, 1000)) + len(await store.points(RID, 0))
        store.reachable = False
        await outage(20)
    assert [line["event"] for line in json_lines(logs.getvalue())].count("status_history_dropped") == 2
    assert written == 30
    # Each outage gathers 2 change points and 2 transitions a flush, 80 in all (the first one also the point
    # where the deployment's history begins), of which 30 are held.
    assert dropped() == (81 - 30) + (80 - 30)
    newest = await store.transitions(RID, 1)
    assert newest[0].time == MIDNIGHT + 40


def test_tap_hands_every_batch_to_each_publisher() -> None:
    """The tap gives the journal and the history writer the same events, in order."""
    seen: list[tuple[str, int]] = []

    class Sink:
        def __init__(self, name: str) -> None:
            self.name = name

        def publish(self, events: object) -> None:
            seen.append((self.name, len(events)))  # type: ignore[arg-type]

    Tap(Sink("journal"), Sink("history")).publish([event(EventType.OBSERVED, MIDNIGHT)])
    assert seen == [("journal", 1), ("history", 1)]
