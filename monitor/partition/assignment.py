"""The arithmetic of lease-based work sharing: from the live replicas, the fleet and who holds what, which
deployments one replica should claim, keep and release. Pure and synchronous; the database is elsewhere.

Every replica computes the same quotas from the same view: the fleet divided by the live replicas, the
remainder (the ceil shares) going to those holding the most already, so that a change of membership moves
as few deployments as it can. A replica keeps what it holds up to its quota and releases the rest; it
claims unowned deployments up to its quota, preferring its own rendezvous order so that replicas claiming
at once rarely contend for the same ones. Whatever is unowned is below someone's quota (the quotas add up
to the fleet), so nothing starves.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    """What one replica does this round: claim unowned deployments, keep some it holds, release others."""

    claim: frozenset[str]
    keep: frozenset[str]
    release: frozenset[str]


def quotas(replicas: Collection[str], fleet: Collection[str], owners: Mapping[str, str]) -> dict[str, int]:
    """Each live replica's fair share of ``fleet``: floor or ceil of fleet / replicas, the ceil shares to
    those holding the most (ties by id), so that the shares add up to the fleet."""
    if not replicas:
        return {}
    members = sorted(set(replicas))
    base, extra = divmod(len(fleet), len(members))
    held = Counter(owner for rid, owner in owners.items() if rid in fleet)
    ranked = sorted(members, key=lambda replica: (-held[replica], replica))
    return {replica: base + (1 if rank < extra else 0) for rank, replica in enumerate(ranked)}


def _preference(replica: str, rid: str) -> bytes:
    """Rendezvous order: each replica ranks the deployments its own way, so that claims spread out."""
    return hashlib.blake2b(f"{replica}\0{rid}".encode(), digest_size=8).digest()


def plan(me: str, replicas: Collection[str], fleet: Collection[str], owners: Mapping[str, str]) -> Plan:
    """What ``me`` should do, given the live ``replicas`` (``me`` counts even if its heartbeat is not seen
    yet), the ``fleet``'s RIDs and the live leases' ``owners`` (rid -> replica; expired ones left out).

    Deployments held by a replica that is not live count as unowned: their leases are about to expire."""
    members = set(replicas) | {me}
    fleet_set = set(fleet)
    live = {rid: owner for rid, owner in owners.items() if owner in members and rid in fleet_set}
    quota = quotas(members, fleet_set, live)[me]
    mine = sorted((rid for rid, owner in live.items() if owner == me), key=lambda rid: _preference(me, rid))
    keep = frozenset(mine[:quota])
    release = frozenset(mine[quota:])
    room = quota - len(keep)
    unowned = sorted(fleet_set - live.keys(), key=lambda rid: _preference(me, rid))
    return Plan(claim=frozenset(unowned[: max(0, room)]), keep=keep, release=release)
