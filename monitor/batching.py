"""Batches: the watched deployments one list request per (model, branch) refreshes, and which poll alone.

A settled, found deployment whose last answer shows a ``branch`` is a member of its (model, branch) group;
one ``GET liveDeployments?modelRid=M&branch=B`` then refreshes every member at once. A pinned deployment (no
branch), one in transition, one not (yet) answered and one whose last poll failed poll with their own GET.
Pure bookkeeping: the scheduler decides when each poll unit is due.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from monitor.model import LiveDeployment
from monitor.tracker import Record

#: A list request: (model RID, branch).
GroupKey = tuple[str, str]


def group_key(record: Record) -> GroupKey | None:
    """The list that can refresh ``record``, or None when it needs its own GET."""
    snapshot = record.snapshot
    if snapshot is None or snapshot.branch is None or record.found is not True or not record.up:
        return None
    if record.wants_fast_poll:
        # A deployment in transition keeps its own GET on the fast interval.
        return None
    return (snapshot.model_rid, snapshot.branch)


class Batches:
    """Which group each batched deployment belongs to, and the members of each group."""

    def __init__(self) -> None:
        self._of: dict[str, GroupKey] = {}
        self._members: dict[GroupKey, set[str]] = {}
        #: Each group's key, one tuple shared by its members (``group_key`` makes a new one per call).
        self._keys: dict[GroupKey, GroupKey] = {}

    def __len__(self) -> int:
        """The number of groups (list requests per round)."""
        return len(self._members)

    @property
    def batched(self) -> int:
        """The number of deployments refreshed through a list."""
        return len(self._of)

    def group_of(self, rid: str) -> GroupKey | None:
        return self._of.get(rid)

    def members(self, key: GroupKey) -> tuple[str, ...]:
        return tuple(sorted(self._members.get(key, ())))

    def place(self, rid: str, key: GroupKey | None) -> None:
        """Make ``rid`` a member of ``key``'s group only (None: of no group); an emptied group is dropped."""
        previous = self._of.get(rid)
        if previous == key:
            return
        if previous is not None:
            members = self._members[previous]
            members.discard(rid)
            if not members:
                del self._members[previous]
                del self._keys[previous]
            del self._of[rid]
        if key is not None:
            key = self._keys.setdefault(key, key)
            self._of[rid] = key
            self._members.setdefault(key, set()).add(rid)


@dataclass(frozen=True, slots=True)
class ListAnswer:
    """A list answer matched against the group asked about."""

    #: Members the answer names, with their snapshot, in the members' order.
    present: tuple[tuple[str, LiveDeployment], ...]
    #: Members the answer does not name: each is confirmed with its own GET.
    missing: tuple[str, ...]


def match(members: Collection[str], answer: Iterable[LiveDeployment]) -> ListAnswer:
    """Which members ``answer`` names; deployments it names that are not members are not ours to report."""
    by_rid = {snapshot.rid: snapshot for snapshot in answer}
    present = tuple((rid, by_rid[rid]) for rid in members if rid in by_rid)
    missing = tuple(rid for rid in members if rid not in by_rid)
    return ListAnswer(present, missing)
