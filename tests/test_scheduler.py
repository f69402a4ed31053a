"""Tests for monitor.scheduler against a hand-written fake reader (no network)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence

import anyio

from monitor.breaker import CircuitBreaker
from monitor.config import BreakerConfig, PollingConfig
from monitor.errors import PermissionDenied, RequestTimeout
from monitor.events import Event, EventType
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.scheduler import Scheduler
from monitor.tracker import Target, Tracker

RIDS = [f"ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{i:012d}" for i in range(6)]


def snapshot(rid: str, state: str = "ACTIVE") -> LiveDeployment:
    return LiveDeployment(
        rid=rid,
        model_rid="ri.models.main.model.1",
        model_version_rid="ri.models.main.model-version.1",
        runtime=RuntimeConfiguration(min_replicas=1, max_replicas=2),
        state=state,
        is_ready=True,
    )


class FakeReader:
    """Answers from a dict; a RID mapped to an exception raises it. Tracks concurrency per RID."""

    def __init__(self, delay: float = 0.0) -> None:
        self.answers: dict[str, LiveDeployment | Exception] = {rid: snapshot(rid) for rid in RIDS}
        self.calls: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.max_active_per_rid = 0
        self.max_active = 0
        self.delay = delay
        self.forgotten: list[str] = []
        #: RIDs whose polls never answer (until cancelled).
        self.hung: set[str] = set()

    def forget(self, rid: str) -> None:
        self.forgotten.append(rid)

    async def get_live_deployment(self, rid: str) -> LiveDeployment:
        self.calls[rid] += 1
        self.active[rid] += 1
        self.max_active_per_rid = max(self.max_active_per_rid, self.active[rid])
        self.max_active = max(self.max_active, sum(self.active.values()))
        try:
            if rid in self.hung:
                await anyio.sleep_forever()
            await anyio.sleep(self.delay)
            answer = self.answers[rid]
            if isinstance(answer, Exception):
                raise answer
            return answer
        finally:
            self.active[rid] -= 1


class Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


def make(
    reader: FakeReader,
    *,
    interval: float = 0.05,
    concurrency: int = 10,
    breaker: BreakerConfig | None = None,
) -> tuple[Scheduler, Tracker, Collect]:
    tracker = Tracker(unreachable_after=2)
    bus = Collect()
    scheduler = Scheduler(
        reader=reader,
        tracker=tracker,
        bus=bus,
        metrics=ProcessMetrics(),
        breaker=CircuitBreaker(breaker or BreakerConfig(min_polls=1000)),
        cadence=PollingConfig(
            interval=interval, fast_interval=interval / 2, jitter=0.1, error_backoff_max=60.0
        ),
        concurrency=concurrency,
    )
    for rid in RIDS:
        scheduler.add(Target(rid, rid[-4:]))
    return scheduler, tracker, bus


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition`` with a bound; checks after every scheduler turn."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


async def test_every_deployment_is_polled_repeatedly_and_never_twice_at_once() -> None:
    """All deployments get many polls; no RID ever has two polls in flight."""
    reader = FakeReader(delay=0.02)
    scheduler, _, bus = make(reader, interval=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: all(reader.calls[rid] >= 5 for rid in RIDS))
        tg.cancel_scope.cancel()
    assert reader.max_active_per_rid == 1
    assert scheduler.first_round_done.is_set()
    assert Counter(e.type for e in bus.events)[EventType.OBSERVED] == len(RIDS)


async def test_concurrency_limit_is_respected() -> None:
    """With concurrency 2, at most two polls run at once."""
    reader = FakeReader(delay=0.01)
    scheduler, _, _ = make(reader, interval=0.001, concurrency=2)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: sum(reader.calls.values()) >= 30)
        tg.cancel_scope.cancel()
    assert reader.max_active == 2


async def test_a_failing_deployment_does_not_slow_the_others() -> None:
    """A RID that times out slowly and one refused with 403 leave the rest polled at their pace."""
    reader = FakeReader()
    reader.answers[RIDS[0]] = RequestTimeout("slow")
    reader.answers[RIDS[1]] = PermissionDenied("no", status=403)
    scheduler, tracker, bus = make(reader, interval=0.02)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: all(reader.calls[rid] >= 10 for rid in RIDS[2:]))
        tg.cancel_scope.cancel()
    # The 403 backs off exponentially on its own: far fewer polls than the healthy ones.
    assert reader.calls[RIDS[1]] < reader.calls[RIDS[2]] / 2
    assert tracker.records[RIDS[0]].unreachable
    assert any(e.type is EventType.UNREACHABLE and e.rid == RIDS[0] for e in bus.events)


async def test_removed_deployment_is_no_longer_polled() -> None:
    """After remove(), the RID gets no more polls and a removed event is published."""
    reader = FakeReader()
    scheduler, tracker, bus = make(reader, interval=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: reader.calls[RIDS[0]] >= 2)
        scheduler.remove(RIDS[0])
        # Let any poll already out come back, then take the count.
        await until(lambda: reader.active[RIDS[0]] == 0)
        calls = reader.calls[RIDS[0]]
        await until(lambda: all(reader.calls[rid] >= calls + 5 for rid in RIDS[1:]))
        tg.cancel_scope.cancel()
    assert reader.calls[RIDS[0]] == calls
    assert RIDS[0] not in tracker
    assert reader.forgotten == [RIDS[0]]
    assert any(e.type is EventType.REMOVED for e in bus.events)


async def test_breaker_stops_the_storm_when_everything_fails() -> None:
    """With every poll an upstream fault the breaker opens and requests stop until the cooldown."""
    reader = FakeReader()
    for rid in RIDS:
        reader.answers[rid] = RequestTimeout("down")
    settings = BreakerConfig(failure_ratio=1.0, min_polls=6, window=60.0, cooldown=60.0)
    scheduler, _, _ = make(reader, interval=0.005, breaker=settings)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: scheduler._breaker.state == "open")
        calls = sum(reader.calls.values())
        # Many dispatcher turns later, no request has gone out: polls wait for the probe.
        for _ in range(50):
            await anyio.sleep(0.002)
        tg.cancel_scope.cancel()
    assert sum(reader.calls.values()) == calls
    assert calls <= 6 + len(RIDS)
    gauge = scheduler._metrics.registry.get_sample_value
    assert gauge("foundry_monitor_circuit_breaker_state", {"state": "open"}) == 1
    assert gauge("foundry_monitor_circuit_breaker_state", {"state": "closed"}) == 0


async def test_a_hung_poll_holds_one_worker_and_delays_nothing_else() -> None:
    """With concurrency 2 and one deployment that never answers, the rest are polled on time by the other."""
    reader = FakeReader(delay=0.001)
    reader.hung.add(RIDS[0])
    scheduler, _, _ = make(reader, interval=0.01, concurrency=2)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: all(reader.calls[rid] >= 10 for rid in RIDS[1:]))
        tg.cancel_scope.cancel()
    assert reader.calls[RIDS[0]] == 1
    assert reader.max_active == 2


async def test_workers_are_started_as_the_load_needs_them() -> None:
    """A small fleet far below the cap gets a worker per poll in flight plus one waiting, not the cap."""
    reader = FakeReader(delay=0.01)
    scheduler, _, _ = make(reader, interval=60.0, concurrency=500)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(scheduler.first_round_done.is_set)
        tg.cancel_scope.cancel()
    assert reader.max_active == len(RIDS)
    assert scheduler._workers == len(RIDS) + 1


async def test_state_change_is_observed_and_polled_fast() -> None:
    """A deployment that changes is reported and then wants the fast interval."""
    reader = FakeReader()
    scheduler, tracker, bus = make(reader, interval=0.02)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(scheduler.first_round_done.is_set)
        reader.answers[RIDS[3]] = dataclasses.replace(snapshot(RIDS[3]), state="STARTING")
        await until(lambda: any(e.type is EventType.CHANGED for e in bus.events))
        tg.cancel_scope.cancel()
    assert tracker.records[RIDS[3]].wants_fast_poll
