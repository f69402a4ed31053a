"""Leases in the PostgreSQL state database, on a real server: heartbeats, claims that one replica wins,
batch renewal, expiry by the database's clock with a higher fencing token for the next owner, release, and
the fence on writes (a replica that lost a lease, like a paused process waking late, cannot write again)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field

import anyio
import pytest

from monitor.state import LeaseLost
from monitor.state.postgres import PostgresState
from tests.pg import PgDatabase

RIDS = [f"ri.deployment.{i}" for i in range(6)]
SHORT = 0.5


@dataclass
class Held:
    """A fence as a replica's partition keeps it: its id, the tokens it was granted, the fleet."""

    replica: str
    tokens: dict[str, int] = field(default_factory=dict)
    fleet: set[str] = field(default_factory=lambda: set(RIDS))

    def token(self, rid: str) -> int | None:
        return self.tokens.get(rid)

    def retired(self, rid: str) -> bool:
        return rid not in self.fleet

    def refused(self, rids: Collection[str]) -> None:
        for rid in rids:
            self.tokens.pop(rid, None)


@pytest.fixture
async def stores(pg_database: PgDatabase) -> AsyncIterator[tuple[PostgresState, PostgresState]]:
    one = PostgresState(pg_database.dsn, password=pg_database.password)
    two = PostgresState(pg_database.dsn, password=pg_database.password)
    await one.open()
    await two.open()
    yield one, two
    await one.close()
    await two.close()


async def eventually(attempt: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Retry ``attempt`` until it succeeds, for at most ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not await attempt():
            await anyio.sleep(0.05)


def event(rid: str, n: int) -> dict[str, object]:
    return {"event_id": f"{rid}/{n}", "rid": rid, "n": n}


async def test_replicas_claiming_at_once_each_win_distinct_leases_and_renew_them_in_one_batch(
    stores: tuple[PostgresState, PostgresState],
) -> None:
    """Two replicas claiming the same deployments concurrently: every deployment goes to exactly one, with
    distinct tokens; a batch renewal returns all of a replica's leases, and none of the other's."""
    one, two = stores
    won: dict[str, dict[str, int]] = {}

    async def claim(store: PostgresState, replica: str) -> None:
        won[replica] = await store.leases.claim(replica, RIDS, lease=30)

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim, one, "a")
        tg.start_soon(claim, two, "b")
    assert not won["a"].keys() & won["b"].keys()
    assert won["a"].keys() | won["b"].keys() == set(RIDS)
    tokens = [*won["a"].values(), *won["b"].values()]
    assert len(set(tokens)) == len(tokens)
    assert await one.leases.renew("a", won["a"], lease=30) == won["a"]
    assert await one.leases.renew("a", won["b"], lease=30) == {}
    live = await two.leases.live()
    assert {rid: h.owner for rid, h in live.items()} == {
        **dict.fromkeys(won["a"], "a"),
        **dict.fromkeys(won["b"], "b"),
    }


async def test_an_expired_lease_goes_to_the_next_claimant_with_a_higher_token_and_is_lost_to_its_owner(
    stores: tuple[PostgresState, PostgresState],
) -> None:
    """A lease not renewed expires by the database's clock: another replica can then claim it, with a token
    above the last one, and the old owner's renewal no longer returns it. Before expiry the claim fails."""
    one, two = stores
    first = await one.leases.claim("a", RIDS[:1], lease=SHORT)
    assert await two.leases.claim("b", RIDS[:1], lease=30) == {}
    taken: dict[str, int] = {}

    async def take() -> bool:
        taken.update(await two.leases.claim("b", RIDS[:1], lease=30))
        return bool(taken)

    await eventually(take)
    assert taken[RIDS[0]] > first[RIDS[0]]
    assert await one.leases.renew("a", first, lease=30) == {}
    assert (await one.leases.live())[RIDS[0]].owner == "b"


async def test_released_leases_are_claimable_at_once_and_leaving_releases_all_and_the_heartbeat(
    stores: tuple[PostgresState, PostgresState],
) -> None:
    """A released lease is claimable immediately (no wait for its expiry); ``leave`` releases every lease
    of the replica and removes its heartbeat, so the others stop counting it at once."""
    one, two = stores
    assert await one.leases.heartbeat("a", within=30) == ["a"]
    assert await two.leases.heartbeat("b", within=30) == ["a", "b"]
    held = await one.leases.claim("a", RIDS, lease=30)
    await one.leases.release("a", {rid: held[rid] for rid in RIDS[:2]})
    assert (await two.leases.claim("b", RIDS, lease=30)).keys() == set(RIDS[:2])
    await one.leases.leave("a")
    assert (await two.leases.claim("b", RIDS, lease=30)).keys() == set(RIDS[2:])
    assert await two.leases.heartbeat("b", within=30) == ["b"]


async def test_a_heartbeat_older_than_the_lease_no_longer_counts_as_live(
    stores: tuple[PostgresState, PostgresState],
) -> None:
    """A replica that stopped sending heartbeats drops out of the live set once its last one is older than
    the window, as the database's clock measures it."""
    one, two = stores
    await one.leases.heartbeat("a", within=SHORT)

    async def alone() -> bool:
        return await two.leases.heartbeat("b", within=SHORT) == ["b"]

    assert await two.leases.heartbeat("b", within=SHORT) == ["a", "b"]
    await eventually(alone)


