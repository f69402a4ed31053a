"""Static partitions, fixed for the life of the process: everything, or one jump-hash shard of the fleet.

A shard owns a deployment when Lamping and Veach's jump consistent hash of the RID's 64-bit digest lands on
its number. Going from M to M + 1 shards moves each deployment either nowhere or to the new shard M, about
1/(M + 1) of the fleet; going back moves only the last shard's. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Set
from dataclasses import dataclass
from pathlib import PurePath

import anyio

from monitor.config.model import StateConfig

_MASK64 = (1 << 64) - 1
#: The paper's linear congruential step.
_LCG = 2862933555777941757
#: A StatefulSet names its pods ``<set name>-<ordinal>``.
_ORDINAL = re.compile(r"-(\d+)$")


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``range(buckets)`` of the 64-bit ``key`` (Lamping & Veach, arXiv:1406.2294)."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    key &= _MASK64
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * _LCG + 1) & _MASK64
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def rid_key(rid: str) -> int:
    """A stable 64-bit digest of ``rid`` (BLAKE2b): the same in every process, release and platform."""
    return int.from_bytes(hashlib.blake2b(rid.encode(), digest_size=8).digest(), "big")


class ShardError(ValueError):
    """A shard number, shard count or pod name that cannot make a shard; the message says why."""


class _Fixed:
    """A partition whose ownership never changes: offers change nothing, ``changed`` never returns."""

    __slots__ = ()

    def offer(self, added: Set[str], withdrawn: Set[str]) -> None:
        del added, withdrawn

    async def changed(self) -> None:
        await anyio.sleep_forever()


class Everything(_Fixed):
    """No partition: this process owns every candidate."""

    __slots__ = ()

    def owns(self, rid: str) -> bool:
        del rid
        return True


EVERYTHING = Everything()


@dataclass(frozen=True, slots=True)
class Shard(_Fixed):
    """Shard ``index`` of ``total``: the candidates whose RID jump-hashes to ``index``."""

    index: int
    total: int

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ShardError(f"the shard count must be at least 1, not {self.total}")
        if not 0 <= self.index < self.total:
            raise ShardError(
                f"shard {self.index} is not one of the {self.total} shards (0 to {self.total - 1})"
            )

    @classmethod
    def of_pod(cls, name: str, total: int) -> Shard:
        """The shard of a StatefulSet pod named ``<set>-<ordinal>``: shard ``ordinal``."""
        found = _ORDINAL.search(name)
        if found is None:
            raise ShardError(f"cannot take a shard number from {name!r}: expected <name>-<ordinal>")
        return cls(int(found.group(1)), total)

    def owns(self, rid: str) -> bool:
        return jump_hash(rid_key(rid), self.total) == self.index

    def state(self, config: StateConfig) -> StateConfig:
        """This shard's state: ``state.path`` with ``.shard-<index>`` before its suffix.

        The name leaves out the shard count, so a shard keeps its file when shards are added or removed.
        PostgreSQL is refused: one database shared by shards would hold every shard's records and outbox,
        so each would report the others' deployments removed and deliver the others' events.
        """
        if config.backend != "sqlite":
            raise ShardError(
                "static sharding needs state.backend sqlite (a state file per shard); "
                f"state.backend is {config.backend}"
            )
        path = PurePath(config.path)
        return config.model_copy(
            update={"path": str(path.with_name(f"{path.stem}.shard-{self.index}{path.suffix}"))}
        )
