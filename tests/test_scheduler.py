"""Tests for monitor.scheduler against a hand-written fake reader (no network)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence

import anyio

from monitor.breaker import CircuitBreaker
from monitor.config import BreakerConfig, PollingConfig
from monitor.errors import LiveDeploymentNotFound, PermissionDenied, RequestTimeout
from monitor.events import Event, EventType
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.scheduler import Scheduler
from monitor.tracker import Target, Tracker

RIDS = [f"ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{i:012d}" for i in range(6)]


MODEL = "ri.models.main.model.1"


def snapshot(rid: str, state: str = "ACTIVE", branch: str | None = None) -> LiveDeployment:
    return LiveDeployment(
        rid=rid,
        model_rid=MODEL,
        model_version_rid="ri.models.main.model-version.1",
        runtime=RuntimeConfiguration(min_replicas=1, max_replicas=2),
        state=state,
        is_ready=True,
        branch=branch,
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
        self.lists: Counter[tuple[str, str | None]] = Counter()
        #: When set, every list request raises it.
        self.list_error: Exception | None = None
        #: RIDs a list answer leaves out although their own GET finds them.
        self.unlisted: set[str] = set()

    async def list_live_deployments(
        self, model_rid: str, branch: str | None = None
    ) -> tuple[LiveDeployment, ...]:
        """What a list of (model, branch) answers: the direct deployments among ``answers``."""
        self.lists[model_rid, branch] += 1
        await anyio.sleep(self.delay)
        if self.list_error is not None:
            raise self.list_error
        return tuple(
            answer
            for rid, answer in self.answers.items()
            if isinstance(answer, LiveDeployment)
            and answer.model_rid == model_rid
            and answer.branch == branch
            and rid not in self.unlisted
        )

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
    batch: str = "auto",
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
            interval=interval, fast_interval=interval / 2, jitter=0.1, error_backoff_max=60.0, batch=batch
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


def branched(reader: FakeReader, branches: dict[str, str | None]) -> None:
    """Give the RIDs in ``branches`` that branch (None: pinned) in the reader's answers."""
    for rid, branch in branches.items():
        reader.answers[rid] = snapshot(rid, branch=branch)


async def test_branch_tracking_deployments_are_polled_through_one_list_per_model_and_branch() -> None:
    """After each one's first GET, direct deployments are refreshed by their (model, branch) list only;
    pinned ones keep their own GET; a change in a list answer is reported like one in a GET answer."""
    reader = FakeReader()
    branched(reader, {RIDS[0]: "master", RIDS[1]: "master", RIDS[2]: "staging", RIDS[3]: None})
    scheduler, tracker, bus = make(reader, interval=0.01)
    only = RIDS[:4]
    for rid in RIDS[4:]:
        scheduler.remove(rid)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: reader.lists[MODEL, "master"] >= 3 and reader.lists[MODEL, "staging"] >= 3)
        gets = {rid: reader.calls[rid] for rid in only}
        reader.answers[RIDS[1]] = dataclasses.replace(reader.answers[RIDS[1]], is_ready=False)  # type: ignore[arg-type]
        lists = reader.lists[MODEL, "master"]
        await until(lambda: any(e.type is EventType.CHANGED for e in bus.events))
        await until(lambda: reader.lists[MODEL, "master"] >= lists + 3 and reader.calls[RIDS[3]] >= 10)
        tg.cancel_scope.cancel()
    assert gets[RIDS[0]] == reader.calls[RIDS[0]] == 1
    assert reader.calls[RIDS[2]] == 1
    assert reader.calls[RIDS[3]] > gets[RIDS[3]]  # the pinned one
    (changed,) = [e for e in bus.events if e.type is EventType.CHANGED]
    assert changed.rid == RIDS[1]
    assert not tracker.records[RIDS[1]].snapshot.is_ready  # type: ignore[union-attr]
    assert set(reader.lists) == {(MODEL, "master"), (MODEL, "staging")}
    assert len(scheduler.batches) == 2
    # The client keeps no copy of a batched deployment's last GET answer.
    assert {RIDS[0], RIDS[2]} <= set(reader.forgotten)
    assert RIDS[3] not in reader.forgotten


