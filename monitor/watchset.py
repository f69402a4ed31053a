"""The watch set: which deployments are watched and why, each held by the origins that ask for it.

An origin is the configuration (``config``) or one ``discover`` entry (``discover:<model>[@<branch>]``). A
deployment held by at least one origin is a *candidate*; the configuration's name and labels win over a
discovered deployment's. A candidate is watched while the partition (``monitor.partition``) says this process
owns it: all of them without one, a shard's share with ``--shard``. Discovery lists every model whatever the
partition, since a model's deployments spread over every shard. Every change of the configuration goes
through one lock, so two reloads arriving together (a SIGHUP and a file change) cannot start two discoveries
of one model or leave one orphaned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from monitor.config import Config, DiscoverConfig
from monitor.discovery import DeploymentLister, Discovery, discover_origin
from monitor.metrics import ProcessMetrics
from monitor.partition import EVERYTHING, Partition
from monitor.tracker import Target

CONFIG_ORIGIN = "config"


class Watcher(Protocol):
    """What the watch set drives: the scheduler, which polls what it is given."""

    def add(self, target: Target) -> None:
        """Watch ``target``, or update the name and labels of one already watched."""
        ...

    def remove(self, rid: str) -> None:
        """Stop watching ``rid``."""
        ...

    def release(self, rid: str) -> None:
        """Stop watching ``rid``, which another process watches now (no event)."""
        ...


class WatchSet:
    """The origins holding each candidate, the running discovery of each ``discover`` entry, and which
    candidates the partition gives this process."""

    def __init__(
        self,
        *,
        lister: DeploymentLister,
        watcher: Watcher,
        metrics: ProcessMetrics,
        partition: Partition = EVERYTHING,
    ) -> None:
        self._lister = lister
        self._watcher = watcher
        self._metrics = metrics
        self._partition = partition
        #: origin -> rid -> the target that origin asks for. One entry per claim: the targets themselves are
        #: the objects the tracker keeps, so a large configuration costs a dict entry per deployment.
        self._claims: dict[str, dict[str, Target]] = {CONFIG_ORIGIN: {}}
        #: How many origins hold each candidate.
        self._holders: Counter[str] = Counter()
        #: The candidates handed to the watcher: those the partition owns.
        self._watched: set[str] = set()
        self._discoveries: dict[str, tuple[DiscoverConfig, anyio.CancelScope]] = {}
        self._lock = anyio.Lock()
        self._following = False

    def origins(self, rid: str) -> tuple[str, ...]:
        """Who asks for ``rid`` (empty when it is not watched)."""
        return tuple(sorted(origin for origin, claimed in self._claims.items() if rid in claimed))

    @property
    def discovering(self) -> Mapping[str, DiscoverConfig]:
        """The ``discover`` entries being followed, by origin."""
        return {origin: entry for origin, (entry, _) in self._discoveries.items()}

    def candidate(self, rid: str) -> bool:
        """Whether some origin asks for ``rid``, whether this process owns it or not."""
        return rid in self._holders

    def claim(self, origin: str, targets: Sequence[Target]) -> None:
        """``origin`` now asks for exactly ``targets``; what it no longer asks for is released."""
        before = self._claims.get(origin)
        if before is None:
            # A discovery stopped by a reload whose listing was already on its way: its answer counts no more.
            return
        wanted = self._claims[origin] = {target.rid: target for target in targets}
        released = sorted(before.keys() - wanted.keys())
        added = {rid for rid in wanted.keys() - before.keys() if self._hold(rid)}
        withdrawn = {rid for rid in released if self._release(rid)}
        self._partition.offer(added, withdrawn)
        for rid in released:
            self._show(rid)
        for rid, target in wanted.items():
            if before.get(rid) != target:
                self._show(rid)
        self._metrics.owned_deployments.set(len(self._watched))

    def _hold(self, rid: str) -> bool:
        """One more origin holds ``rid``; True when it has just become a candidate."""
        self._holders[rid] += 1
        return self._holders[rid] == 1

    def _release(self, rid: str) -> bool:
        """One origin fewer holds ``rid``; True when it is no candidate any more."""
        self._holders[rid] -= 1
        if self._holders[rid]:
            return False
        del self._holders[rid]
        return True

    def _show(self, rid: str) -> None:
        """Hand the watcher ``rid``'s chosen target while this process owns it; take it back otherwise."""
        chosen = self._chosen(rid) if rid in self._holders else None
        if chosen is not None and self._partition.owns(rid):
            self._watcher.add(chosen)
            self._watched.add(rid)
        elif rid in self._watched:
            self._watched.discard(rid)
            if chosen is None:
                self._watcher.remove(rid)
            else:
                self._watcher.release(rid)  # still a candidate: another process owns it now

    async def _follow_partition(self) -> None:
        """Re-ask the partition about every candidate each time it says ownership changed.

        Each pass re-asks first and only then waits, with no checkpoint between: a change made before this
        task first ran, or while it re-asked, is seen all the same.
        """
        while True:
            for rid in list(self._holders):
                if self._partition.owns(rid) != (rid in self._watched):
                    self._show(rid)
            self._metrics.owned_deployments.set(len(self._watched))
            await self._partition.changed()

    def _chosen(self, rid: str) -> Target | None:
        """The configuration's target when it holds ``rid``, else the first discovery's (by origin)."""
        configured = self._claims[CONFIG_ORIGIN].get(rid)
        if configured is not None:
            return configured
        holding = [origin for origin, claimed in self._claims.items() if rid in claimed]
        return self._claims[min(holding)][rid] if holding else None

    async def apply(self, config: Config, tg: TaskGroup) -> bool:
        """Make the watch set match ``config``; returns whether every newly followed model could be listed.

        A new or changed ``discover`` entry is listed once before this returns, then re-listed in ``tg``.
        """
        async with self._lock:
            if not self._following:
                self._following = True
                tg.start_soon(self._follow_partition)
            self.claim(CONFIG_ORIGIN, [Target(d.rid, d.name, d.labels) for d in config.deployments])
            wanted = {discover_origin(entry.model_rid, entry.branch): entry for entry in config.discover}
            for origin, (entry, scope) in list(self._discoveries.items()):
                if wanted.get(origin) != entry:
                    scope.cancel()
                    del self._discoveries[origin]
                    if origin not in wanted:
                        self.claim(origin, [])
                        del self._claims[origin]
            all_listed = True
            for origin, entry in wanted.items():
                if origin in self._discoveries:
                    continue
                discovery = Discovery(lister=self._lister, claims=self, metrics=self._metrics, entry=entry)
                scope = anyio.CancelScope()
                self._discoveries[origin] = (entry, scope)
                self._claims.setdefault(origin, {})
                all_listed = await discovery.refresh() and all_listed
                tg.start_soon(_follow, discovery, scope)
            return all_listed


async def _follow(discovery: Discovery, scope: anyio.CancelScope) -> None:
    with scope:
        await discovery.run()
