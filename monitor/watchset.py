"""The watch set: which deployments are watched and why, each held by the origins that ask for it.

An origin is the configuration (``config``) or one ``discover`` entry (``discover:<model>[@<branch>]``). A
deployment is watched while at least one origin holds it; the configuration's name and labels win over a
discovered deployment's. Every change of the configuration goes through one lock, so two reloads arriving
together (a SIGHUP and a file change) cannot start two discoveries of one model or leave one orphaned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from monitor.config import Config, DiscoverConfig
from monitor.discovery import DeploymentLister, Discovery, discover_origin
from monitor.metrics import ProcessMetrics
from monitor.partition.ports import Partition
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
    """The origins holding each watched deployment, and the running discovery of each ``discover`` entry."""

    def __init__(
        self,
        *,
        lister: DeploymentLister,
        watcher: Watcher,
        metrics: ProcessMetrics,
        partition: Partition | None = None,
    ) -> None:
        self._lister = lister
        self._watcher = watcher
        self._metrics = metrics
        self._partition = partition
        #: What the watcher was given: the deployments wanted that the partition says are this process's.
        self._watching: set[str] = set()
        if partition is not None:
            partition.subscribe(self.repartition)
        #: origin -> rid -> the target that origin asks for. One entry per claim: the targets themselves are
        #: the objects the tracker keeps, so a large configuration costs a dict entry per deployment.
        self._claims: dict[str, dict[str, Target]] = {CONFIG_ORIGIN: {}}
        self._discoveries: dict[str, tuple[DiscoverConfig, anyio.CancelScope]] = {}
        self._lock = anyio.Lock()

    def origins(self, rid: str) -> tuple[str, ...]:
        """Who asks for ``rid`` (empty when it is not watched)."""
        return tuple(sorted(origin for origin, claimed in self._claims.items() if rid in claimed))

    @property
    def discovering(self) -> Mapping[str, DiscoverConfig]:
        """The ``discover`` entries being followed, by origin."""
        return {origin: entry for origin, (entry, _) in self._discoveries.items()}

    def claim(self, origin: str, targets: Sequence[Target]) -> None:
        """``origin`` now asks for exactly ``targets``; what it no longer asks for is released."""
        before = self._claims.get(origin)
        if before is None:
            # A discovery stopped by a reload whose listing was already on its way: its answer counts no more.
            return
        wanted = self._claims[origin] = {target.rid: target for target in targets}
        for rid in sorted(before.keys() - wanted.keys()):
            self._show(rid)
        for rid, target in wanted.items():
            if before.get(rid) != target:
                self._show(rid)

    @property
    def rids(self) -> set[str]:
        """Every deployment wanted, this process's or not: the fleet."""
        return {rid for claimed in self._claims.values() for rid in claimed}

    def repartition(self) -> None:
        """The partition changed: watch what is this process's now, and release what is no longer."""
        for rid in self.rids | self._watching:
            if self._owns(rid) != (rid in self._watching):
                self._show(rid)

    def _owns(self, rid: str) -> bool:
        return self._partition is None or self._partition.owns(rid)

    def _show(self, rid: str) -> None:
        """Hand the watcher ``rid``'s chosen target, or take it back (removed, or another process's)."""
        chosen = self._chosen(rid)
        if chosen is not None and self._owns(rid):
            self._watching.add(rid)
            self._watcher.add(chosen)
        elif rid in self._watching:
            self._watching.discard(rid)
            if chosen is None:
                self._watcher.remove(rid)
            else:
                self._watcher.release(rid)

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
