"""Model discovery: follows the deployments of configured models through the list endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio
import structlog

from monitor.errors import FoundryError
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment
from monitor.tracker import Target

log = structlog.get_logger(__name__)


class DeploymentLister(Protocol):
    async def list_live_deployments(
        self, model_rid: str, branch: str | None = None
    ) -> tuple[LiveDeployment, ...]: ...


class Follower(Protocol):
    """What discovery changes: the scheduler's set of watched deployments."""

    def add(self, target: Target) -> None: ...

    def remove(self, rid: str) -> None: ...


class Discovery:
    """One model (and optional branch): lists it every ``interval`` and adds and removes deployments.

    A failed list changes nothing: deployments are removed only when a successful list no longer names
    them, and never when the static configuration also names them.
    """

    def __init__(
        self,
        *,
        lister: DeploymentLister,
        follower: Follower,
        metrics: ProcessMetrics,
        model_rid: str,
        branch: str | None,
        labels: tuple[tuple[str, str], ...],
        interval: float,
        pinned: Callable[[str], bool] = lambda rid: False,
    ) -> None:
        self._lister = lister
        self._follower = follower
        self._metrics = metrics
        self._model_rid = model_rid
        self._branch = branch
        self._labels = labels
        self._interval = interval
        self._pinned = pinned
        self.origin = f"discover:{model_rid}" + (f"@{branch}" if branch else "")
        self.followed: set[str] = set()

    async def refresh(self) -> bool:
        """List once and reconcile; False when the list call failed."""
        try:
            found = await self._lister.list_live_deployments(self._model_rid, self._branch)
        except FoundryError as exc:
            self._metrics.discovery_errors.labels(exc.kind).inc()
            log.warning("discovery_failed", model_rid=self._model_rid, error=exc.kind)
            return False
        current = {snapshot.rid for snapshot in found}
        for rid in sorted(current - self.followed):
            if not self._pinned(rid):
                self._follower.add(Target(rid=rid, name=rid, labels=self._labels, origin=self.origin))
        for rid in sorted(self.followed - current):
            if not self._pinned(rid):
                self._follower.remove(rid)
        self.followed = current
        return True

    async def run(self) -> None:
        """Re-list every ``interval`` until cancelled (the first listing is the caller's ``refresh``)."""
        while True:
            await anyio.sleep(self._interval)
            await self.refresh()
