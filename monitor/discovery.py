"""Model discovery: lists the deployments of one configured model and tells the watch set what it found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import anyio
import structlog

from monitor.config import DiscoverConfig
from monitor.errors import FoundryError
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment
from monitor.tracker import Target

log = structlog.get_logger(__name__)


class DeploymentLister(Protocol):
    async def list_live_deployments(
        self, model_rid: str, branch: str | None = None
    ) -> tuple[LiveDeployment, ...]: ...


class Claims(Protocol):
    """Where discovery reports: the watch set, which holds each deployment for the origins that ask for it."""

    def claim(self, origin: str, targets: Sequence[Target]) -> None:
        """``origin`` now asks for exactly ``targets``, replacing what it asked for before."""
        ...


def discover_origin(model_rid: str, branch: str | None) -> str:
    """The origin of deployments found by listing ``model_rid`` (and ``branch``): ``discover:M[@B]``."""
    return f"discover:{model_rid}" + (f"@{branch}" if branch else "")


class Discovery:
    """One ``discover`` entry: lists its model every ``interval`` and claims what the list names.

    A failed list claims nothing new, so nothing is removed because of it: deployments are released only
    when a successful list no longer names them.
    """

    def __init__(
        self, *, lister: DeploymentLister, claims: Claims, metrics: ProcessMetrics, entry: DiscoverConfig
    ) -> None:
        self._lister = lister
        self._claims = claims
        self._metrics = metrics
        self._entry = entry
        self.origin = discover_origin(entry.model_rid, entry.branch)

    async def refresh(self) -> bool:
        """List once and claim what was found; False when the list call failed."""
        entry = self._entry
        try:
            found = await self._lister.list_live_deployments(entry.model_rid, entry.branch)
        except FoundryError as exc:
            self._metrics.discovery_errors.labels(exc.kind).inc()
            log.warning("discovery_failed", model_rid=entry.model_rid, error=exc.kind)
            return False
        targets = [Target(s.rid, s.rid, entry.labels, self.origin) for s in sorted(found, key=_rid)]
        self._claims.claim(self.origin, targets)
        return True

    async def run(self) -> None:
        """Re-list every ``interval`` until cancelled (the first listing is the caller's ``refresh``)."""
        while True:
            await anyio.sleep(self._entry.interval)
            await self.refresh()


def _rid(snapshot: LiveDeployment) -> str:
    return snapshot.rid
