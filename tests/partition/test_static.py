"""Tests for monitor.partition.static: the jump hash, the RID digest, shards, their pods and state files."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from monitor.config.model import StateConfig
from monitor.partition import EVERYTHING, Partition, Shard, ShardError
from monitor.partition.static import jump_hash, rid_key

FLEET = 100_000


def fleet(size: int = FLEET) -> list[str]:
    return [
        f"ri.foundry-ml-live.main.live-deployment.{i:08x}-0000-4000-8000-000000000000" for i in range(size)
    ]


@pytest.mark.parametrize(
    ("key", "buckets", "expected"),
    [
        (1, 1, 0),
        (42, 57, 43),
        (0xDEAD10CC, 1, 0),
        (0xDEAD10CC, 666, 361),
        (256, 1024, 520),
        (1, 128, 55),
        (129, 128, 120),
        (128, 100_000_000, 38_172_097),
        (2**64 - 1, 128, 92),
    ],
)
def test_jump_hash_gives_the_reference_implementations_buckets(key: int, buckets: int, expected: int) -> None:
    """The known values every published implementation of Lamping & Veach's algorithm agrees on (the
    paper's C++, Go's dgryski/go-jump, Python's jump-consistent-hash), 64-bit wraparound included."""
    assert jump_hash(key, buckets) == expected


def test_jump_hash_refuses_no_buckets() -> None:
    """Zero or fewer buckets is an error, not bucket -1."""
    with pytest.raises(ValueError, match="at least 1"):
        jump_hash(1, 0)


def test_rid_key_is_a_fixed_64_bit_digest() -> None:
    """The RID's digest is BLAKE2b-64, the same in every process (unlike hash(), which is salted per
    process): a pinned value, and two RIDs that differ in one character digest apart."""
    rid = "ri.foundry-ml-live.main.live-deployment.1"
    assert rid_key(rid) == 0x020A9E5C16CB0177
    assert 0 <= rid_key(rid + "0") < 2**64
    assert rid_key(rid + "0") != rid_key(rid + "1")


@pytest.mark.parametrize("total", [2, 3, 7, 16])
def test_shards_split_100k_rids_evenly_and_disjointly(total: int) -> None:
    """Every RID of a 100,000-deployment fleet belongs to exactly one of the shards, and each shard holds
    its 1/M share within 5 % (four standard deviations of a fair split at 16 shards)."""
    rids = fleet()
    shards = [Shard(i, total) for i in range(total)]
    owners = Counter(sum(1 for shard in shards if shard.owns(rid)) for rid in rids)
    assert owners == {1: FLEET}
    sizes = Counter(jump_hash(rid_key(rid), total) for rid in rids)
    share = FLEET / total
    assert set(sizes) == set(range(total))
    assert all(abs(n - share) / share < 0.05 for n in sizes.values()), sizes


@pytest.mark.parametrize("total", [1, 2, 3, 8])
def test_one_shard_more_moves_one_in_m_plus_1_and_only_to_the_new_shard(total: int) -> None:
    """Going from M to M + 1 shards moves about 1/(M + 1) of the fleet (within 3 % of it), every moved RID
    to the new shard M; going back moves exactly those back."""
    rids = fleet()
    before = {rid: jump_hash(rid_key(rid), total) for rid in rids}
    after = {rid: jump_hash(rid_key(rid), total + 1) for rid in rids}
    moved = [rid for rid in rids if before[rid] != after[rid]]
    assert {after[rid] for rid in moved} == {total}
    expected = FLEET / (total + 1)
    assert abs(len(moved) - expected) / expected < 0.03, len(moved)
    assert [rid for rid in rids if after[rid] == total] == moved


def test_a_shard_is_validated_when_made() -> None:
    """A shard number must lie in 0..M-1 and M be at least 1; the message says which range was expected."""
    assert Shard(0, 1).owns("anything")
    for index, total, message in ((3, 3, r"0 to 2"), (-1, 3, r"0 to 2"), (0, 0, r"at least 1")):
        with pytest.raises(ShardError, match=message):
            Shard(index, total)


@pytest.mark.parametrize(
    ("pod", "index"), [("foundry-monitor-0", 0), ("foundry-monitor-2", 2), ("a-b-c-12", 12)]
)
def test_a_statefulset_pods_ordinal_is_its_shard(pod: str, index: int) -> None:
    """A StatefulSet pod ``<set>-<ordinal>`` is shard ``ordinal``."""
    assert Shard.of_pod(pod, 16) == Shard(index, 16)


@pytest.mark.parametrize("pod", ["foundry-monitor", "foundry-monitor-", "monitor-abc12", ""])
def test_a_name_without_an_ordinal_is_refused(pod: str) -> None:
    """A name that does not end in ``-<digits>`` names no shard, and the message quotes it."""
    with pytest.raises(ShardError, match="expected <name>-<ordinal>"):
        Shard.of_pod(pod, 3)


def test_an_ordinal_beyond_the_shard_count_is_refused() -> None:
    """Pod foundry-monitor-3 of a 3-shard fleet is no shard (the StatefulSet has more replicas than
    --total-shards says)."""
    with pytest.raises(ShardError, match="0 to 2"):
        Shard.of_pod("foundry-monitor-3", 3)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("./state/monitor.sqlite3", "state/monitor.shard-2.sqlite3"),
        ("/var/lib/foundry-monitor/monitor.sqlite3", "/var/lib/foundry-monitor/monitor.shard-2.sqlite3"),
        ("/data/state", "/data/state.shard-2"),
    ],
)
def test_each_shard_has_its_own_state_file_named_without_the_count(path: str, expected: str) -> None:
    """``.shard-<N>`` goes before the suffix; the shard count is not in the name, so shard 2 of 3 and
    shard 2 of 4 share a file (its deployments that stay are kept when a shard is added)."""
    state = StateConfig(path=path)
    assert Shard(2, 3).state(state).path == expected
    assert Shard(2, 4).state(state).path == expected
    assert Shard(1, 3).state(state).path != expected
    assert state.path == path


def test_postgres_state_cannot_be_sharded() -> None:
    """With state.backend postgres a shard refuses, naming the backend."""
    state = StateConfig(backend="postgres", dsn="postgresql://monitor@db:5432/monitor")
    with pytest.raises(ShardError, match=r"needs state\.backend sqlite.*postgres"):
        Shard(0, 2).state(state)


async def test_static_partitions_own_for_ever() -> None:
    """Everything owns every RID; neither it nor a shard ever reports a change of ownership (their
    ``changed`` does not return), and offers change nothing."""
    partitions: list[Partition] = [EVERYTHING, Shard(1, 2)]
    rids = fleet(200)
    before = [[p.owns(rid) for rid in rids] for p in partitions]
    assert all(before[0])
    for partition in partitions:
        partition.offer(set(rids), set())
        with anyio.move_on_after(0.05) as waited:
            await partition.changed()
        assert waited.cancelled_caught
    assert [[p.owns(rid) for rid in rids] for p in partitions] == before
