"""The watch set of a replica: it hands the watcher only the deployments the partition says are this
process's, and when ownership moves it releases them quietly (no deployment.removed), while a deployment
dropped from the configuration is removed by its owner only."""

from __future__ import annotations

from collections.abc import Set

import anyio

from monitor.metrics import ProcessMetrics
from monitor.watchset import WatchSet
from tests.test_discovery import rid
from tests.test_sinks import until
from tests.test_watchset import Lister, Watcher, config


class Quiet(Watcher):
    """The scheduler's side, telling releases (moved to another replica) from removals."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[str] = []

    def release(self, rid: str) -> None:
        del self.watched[rid]
        self.released.append(rid)


class Owned:
    """A partition whose ownership the test sets; ``changed`` returns at each move."""

    def __init__(self, *rids: str) -> None:
        self.rids = set(rids)
        self.offered: set[str] = set()
        self._moved = anyio.Event()

    def offer(self, added: Set[str], withdrawn: Set[str]) -> None:
        self.offered = (self.offered | added) - withdrawn

    def owns(self, rid: str) -> bool:
        return rid in self.rids

    async def changed(self) -> None:
        await self._moved.wait()

    def move(self, *rids: str) -> None:
        self.rids = set(rids)
        moved, self._moved = self._moved, anyio.Event()
        moved.set()


async def test_only_owned_deployments_are_watched_and_a_move_releases_without_removing() -> None:
    """Of three configured deployments the replica owns one: only it is watched, but the fleet is all
    three. Ownership moves: the new one is watched, the old one released (not removed). A deployment
    dropped from the configuration is removed if owned here, and nothing happens for one owned elsewhere."""
    watcher, partition = Quiet(), Owned(rid(1))
    watch = WatchSet(lister=Lister(), watcher=watcher, metrics=ProcessMetrics(), partition=partition)
    async with anyio.create_task_group() as tg:
        await watch.apply(config([rid(1), rid(2), rid(3)]), tg)
        assert set(watcher.watched) == {rid(1)}
        assert partition.offered == {rid(1), rid(2), rid(3)}
        partition.move(rid(2), rid(3))
        await until(lambda: set(watcher.watched) == {rid(2), rid(3)})
        assert watcher.released == [rid(1)]
        assert watcher.removed == []
        await watch.apply(config([rid(1)]), tg)
        tg.cancel_scope.cancel()
    assert watcher.removed == [rid(2), rid(3)]
    assert watcher.watched == {}
    assert partition.offered == {rid(1)}
