"""The lease partition: deployments shared among replicas through leases in the state database.

One task sends the heartbeat every ``heartbeat`` seconds, renews every lease held in one statement, claims
unowned or expired ones up to the fair share (``assignment``), and gives up what is over it; when a lease it
wants expires before the next heartbeat (its owner stopped renewing), the next round comes as it expires.

A deployment taken over is watched only once its last record is read from the shared table, so the move is
neither a change nor an observation. A deployment given up stops being watched at once, but its lease is
released only at the next round: what the journal still writes for it meanwhile is written under the lease.
Leases whose renewal has not succeeded for a whole lease (as this process's monotonic clock measures it from
before the renewal was sent, so never later than the database's expiry) are dropped without waiting for the
database, so that two replicas never watch one deployment at once. On the way out every lease is released
(shielded, bounded), so that a rolling update leaves nothing unowned for a lease.

It is also the fence of the state's writes (``monitor.state.Fence``): a write for a deployment carries the
token of this process's lease on it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from monitor.metrics import ProcessMetrics
from monitor.partition.assignment import plan
from monitor.state import StateUnavailable
from monitor.state.postgres_leases import SINK_PREFIX, PostgresLeases

log = structlog.get_logger(__name__)

#: How long the release on the way out may take.
LEAVE_SECONDS = 5.0
#: How long after a wanted lease's expiry (by the database's clock) the round that claims it comes.
_EXPIRY_MARGIN = 0.05


#: Reads the stored records of deployments (taken over: they continue from them).
RecordReader = Callable[[list[str]], Awaitable[Mapping[str, dict[str, Any]]]]
#: Hands records read on to the tracker's restore, before the deployments are watched.
RecordHandover = Callable[[Mapping[str, dict[str, Any]]], None]


def replica_id() -> str:
    """This process's name among the replicas: unique to the process, so that a restart is a new replica."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class LeasedSink(Protocol):
    """A sink as its lease runs it: by its name (its cursor's), from its cursor again after ``reset``."""

    name: str

    def reset(self) -> None: ...

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None: ...