async def test_a_paused_replica_waking_after_its_lease_expired_cannot_write_for_that_deployment_again(
    stores: tuple[PostgresState, PostgresState], pg_database: PgDatabase
) -> None:
    """Replica a writes under its lease; its renewal stops (a pause), the lease expires and b takes it over.
    a's next write of that deployment's record and event raises LeaseLost naming it and writes nothing:
    not its record, not its event, not even the part of the other deployment (expired, not taken) in the
    same transaction."""
    one, two = stores
    a, b = Held("a"), Held("b")
    one.fence, two.fence = a, b
    a.tokens.update(await one.leases.claim("a", RIDS[:2], lease=SHORT))
    await one.append([event(RIDS[0], 1)], records=[(RIDS[0], {"n": 1}), (RIDS[1], {"n": 1})])

    async def take() -> bool:
        b.tokens.update(await two.leases.claim("b", RIDS[:1], lease=30))
        return bool(b.tokens)

    await eventually(take)
    # a still believes it holds both: only the database knows otherwise.
    with pytest.raises(LeaseLost) as lost:
        await one.append([event(RIDS[0], 2)], records=[(RIDS[0], {"n": 2}), (RIDS[1], {"n": 2})])
    # RIDS[1] expired too, but nobody took it: still a's (its token unchanged), yet nothing was written.
    assert lost.value.rids == {RIDS[0]}
    assert a.tokens.keys() == {RIDS[1]}  # the fence told a's partition which it lost
    assert (await two.records(RIDS[:2])) == {RIDS[0]: {"n": 1}, RIDS[1]: {"n": 1}}
    assert [p.event_id for p in await two.pending("file")] == [f"{RIDS[0]}/1"]
    await two.append([event(RIDS[0], 2)], records=[(RIDS[0], {"n": 2})])
    assert (await one.records(RIDS[:1])) == {RIDS[0]: {"n": 2}}


async def test_a_write_presenting_an_old_token_is_refused_even_by_the_same_replica(
    stores: tuple[PostgresState, PostgresState],
) -> None:
    """The fence compares tokens, not only owners: a replica that lost a lease and claimed it again holds a
    new token; a write still carrying the old one (from before the loss) is refused."""
    one, _ = stores
    a = Held("a")
    one.fence = a
    old = await one.leases.claim("a", RIDS[:1], lease=30)
    await one.leases.release("a", old)
    new = await one.leases.claim("a", RIDS[:1], lease=30)
    assert new[RIDS[0]] > old[RIDS[0]]
    a.tokens.update(old)
    with pytest.raises(LeaseLost):
        await one.append([event(RIDS[0], 1)], records=[(RIDS[0], {"n": 1})])
    a.tokens.update(new)
    await one.append([event(RIDS[0], 1)], records=[(RIDS[0], {"n": 1})])


async def test_a_deployment_that_moves_keeps_its_record_and_one_that_left_the_fleet_is_deleted(
    stores: tuple[PostgresState, PostgresState],
) -> None:
    """Deleting a record (the journal does when a deployment stops being watched) is skipped for a
    deployment still in the fleet, whose next owner reads it, also while the lease is still held; it is
    done for one that left the fleet, by its owner or, once no lease holds it, by anyone."""
    one, two = stores
    a, b = Held("a"), Held("b")
    one.fence, two.fence = a, b
    a.tokens.update(await one.leases.claim("a", RIDS[:3], lease=30))
    await one.append([], records=[(rid, {"n": 1}) for rid in RIDS[:3]])
    await one.append([], records=[(RIDS[0], None)])
    assert (await one.records(RIDS[:1])) == {RIDS[0]: {"n": 1}}
    a.fleet.discard(RIDS[1])
    await one.append([{"event_id": "gone", "rid": RIDS[1]}], records=[(RIDS[1], None)])
    assert (await one.records(RIDS[:2])).keys() == {RIDS[0]}
    await one.leases.release("a", {RIDS[2]: a.tokens.pop(RIDS[2])})
    b.fleet.discard(RIDS[2])
    await two.append([], records=[(RIDS[2], None)])
    assert (await two.records(RIDS)).keys() == {RIDS[0]}


async def test_a_lease_that_expired_while_nobody_claimed_it_is_renewed_with_its_token(
    stores: tuple[PostgresState, PostgresState],
) -> None:
    """When the database was out of reach for everyone, a replica's leases expire with nobody taking them
    over: its first renewal afterwards keeps them, with the same tokens, and its writes under them pass the
    fence, so that what it held in memory meanwhile is written."""
    one, two = stores
    a = Held("a")
    one.fence = a
    a.tokens.update(await one.leases.claim("a", RIDS[:2], lease=SHORT))

    async def expired() -> bool:
        return not (await two.leases.live()).keys() & set(RIDS[:2])

    await eventually(expired)
    assert await one.leases.renew("a", a.tokens, lease=30) == a.tokens
    await one.append([event(RIDS[0], 1)], records=[(RIDS[0], {"n": 1})])
    assert await two.leases.claim("b", RIDS[:2], lease=30) == {}
