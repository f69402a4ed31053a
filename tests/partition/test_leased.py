"""The lease partition on a real PostgreSQL: replicas converging on fair shares as they join and leave,
takeover continuing from the stored record, and a replica whose renewal hangs giving the round up after a
lease while it keeps watching what it holds (ownership changes only with what the database answers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from monitor.metrics import ProcessMetrics
from monitor.partition.leased import LeasedPartition
from monitor.state import DatabaseHealth, LeaseLost
from monitor.state.postgres import PostgresState
from tests.pg import PgDatabase

FLEET = {f"ri.deployment.{i:02d}" for i in range(12)}


class Replica:
    """A partition on its own store, offered the fleet, with what it was handed over at takeovers."""

    def __init__(self, store: PostgresState, name: str, lease: float, heartbeat: float | None = None) -> None:
        self.store = store
        self.handed: dict[str, dict[str, Any]] = {}
        self.metrics = ProcessMetrics()
        self.health = DatabaseHealth(self.metrics)
        self.partition = LeasedPartition(
            store.leases,
            read=store.records,
            hand_over=self.handed.update,
            replica=name,
            health=self.health,
            metrics=self.metrics,
            lease=lease,
            heartbeat=heartbeat,
        )
        self.partition.offer(FLEET, set())
        store.fence = self.partition

    @property
    def owned(self) -> set[str]:
        return {rid for rid in FLEET if self.partition.owns(rid)}

    def sample(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value(name)
        assert value is not None
        return value


@pytest.fixture
async def open_store(pg_database: PgDatabase) -> AsyncIterator[Callable[[], Awaitable[PostgresState]]]:
    stores: list[PostgresState] = []

    async def open_one() -> PostgresState:
        store = PostgresState(pg_database.dsn, password=pg_database.password)
        await store.open()
        stores.append(store)
        return store

    yield open_one
    for store in stores:
        await store.close()


def disjoint(replicas: list[Replica]) -> bool:
    owned = [r.owned for r in replicas]
    return sum(map(len, owned)) == len(set().union(*owned))


async def test_a_replica_alone_takes_the_fleet_and_a_joining_one_gets_half_within_two_leases(
    open_store: Callable[[], Awaitable[PostgresState]],
) -> None:
    """The first replica's first round claims the whole fleet; a second one joining has its half after at
    most six rounds (two leases at three rounds a lease), the first having released only its excess; at no
    round does a deployment belong to both, and the metrics show replicas and unowned ones."""
    a = Replica(await open_store(), "a", lease=30)
    await a.partition.round()
    assert a.owned == FLEET
    assert a.sample("foundry_monitor_leases_taken_total") == len(FLEET)
    b = Replica(await open_store(), "b", lease=30)
    for _ in range(6):
        await b.partition.round()
        await a.partition.round()
        assert disjoint([a, b])
        if len(a.owned) == len(b.owned) == len(FLEET) // 2:
            break
    assert len(b.owned) == len(FLEET) // 2
    assert a.owned | b.owned == FLEET
    assert a.sample("foundry_monitor_leases_lost_total") == 0  # given up, not lost
    assert b.sample("foundry_monitor_replicas") == 2
    await a.partition.round()
    assert a.sample("foundry_monitor_unowned_deployments") == 0


async def test_a_leaving_replica_releases_at_once_and_the_other_takes_over_from_the_stored_records(
    open_store: Callable[[], Awaitable[PostgresState]],
) -> None:
    """A replica that leaves releases every lease and its heartbeat: the other's next round (not a lease
    later) claims the whole fleet, reading the records the leaver wrote under its leases before it is told
    of the change, so it continues from them."""
    a = Replica(await open_store(), "a", lease=30)
    b = Replica(await open_store(), "b", lease=30)
    for _ in range(4):
        await a.partition.round()
        await b.partition.round()
    mine = sorted(a.owned)
    await a.store.append([], records=[(rid, {"by": "a"}) for rid in mine])
    await a.partition.leave()
    assert not a.owned
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.partition.changed)  # the watch set's wait for a change
            await b.partition.round()
    assert b.owned == FLEET
    assert b.handed == {rid: {"by": "a"} for rid in mine}
    assert b.sample("foundry_monitor_replicas") == 1


async def test_a_replica_cut_off_from_the_database_keeps_watching_and_learns_what_it_lost_on_return(
    open_store: Callable[[], Awaitable[PostgresState]], pg_database: PgDatabase
) -> None:
    """a owns the fleet and loses its database (its pool closed): its rounds fail, counted as database
    errors, but it keeps watching (polling and metrics go on through an outage). Meanwhile b takes the fleet
    over once a's leases expire. When a reaches the database again, its first round renews nothing and a
    stops watching: every lease counted lost, and a write of its under the old tokens is refused."""
    lease = 1.0
    a = Replica(await open_store(), "a", lease=lease)
    b = Replica(await open_store(), "b", lease=lease)
    await a.partition.round()
    await a.store.close()
    await a.partition.round()
    assert a.owned == FLEET
    assert a.metrics.registry.get_sample_value(
        "foundry_monitor_database_errors_total", {"operation": "heartbeat"}
    )
    with anyio.fail_after(10):
        while b.owned != FLEET:
            await b.partition.round()
            await anyio.sleep(0.05)
    assert a.owned == FLEET  # two watch now, for as long as a cannot reach the database
    await a.store.open()
    await a.partition.round()
    assert not a.owned
    assert a.sample("foundry_monitor_leases_lost_total") == len(FLEET)
    assert disjoint([a, b])


async def test_a_hanging_round_is_given_up_after_a_lease_and_the_leases_kept_when_nobody_took_them(
    open_store: Callable[[], Awaitable[PostgresState]],
) -> None:
    """With a's lease rows locked by another session, a's renewal hangs: the round is given up after a
    lease (a database error), a keeps watching, and once the rows are free its next round renews every
    lease (expired, but nobody claimed them) with nothing lost."""
    lease = 1.5
    a = Replica(await open_store(), "a", lease=lease)
    await a.partition.round()
    locker = await open_store()
    async with locker._connection() as db, db.transaction():
        await db.execute("SELECT * FROM leases FOR UPDATE")
        with anyio.fail_after(lease * 3):
            await a.partition.round()
        assert a.owned == FLEET
        assert a.metrics.registry.get_sample_value(
            "foundry_monitor_database_errors_total", {"operation": "lease"}
        )
    await a.partition.round()
    assert a.owned == FLEET
    assert a.sample("foundry_monitor_leases_lost_total") == 0


async def test_a_dead_replicas_leases_are_claimed_as_they_expire_not_a_heartbeat_later(
    open_store: Callable[[], Awaitable[PostgresState]],
) -> None:
    """a takes the fleet and dies (no more rounds). b, running with a heartbeat nearly as long as the lease,
    sees a's leases expire before its next heartbeat and comes round as they do: it owns the fleet within
    the lease and a little, where waiting for heartbeats could take up to a lease and a heartbeat."""
    lease, heartbeat = 1.5, 1.2
    a = Replica(await open_store(), "a", lease=lease)
    await a.partition.round()
    died = anyio.current_time()
    b = Replica(await open_store(), "b", lease=lease, heartbeat=heartbeat)
    async with anyio.create_task_group() as tg:
        await tg.start(b.partition.run)
        with anyio.fail_after(lease + heartbeat + 2):
            while b.owned != FLEET:
                await anyio.sleep(0.02)
        took = anyio.current_time() - died
        tg.cancel_scope.cancel()
    assert took <= lease + 0.4


async def test_a_paused_replicas_write_is_refused_and_counts_its_leases_lost(
    open_store: Callable[[], Awaitable[PostgresState]],
) -> None:
    """a owns the fleet, then pauses (no rounds); b takes the fleet over once a's leases expire. a wakes and
    writes a record and an event for one of them: LeaseLost, nothing written, and a's partition no longer
    owns any it was refused, counting them in foundry_monitor_leases_lost_total."""
    lease = 1.0
    a = Replica(await open_store(), "a", lease=lease)
    b = Replica(await open_store(), "b", lease=lease)
    await a.partition.round()
    rid = sorted(FLEET)[0]
    await a.store.append([{"event_id": "e1", "rid": rid}], records=[(rid, {"by": "a"})])
    with anyio.fail_after(10):
        while b.owned != FLEET:
            await b.partition.round()
            await anyio.sleep(0.05)
    assert a.owned == FLEET  # paused: it has not noticed
    with pytest.raises(LeaseLost) as lost:
        await a.store.append([{"event_id": "e2", "rid": rid}], records=[(rid, {"by": "a", "n": 2})])
    assert lost.value.rids == {rid}
    assert not a.partition.owns(rid)
    assert a.sample("foundry_monitor_leases_lost_total") == 1
    assert await b.store.records([rid]) == {rid: {"by": "a"}}
    assert [e.event_id for e in await b.store.pending("file")] == ["e1"]
    assert b.handed[rid] == {"by": "a"}  # b continues from a's last write


async def test_deployments_given_up_are_released_only_once_the_journal_holds_no_events_back(
    open_store: Callable[[], Awaitable[PostgresState]],
) -> None:
    """a gives half the fleet up to a joining b, but while its journal holds events back (after an outage,
    not yet written) their leases stay a's, so that those events are written under them; once the journal
    holds none, a's next round releases them and b's takes them."""
    a = Replica(await open_store(), "a", lease=30)
    await a.partition.round()
    b = Replica(await open_store(), "b", lease=30)
    await b.partition.round()
    await a.partition.round()
    given_up = FLEET - a.owned
    assert len(given_up) == len(FLEET) // 2
    a.health.holding(5)
    await a.partition.round()
    await b.partition.round()
    assert not b.owned
    assert {rid for rid in given_up if a.partition.token(rid) is not None} == given_up  # still writable
    a.health.holding(0)
    await a.partition.round()
    await b.partition.round()
    assert b.owned == given_up