class LeasedPartition:
    """This replica's leases (a ``Partition`` and a ``Fence``), kept by ``run``."""

    def __init__(
        self,
        leases: PostgresLeases,
        *,
        read: RecordReader,
        hand_over: RecordHandover,
        replica: str,
        fleet: Callable[[], Collection[str]],
        metrics: ProcessMetrics,
        sinks: Collection[str] = (),
        lease: float = 15.0,
        heartbeat: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self._read = read
        self._hand_over = hand_over
        self._replica = replica
        self._fleet = fleet
        self._metrics = metrics
        self._lease = lease
        self._heartbeat = heartbeat if heartbeat is not None else lease / 3
        self._monotonic = monotonic
        #: rid -> token of every lease held and watched.
        self._held: dict[str, int] = {}
        #: Given up this round (no longer watched), released in the database at the next.
        self._releasing: dict[str, int] = {}
        #: When the held leases expire at the latest, by the monotonic clock.
        self._deadline = -float("inf")
        self._listeners: list[Callable[[], None]] = []
        #: Seconds to the next round: a heartbeat, or less when a lease it wants expires sooner.
        self._next_round = self._heartbeat
        #: Whether this round follows one whose claims were partly lost.
        self._retrying = False
        #: What the round is doing, for the database errors' ``operation`` label.
        self._operation = "lease"
        #: The leases on sinks' delivery: lease name -> token of those held.
        self._sink_names = {SINK_PREFIX + name for name in sinks}
        self._sinks: dict[str, int] = {}
        self._sinks_changed = anyio.Event()

    @property
    def replica(self) -> str:
        return self._replica

    def owns(self, rid: str) -> bool:
        return rid in self._held

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def token(self, rid: str) -> int | None:
        return self._held.get(rid, self._releasing.get(rid))

    def retired(self, rid: str) -> bool:
        return rid not in self._fleet()

    def refused(self, rids: Collection[str]) -> None:
        self._lose([rid for rid in rids if rid in self._held])
        for rid in rids:
            self._releasing.pop(rid, None)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """A round every heartbeat until cancelled; the first is done before this reports started."""
        await self.round()
        task_status.started()
        while True:
            await anyio.sleep(self._next_round)
            await self.round()

    async def round(self) -> None:
        """Heartbeat, renew, then release and claim towards the fair share. A database error is counted
        and the round given up; the leases are then kept locally until their deadline."""
        started = self._monotonic()
        self._next_round = self._heartbeat
        self._expire(started)
        # A round that hangs (a database not answering) is given up when the leases held expire.
        holding = self._held or self._sinks
        self._operation = "lease"
        with anyio.move_on_after(self._deadline - started if holding else self._lease) as scope:
            try:
                await self._round(started)
            except StateUnavailable as exc:
                self._metrics.database_errors.labels(self._operation).inc()
                log.warning("lease_round_failed", operation=self._operation, error=str(exc))
        if scope.cancelled_caught:
            self._metrics.database_errors.labels(self._operation).inc()
            log.warning("lease_round_timed_out", operation=self._operation)
            self._expire(self._monotonic())

    def _expire(self, now: float) -> None:
        if (self._held or self._sinks) and now >= self._deadline:
            log.warning("leases_expired_unrenewed", deployments=len(self._held), sinks=len(self._sinks))
            self._lose(set(self._held))
            self._drop_sinks(set(self._sinks))

    def _drop_sinks(self, names: Collection[str]) -> None:
        if names:
            for name in names:
                del self._sinks[name]
            log.warning("sink_leases_lost", sinks=sorted(names))
            self._sinks_moved()

    def delivers(self, sink: str) -> bool:
        """Whether this replica holds the lease on delivering ``sink``."""
        return SINK_PREFIX + sink in self._sinks

    async def deliver(self, sink: LeasedSink) -> None:
        """Run ``sink`` while this replica holds its lease, from its cursor each time it takes it (again)."""
        while True:
            while not self.delivers(sink.name):
                await self._sink_change()
            sink.reset()
            async with anyio.create_task_group() as tg:
                await tg.start(sink.run)
                while self.delivers(sink.name):
                    await self._sink_change()
                tg.cancel_scope.cancel()

    async def _sink_change(self) -> None:
        await self._sinks_changed.wait()

    def _sinks_moved(self) -> None:
        # A new event for every change, set by the changer: each waiter wakes on the one it waits for.
        moved, self._sinks_changed = self._sinks_changed, anyio.Event()
        moved.set()

    async def _round(self, started: float) -> None:
        releasing, self._releasing = self._releasing, {}
        await self._leases.release(self._replica, releasing)
        self._operation = "heartbeat"
        replicas = await self._leases.heartbeat(self._replica, within=self._lease)
        self._metrics.heartbeat_time.set(time.time())
        self._metrics.replicas.set(len(replicas))
        self._operation = "lease"
        if self._held or self._sinks:
            renewed = await self._leases.renew(
                self._replica, {**self._held, **self._sinks}, lease=self._lease
            )
            self._lose(self._held.keys() - renewed.keys())
            self._drop_sinks(self._sinks.keys() - renewed.keys())
            self._deadline = started + self._lease
        wanted = sorted(self._sink_names - self._sinks.keys())
        if sinks := await self._leases.claim(self._replica, wanted, lease=self._lease):
            self._sinks.update(sinks)
            self._deadline = started + self._lease
            self._sinks_moved()
        fleet = set(self._fleet())
        live = await self._leases.live()
        owners = {name: holding.owner for name, holding in live.items()}
        step = plan(self._replica, replicas, fleet, {**owners, **dict.fromkeys(self._held, self._replica)})
        self._give_up((self._held.keys() - fleet) | step.release)
        taken = await self._leases.claim(self._replica, sorted(step.claim), lease=self._lease)
        if taken:
            # Read after the claim: the last owner cannot write for them any more (the fence).
            self._hand_over(await self._read(sorted(taken)))
            if self._monotonic() < started + self._lease:
                self._held.update(taken)
                self._deadline = started + self._lease
                self._metrics.leases_taken.inc(len(taken))
                self._changed()
        # A live replica renews its leases well before they expire: one expiring sooner than the next
        # heartbeat is a dead replica's, claimed as it expires rather than up to a heartbeat later.
        followed = fleet | self._sink_names
        expiring = [h.remaining for name, h in live.items() if h.owner != self._replica and name in followed]
        self._next_round = min([self._heartbeat, *(left + _EXPIRY_MARGIN for left in expiring)])
        # Claims another replica won at the same moment leave others unclaimed: one more round soon, once.
        if step.claim - taken.keys() and not self._retrying:
            self._next_round = min(self._next_round, _EXPIRY_MARGIN)
        self._retrying = bool(step.claim - taken.keys())
        owned = {rid for rid, owner in owners.items() if owner in replicas} | self._held.keys()
        self._metrics.owned_deployments.set(len(self._held))
        self._metrics.unowned_deployments.set(len(fleet - owned))

    def _give_up(self, rids: Collection[str]) -> None:
        if not rids:
            return
        for rid in rids:
            self._releasing[rid] = self._held.pop(rid)
        self._changed()

    def _lose(self, rids: Collection[str]) -> None:
        if not rids:
            return
        for rid in rids:
            del self._held[rid]
        self._metrics.leases_lost.inc(len(rids))
        log.warning("leases_lost", deployments=len(rids))
        self._changed()

    def _changed(self) -> None:
        self._metrics.owned_deployments.set(len(self._held))
        for listener in self._listeners:
            listener()

    async def leave(self) -> None:
        """Release every lease and the heartbeat (shielded, within ``LEAVE_SECONDS``): the others take over
        at their next round instead of after a lease."""
        self._held.clear()
        self._releasing.clear()
        self._drop_sinks(set(self._sinks))
        with anyio.move_on_after(LEAVE_SECONDS, shield=True):
            try:
                await self._leases.leave(self._replica)
            except StateUnavailable as exc:
                self._metrics.database_errors.labels("lease").inc()
                log.warning("lease_leave_failed", error=str(exc))