async def test_a_deployment_missing_from_its_list_is_confirmed_by_its_own_get() -> None:
    """A member the list leaves out gets its own GET before anything is reported: found there, nothing
    is; a 404 there, and it is reported not found."""
    reader = FakeReader()
    branched(reader, {rid: "master" for rid in RIDS})
    scheduler, tracker, bus = make(reader, interval=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: reader.lists[MODEL, "master"] >= 2)
        reader.unlisted.add(RIDS[0])
        await until(lambda: reader.calls[RIDS[0]] >= 3)
        assert [e.type for e in bus.events if e.rid == RIDS[0]] == [EventType.OBSERVED]
        reader.answers[RIDS[0]] = LiveDeploymentNotFound("gone", status=404, rid=RIDS[0])
        await until(lambda: any(e.type is EventType.NOT_FOUND for e in bus.events))
        tg.cancel_scope.cancel()
    assert [e.rid for e in bus.events if e.type is EventType.NOT_FOUND] == [RIDS[0]]
    assert tracker.records[RIDS[0]].found is False
    assert scheduler.batches.group_of(RIDS[0]) is None
    assert scheduler.batches.group_of(RIDS[1]) == (MODEL, "master")


async def test_a_failed_list_falls_back_to_gets_and_is_counted() -> None:
    """A list that fails sends each member to its own GET for the round, counts the error and reports no
    change; the members rejoin the list once it works again."""
    reader = FakeReader()
    branched(reader, {rid: "master" for rid in RIDS})
    scheduler, tracker, bus = make(reader, interval=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: reader.lists[MODEL, "master"] >= 2)
        gets = sum(reader.calls.values())
        reader.list_error = RequestTimeout("slow")
        await until(lambda: sum(reader.calls.values()) >= gets + 3 * len(RIDS))
        reader.list_error = None
        lists = reader.lists[MODEL, "master"]
        await until(lambda: reader.lists[MODEL, "master"] >= lists + 3)
        tg.cancel_scope.cancel()
    errors = scheduler._metrics.registry.get_sample_value(
        "foundry_monitor_list_errors_total", {"error": "timeout"}
    )
    assert errors is not None
    assert errors >= 3
    assert {e.type for e in bus.events} == {EventType.OBSERVED}
    assert all(record.up for record in tracker)
    assert scheduler.batches.batched == len(RIDS)


async def test_a_deployment_changing_branch_or_becoming_pinned_moves_between_groups() -> None:
    """A member whose answer names another branch leaves its group for that branch's; one pinned (no
    branch) leaves the lists for its own GET; neither change goes unreported."""
    reader = FakeReader()
    branched(reader, {rid: "master" for rid in RIDS})
    scheduler, _, bus = make(reader, interval=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: scheduler.batches.batched == len(RIDS))
        branched(reader, {RIDS[0]: "staging", RIDS[1]: None})
        await until(lambda: scheduler.batches.group_of(RIDS[0]) == (MODEL, "staging"))
        calls = reader.calls[RIDS[1]]
        await until(lambda: reader.calls[RIDS[1]] >= calls + 5)
        tg.cancel_scope.cancel()
    assert scheduler.batches.group_of(RIDS[1]) is None
    assert {e.rid for e in bus.events if e.type is EventType.CHANGED} == {RIDS[0], RIDS[1]}
    assert reader.lists[MODEL, "staging"] >= 1


async def test_a_deployment_in_transition_gets_its_own_get_until_it_settles() -> None:
    """A member seen STARTING leaves its list for its own GETs on the fast interval, and rejoins once
    ACTIVE again."""
    reader = FakeReader()
    branched(reader, {rid: "master" for rid in RIDS})
    scheduler, tracker, _ = make(reader, interval=0.02)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: scheduler.batches.batched == len(RIDS))
        reader.answers[RIDS[2]] = snapshot(RIDS[2], state="STARTING", branch="master")
        await until(lambda: reader.calls[RIDS[2]] >= 5)
        assert scheduler.batches.group_of(RIDS[2]) is None
        assert tracker.records[RIDS[2]].wants_fast_poll
        reader.answers[RIDS[2]] = snapshot(RIDS[2], branch="master")
        await until(lambda: scheduler.batches.group_of(RIDS[2]) == (MODEL, "master"))
        tg.cancel_scope.cancel()


async def test_batch_off_polls_every_deployment_with_its_own_get() -> None:
    """With ``batch: off`` no list request is sent, whatever the answers' branches."""
    reader = FakeReader()
    branched(reader, {rid: "master" for rid in RIDS})
    scheduler, _, _ = make(reader, interval=0.01, batch="off")
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await until(lambda: all(reader.calls[rid] >= 5 for rid in RIDS))
        tg.cancel_scope.cancel()
    assert not reader.lists
    assert scheduler.batches.batched == 0
