"""The versions poller: lists the model versions of every watched branch on its own interval, and judges the
lag of the deployments that follow them (``monitor.rollouts``).

The branches are those that watched direct deployments follow as last polled, so they come and go with the
watch set. A branch is listed as soon as it is first seen, then every ``interval`` (jittered). Listings go
through the Foundry client like polls, so they spend from the same request budget. A failed listing is
counted by error kind and logged when a branch's error changes; it never becomes a change of a deployment.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from monitor.errors import FoundryError
from monitor.metrics import ProcessMetrics
from monitor.model import ModelVersion
from monitor.rollouts import BranchKey, Rollouts
from monitor.scheduler import EventPublisher
from monitor.tracker import Tracker

log = structlog.get_logger(__name__)

#: Longest pause between two judgements of the deployments' lag (a catch-up is seen within it).
CHECK_EVERY = 1.0
#: Listings in flight at once (each also waits for the request budget).
CONCURRENCY = 4


class VersionLister(Protocol):
    """The one call the poller needs from the Foundry client."""

    async def list_model_versions(self, model_rid: str, branch: str) -> tuple[ModelVersion, ...]: ...


class VersionPoller:
    """Keeps ``rollouts`` listed and publishes the rollout events of ``tracker``'s deployments."""

    def __init__(
        self,
        *,
        lister: VersionLister,
        tracker: Tracker,
        rollouts: Rollouts,
        bus: EventPublisher,
        metrics: ProcessMetrics,
        interval: float,
        jitter: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._lister = lister
        self._tracker = tracker
        self._rollouts = rollouts
        self._bus = bus
        self._metrics = metrics
        self._interval = interval
        self._jitter = jitter
        self._monotonic = monotonic
        self._wall = wall
        self._rng = rng or random.Random()
        self._due: dict[BranchKey, float] = {}
        #: The error kind of each branch whose last listing failed: logged only when it changes.
        self._errors: dict[BranchKey, str] = {}
        self._limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """List and judge until cancelled."""
        task_status.started()
        pause = min(CHECK_EVERY, self._interval, self._rollouts.grace)
        while True:
            await self.round()
            await anyio.sleep(pause)

    async def round(self) -> None:
        """List the branches that are due (new ones at once), then judge every deployment."""
        keys = self._rollouts.branches(self._tracker)
        for gone in self._due.keys() - keys:
            del self._due[gone]
            self._errors.pop(gone, None)
        self._rollouts.keep(keys)
        now = self._monotonic()
        due = sorted(key for key in keys if self._due.get(key, now) <= now)
        if due:
            async with anyio.create_task_group() as tg:
                for key in due:
                    tg.start_soon(self._list, key)
        events = self._rollouts.check(self._tracker, self._wall())
        if events:
            self._bus.publish(events)

    async def _list(self, key: BranchKey) -> None:
        model_rid, branch = key
        async with self._limiter:
            try:
                versions = await self._lister.list_model_versions(model_rid, branch)
            except FoundryError as exc:
                self._metrics.version_list_errors.labels(exc.kind).inc()
                if self._errors.get(key) != exc.kind:
                    self._errors[key] = exc.kind
                    log.warning("version_listing_failed", model_rid=model_rid, branch=branch, error=exc.kind)
            else:
                self._rollouts.listed(key, versions)
                if self._errors.pop(key, None) is not None:
                    log.info("version_listing_recovered", model_rid=model_rid, branch=branch)
        spread = 1.0 + self._rng.uniform(-self._jitter, self._jitter)
        self._due[key] = self._monotonic() + self._interval * spread
