"""The arithmetic of lease-based work sharing: fair quotas, little movement, and convergence of a replica set
whose members join and leave, each acting on a view that may be a round old."""

from __future__ import annotations

import random

from monitor.partition.assignment import plan, quotas

FLEET = [f"ri.deployment.{i:03d}" for i in range(100)]


def test_quotas_are_the_floor_or_ceil_of_the_fleet_and_add_up_to_it() -> None:
    """Ten deployments over three replicas: 4, 3, 3, the ceil share to the one holding the most."""
    owners = {rid: "c" for rid in FLEET[:5]}
    shares = quotas(["a", "b", "c"], FLEET[:10], owners)
    assert shares == {"c": 4, "a": 3, "b": 3}
    assert sum(quotas(["a", "b", "c", "d", "e", "f", "g"], FLEET, {}).values()) == len(FLEET)


def test_a_replica_alone_claims_the_whole_fleet() -> None:
    """With no other replica and no leases, the first round claims everything and releases nothing."""
    step = plan("a", ["a"], FLEET, {})
    assert step.claim == set(FLEET)
    assert not step.keep
    assert not step.release


def test_a_joining_replica_makes_the_others_release_their_excess_only() -> None:
    """Three replicas holding 34/33/33 and a fourth joining: each releases what is over its new quota
    (25 or 26 between them adding up to the fleet), keeps the rest, and claims nothing while over it."""
    owners = {rid: "abc"[i % 3] for i, rid in enumerate(FLEET)}
    steps = {r: plan(r, ["a", "b", "c", "d"], FLEET, owners) for r in "abc"}
    assert sum(len(s.keep) for s in steps.values()) == 75
    for replica, step in steps.items():
        held = {rid for rid, owner in owners.items() if owner == replica}
        assert step.keep | step.release == held
        assert not step.keep & step.release
        assert len(step.keep) == 25
        assert not step.claim
    joiner = plan("d", ["a", "b", "c", "d"], FLEET, owners)
    assert not joiner.claim  # nothing is unowned until the others release


def test_leases_of_a_replica_not_live_count_as_unowned_and_are_shared_out() -> None:
    """When c's heartbeat is gone, a and b each claim about half of what c held, never what the other holds."""
    owners = {rid: "abc"[i % 3] for i, rid in enumerate(FLEET)}
    a, b = plan("a", ["a", "b"], FLEET, owners), plan("b", ["a", "b"], FLEET, owners)
    held_by_c = {rid for rid, owner in owners.items() if owner == "c"}
    assert a.claim <= held_by_c
    assert b.claim <= held_by_c
    assert len(a.keep | a.claim) == len(b.keep | b.claim) == 50


def _rounds(members: list[str], owners: dict[str, str], rng: random.Random, limit: int = 20) -> int:
    """Rounds until every deployment is owned by a live replica at its quota. Each replica plans from the
    view at the start of the round (stale for the others' moves in it) and acts in random order; a claim
    succeeds only if the deployment is unowned when it is made, as the database's conditional claim does."""
    for count in range(1, limit + 1):
        view = dict(owners)
        for replica in rng.sample(members, len(members)):
            step = plan(replica, members, FLEET, view)
            for rid in step.release:
                assert owners.get(rid) == replica
                del owners[rid]
            for rid in step.claim:
                assert view.get(rid) not in members  # never what a live replica holds
                if owners.get(rid) not in members:
                    owners[rid] = replica
        shares = quotas(members, FLEET, owners)
        held = {m: sum(1 for owner in owners.values() if owner == m) for m in members}
        if set(owners) == set(FLEET) and all(held[m] == shares[m] for m in members):
            return count
    raise AssertionError(f"no convergence in {limit} rounds: {held}")


def test_many_joins_and_leaves_converge_on_fair_shares_with_no_deployment_owned_twice() -> None:
    """Fifty random joins and leaves (1 to 6 replicas): after each, the set converges on floor/ceil shares
    covering the whole fleet (a join within two rounds, a leave within six), a deployment held by one live
    replica only, and a join moves no more than the joiner's share."""
    rng = random.Random(11)
    members = ["r0"]
    owners: dict[str, str] = {}
    _rounds(members, owners, rng)
    names = iter(f"r{i}" for i in range(1, 1000))
    for _ in range(50):
        if len(members) < 6 and (len(members) == 1 or rng.random() < 0.5):
            before = dict(owners)
            members.append(next(names))
            assert _rounds(members, owners, rng) <= 2
            moved = sum(1 for rid in FLEET if before.get(rid) != owners.get(rid))
            assert moved <= -(-len(FLEET) // len(members))
        else:
            gone = members.pop(rng.randrange(len(members)))
            for rid in [rid for rid, owner in owners.items() if owner == gone]:
                del owners[rid]  # its leases expire
            # Survivors claiming the leaver's deployments at once contend for some: a few rounds more.
            assert _rounds(members, owners, rng) <= 6
        assert all(owner in members for owner in owners.values())
