"""The history store contract, run against the in-memory, SQLite and PostgreSQL implementations alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.status.conditions import Condition
from monitor.status.history import ChangePoint, DayDurations
from monitor.status.store import (
    TRANSITIONS_KEPT,
    DayIncrement,
    HistoryBatch,
    HistoryStore,
    MemoryHistory,
    OpenInterval,
    Transition,
)
from tests.status.helpers import MIDNIGHT, RID
from tests.status.stores import postgres_history, sqlite_history

pytestmark = pytest.mark.anyio
OTHER = RID[:-1] + "2"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    if request.param == "memory":
        yield MemoryHistory()
        return
    if request.param == "postgres":
        async with postgres_history(request.getfixturevalue("pg_database")) as postgres:
            yield postgres
        return
    async with sqlite_history(tmp_path / "history.sqlite3") as sqlite:
        yield sqlite


def transition(rid: str, time: float, n: int = 0) -> Transition:
    return Transition(
        event_id=f"e{rid[-1]}{n}",
        rid=rid,
        name="scorer",
        time=time,
        type="deployment.changed",
        old_state="ACTIVE",
        new_state="FAILED",
        ready=False,
        changes=(("status.state", "ACTIVE", "FAILED"),),
        error=None,
    )


async def test_day_increments_add_up(store: HistoryStore) -> None:
    """Two batches touching one day add their milliseconds; a range read returns days oldest first."""
    await store.write(HistoryBatch(days=(DayIncrement(RID, 10, {Condition.UP: 1000}),)))
    await store.write(
        HistoryBatch(
            days=(
                DayIncrement(RID, 10, {Condition.UP: 500, Condition.FAILED: 20}),
                DayIncrement(RID, 9, {Condition.UNKNOWN: 7}),
            )
        )
    )
    assert await store.days(RID, 0, 100) == [
        DayDurations(9, {Condition.UNKNOWN: 7}),
        DayDurations(10, {Condition.UP: 1500, Condition.FAILED: 20}),
    ]
    assert await store.days(RID, 10, 10) == [DayDurations(10, {Condition.UP: 1500, Condition.FAILED: 20})]
    assert await store.days(OTHER, 0, 100) == []


async def test_points_start_with_the_one_in_force(store: HistoryStore) -> None:
    """Points since t are led by the last point before t, which says the condition at t."""
    points = [
        ChangePoint(MIDNIGHT + s, c)
        for s, c in [(0, Condition.UP), (10, Condition.FAILED), (20, Condition.UP)]
    ]
    await store.write(HistoryBatch(points=tuple((RID, p) for p in points)))
    assert await store.points(RID, MIDNIGHT + 15) == points[1:]
    assert await store.points(RID, MIDNIGHT - 5) == points
    assert await store.points(OTHER, 0) == []


async def test_open_intervals_survive_and_close(store: HistoryStore) -> None:
    """Open intervals are read back; a closed deployment is no longer open."""
    opened = OpenInterval(RID, Condition.UP, since=MIDNIGHT, accounted=MIDNIGHT + 30)
    other = OpenInterval(OTHER, Condition.FAILED, since=MIDNIGHT, accounted=MIDNIGHT + 30)
    await store.write(HistoryBatch(open=(opened, other)))
    assert await store.load_open() == {RID: opened, OTHER: other}
    await store.write(HistoryBatch(closed=(OTHER,)))
    assert await store.load_open() == {RID: opened}


async def test_transitions_are_bounded_per_deployment_and_newest_first(store: HistoryStore) -> None:
    """Only the last TRANSITIONS_KEPT transitions of a deployment stay; the fleet read mixes deployments."""
    many = tuple(transition(RID, MIDNIGHT + i, i) for i in range(TRANSITIONS_KEPT + 10))
    await store.write(HistoryBatch(transitions=(*many, transition(OTHER, MIDNIGHT + 5.5))))
    kept = await store.transitions(RID, 1000)
    assert len(kept) == TRANSITIONS_KEPT
    assert kept[0] == many[-1]
    fleet = await store.transitions(None, 3)
    assert [t.time for t in fleet] == [MIDNIGHT + TRANSITIONS_KEPT + 9 - i for i in range(3)]
    assert (await store.transitions(OTHER, 10))[0].rid == OTHER


async def test_prune_drops_old_days_and_points_but_keeps_the_point_in_force(store: HistoryStore) -> None:
    """Pruning removes days before the cut and points before it, except the one in force at the cut."""
    await store.write(
        HistoryBatch(
            days=tuple(DayIncrement(RID, d, {Condition.UP: 1}) for d in range(5)),
            points=tuple(
                (RID, ChangePoint(MIDNIGHT + s, Condition.UP if s % 2 else Condition.FAILED))
                for s in range(4)
            ),
        )
    )
    await store.prune(before_day=3, points_before=MIDNIGHT + 2.5)
    assert [d.day for d in await store.days(RID, 0, 10)] == [3, 4]
    assert [p.time for p in await store.points(RID, 0)] == [MIDNIGHT + 2, MIDNIGHT + 3]
