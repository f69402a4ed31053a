"""The lease partition: deployments shared among replicas through leases in the state database.

One task sends the heartbeat every ``heartbeat`` seconds, renews every lease held in one statement, claims
unowned or expired ones up to the fair share (``assignment``), and gives up what is over it; when a lease it
wants expires before the next heartbeat (its owner stopped renewing), the next round comes as it expires.

A deployment taken over is watched only once its last record is read from the shared table, so the move is
neither a change nor an observation. A deployment given up stops being watched at once, but its lease is
released only at the next round: what the journal still writes for it meanwhile is written under the lease.
On the way out every lease is released (shielded, bounded), so that a rolling update leaves nothing unowned
for a lease.

Ownership changes only with what the database answers. While it does not answer, this replica keeps
watching what it holds (polling and metrics go on, the journal holds the events); if the others reach the
database meanwhile they take its deployments over once the leases expire, and the first renewal after the
outage tells this replica which it lost: the fence has refused its writes for those, and it stops watching
them. A lease that expired while nobody claimed it is still this replica's (its token did not change).

It is also the fence of the state's writes (``monitor.state.Fence``): a write for a deployment carries the
token of this process's lease on it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Set
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from monitor.metrics import ProcessMetrics
from monitor.partition.assignment import plan
from monitor.state import DatabaseHealth, StateUnavailable
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
    """This replica's leases (a ``Partition`` and a ``Fence``), kept by ``run``; the fleet is what the watch
    set offers."""

    def __init__(
        self,
        leases: PostgresLeases,
        *,
        read: RecordReader,
        hand_over: RecordHandover,
        replica: str,
        health: DatabaseHealth,
        metrics: ProcessMetrics,
        sinks: Collection[str] = (),
        lease: float = 15.0,
        heartbeat: float | None = None,
    ) -> None:
        self._leases = leases
        self._read = read
        self._hand_over = hand_over
        self._replica = replica
        self._health = health
        self._metrics = metrics
        #: The candidates the watch set offered: the fleet.
        self._fleet: set[str] = set()
        self._lease = lease
        self._heartbeat = heartbeat if heartbeat is not None else lease / 3
        #: rid -> token of every lease held and watched.
        self._held: dict[str, int] = {}
        #: Given up (no longer watched), released in the database at a later round: the next one once
        #: the journal holds no events back.
        self._releasing: dict[str, int] = {}
        #: Set (and replaced) at every change of what this replica holds, deployments or sinks.
        self._changed_event = anyio.Event()
        #: Seconds to the next round: a heartbeat, or less when a lease it wants expires sooner.
        self._next_round = self._heartbeat
        #: Whether this round follows one whose claims were partly lost.
        self._retrying = False
        #: The leases on sinks' delivery: lease name -> token of those held.
        self._sink_names = {SINK_PREFIX + name for name in sinks}
        self._sinks: dict[str, int] = {}

    @property
    def replica(self) -> str:
        return self._replica

    def offer(self, added: Set[str], withdrawn: Set[str]) -> None:
        # Claimed at the next round; one withdrawn is given up then (after its owner reported its removal).
        self._fleet |= added
        self._fleet -= withdrawn

    def owns(self, rid: str) -> bool:
        return rid in self._held

    async def changed(self) -> None:
        """Return at the next change of what this replica holds (the watch set's and the sinks' wait)."""
        await self._changed_event.wait()

    def token(self, rid: str) -> int | None:
        return self._held.get(rid, self._releasing.get(rid))

    def retired(self, rid: str) -> bool:
        return rid not in self._fleet

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
        (by the database's health) and the round given up; the leases are then kept locally until their
        deadline."""
        self._next_round = self._heartbeat
        # A round that hangs (a database not answering) is given up after a lease, and tried again.
        with anyio.move_on_after(self._lease) as scope, contextlib.suppress(StateUnavailable):
            await self._round()
        if scope.cancelled_caught:
            self._health.failed("lease", StateUnavailable("a lease round did not finish in time"))

    def _drop_sinks(self, names: Collection[str]) -> None:
        if names:
            for name in names:
                del self._sinks[name]
            log.warning("sink_leases_lost", sinks=sorted(names))
            self._changed()

    def delivers(self, sink: str) -> bool:
        """Whether this replica holds the lease on delivering ``sink``."""
        return SINK_PREFIX + sink in self._sinks

    async def deliver(self, sink: LeasedSink) -> None:
        """Run ``sink`` while this replica holds its lease, from its cursor each time it takes it (again)."""
        while True:
            while not self.delivers(sink.name):
                await self.changed()
            sink.reset()
            async with anyio.create_task_group() as tg:
                await tg.start(sink.run)
                while self.delivers(sink.name):
                    await self.changed()
                tg.cancel_scope.cancel()

    async def _round(self) -> None:
        # Released once the journal holds nothing back (after an outage it writes first, under the lease).
        if self._releasing and not self._health.held:
            await self._health.watch("lease", self._leases.release(self._replica, self._releasing))
            self._releasing = {}
        replicas = await self._health.watch(
            "heartbeat", self._leases.heartbeat(self._replica, within=self._lease)
        )
        self._metrics.heartbeat_time.set(time.time())
        self._metrics.replicas.set(len(replicas))
        if self._held or self._sinks:
            held = {**self._held, **self._sinks}
            renewed = await self._health.watch(
                "lease", self._leases.renew(self._replica, held, lease=self._lease)
            )
            self._lose(self._held.keys() - renewed.keys())
            self._drop_sinks(self._sinks.keys() - renewed.keys())
        wanted = sorted(self._sink_names - self._sinks.keys())
        if sinks := await self._health.watch(
            "lease", self._leases.claim(self._replica, wanted, lease=self._lease)
        ):
            self._sinks.update(sinks)
            self._changed()
        fleet = self._fleet
        live = await self._health.watch("lease", self._leases.live())
        owners = {name: holding.owner for name, holding in live.items()}
        # What this replica gave up and has not released yet is nobody's share any more.
        shares = {name: owner for name, owner in owners.items() if name not in self._releasing}
        step = plan(self._replica, replicas, fleet, {**shares, **dict.fromkeys(self._held, self._replica)})
        self._give_up((self._held.keys() - fleet) | step.release)
        claimed = self._leases.claim(self._replica, sorted(step.claim), lease=self._lease)
        taken = await self._health.watch("lease", claimed)
        if taken:
            # Read after the claim: the last owner cannot write for them any more (the fence).
            self._hand_over(await self._health.watch("lease", self._read(sorted(taken))))
            self._held.update(taken)
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
        # A new event for every change, set by the changer: the watch set's pass waits on the current one.
        changed, self._changed_event = self._changed_event, anyio.Event()
        changed.set()

    async def leave(self) -> None:
        """Release every lease and the heartbeat (shielded, within ``LEAVE_SECONDS``): the others take over
        at their next round instead of after a lease."""
        self._held.clear()
        self._releasing.clear()
        self._sinks.clear()
        self._changed()
        with anyio.move_on_after(LEAVE_SECONDS, shield=True), contextlib.suppress(StateUnavailable):
            await self._health.watch("lease", self._leases.leave(self._replica))
