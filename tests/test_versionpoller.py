"""Tests for monitor.versionpoller against a hand-written fake lister (no network; the end-to-end test in
tests/test_rollouts_e2e.py runs it against the simulator)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from monitor.errors import ModelNotFound, UnsupportedModelSource
from monitor.events import Event, EventType
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment, ModelVersion, RuntimeConfiguration
from monitor.rollouts import Rollouts
from monitor.tracker import Target, Tracker
from monitor.versionpoller import VersionPoller
from tests.logcapture import configured_logging, json_lines

MODEL = "ri.models.main.model.00000000-0000-4000-8000-00000000000a"
OTHER_MODEL = "ri.models.main.model.00000000-0000-4000-8000-00000000000b"
V1 = "ri.models.main.model-version.00000000-0000-4000-8000-000000000001"
V2 = "ri.models.main.model-version.00000000-0000-4000-8000-000000000002"
T0 = 1_700_000_000.0


def rid(i: int) -> str:
    return f"ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{i:012d}"


def deployment(i: int, *, model: str = MODEL, branch: str | None = "master") -> LiveDeployment:
    return LiveDeployment(
        rid=rid(i),
        model_rid=model,
        model_version_rid=V1,
        runtime=RuntimeConfiguration(min_replicas=1, max_replicas=1),
        state="ACTIVE",
        is_ready=True,
        branch=branch,
    )


class FakeLister:
    """Answers each (model, branch) from a dict; an exception there is raised. Counts the calls."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[ModelVersion, ...] | Exception] = {}
        self.calls: Counter[tuple[str, str]] = Counter()

    async def list_model_versions(self, model_rid: str, branch: str) -> tuple[ModelVersion, ...]:
        key = (model_rid, branch)
        self.calls[key] += 1
        await anyio.lowlevel.checkpoint()
        answer = self.answers.get(key, ())
        if isinstance(answer, Exception):
            raise answer
        return answer


class Collected:
    """The event publisher: keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


class Clock:
    """A settable clock, both monotonic and wall."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    """A poller and everything it was given."""

    poller: VersionPoller
    lister: FakeLister
    tracker: Tracker
    rollouts: Rollouts
    bus: Collected
    clock: Clock
    metrics: ProcessMetrics


def setup(grace: float = 60.0) -> Rig:
    tracker, lister, bus, clock, metrics = Tracker(), FakeLister(), Collected(), Clock(T0), ProcessMetrics()
    rollouts = Rollouts(grace=grace)
    poller = VersionPoller(
        lister=lister,
        tracker=tracker,
        rollouts=rollouts,
        bus=bus,
        metrics=metrics,
        interval=300.0,
        jitter=0.0,
        monotonic=clock,
        wall=clock,
    )
    return Rig(poller, lister, tracker, rollouts, bus, clock, metrics)


def watch(tracker: Tracker, i: int, snapshot: LiveDeployment) -> None:
    tracker.add(Target(rid(i), f"d{i}"))
    tracker.observe(rid(i), snapshot, T0)


async def test_each_followed_branch_is_listed_when_first_seen_and_then_every_interval() -> None:
    """Two deployments on master and a pinned one: master is listed once at the first round, not again
    before the interval, again after it; a deployment on a new branch has it listed at the next round; the
    pinned deployment's model is never listed."""
    rig = setup()
    poller, lister, tracker, clock = rig.poller, rig.lister, rig.tracker, rig.clock
    watch(tracker, 0, deployment(0))
    watch(tracker, 1, deployment(1))
    watch(tracker, 2, deployment(2, model=OTHER_MODEL, branch=None))
    await poller.round()
    assert lister.calls == Counter({(MODEL, "master"): 1})
    clock.now += 299
    await poller.round()
    assert lister.calls[(MODEL, "master")] == 1
    watch(tracker, 3, deployment(3, branch="staging"))
    await poller.round()
    assert lister.calls == Counter({(MODEL, "master"): 1, (MODEL, "staging"): 1})
    clock.now += 2
    await poller.round()
    assert lister.calls[(MODEL, "master")] == 2


async def test_a_branch_no_deployment_follows_any_more_is_no_longer_listed_or_shown() -> None:
    """Removing the only deployment of a branch drops the branch: no listing, no newest version kept."""
    rig = setup()
    poller, lister, tracker, clock = rig.poller, rig.lister, rig.tracker, rig.clock
    watch(tracker, 0, deployment(0))
    lister.answers[(MODEL, "master")] = (ModelVersion(V1, T0 - 10),)
    await poller.round()
    assert set(rig.rollouts.latest) == {(MODEL, "master")}
    tracker.remove(rid(0), T0 + 1)
    clock.now += 1000
    await poller.round()
    assert lister.calls[(MODEL, "master")] == 1
    assert rig.rollouts.latest == {}


async def test_a_lag_beyond_the_grace_is_published_as_version_behind() -> None:
    """The listing shows a version newer than the one deployed, created before the grace: the round
    publishes version_behind for the branch's deployment only."""
    rig = setup()
    poller, lister, tracker, bus = rig.poller, rig.lister, rig.tracker, rig.bus
    watch(tracker, 0, deployment(0))
    watch(tracker, 1, deployment(1, branch=None))
    lister.answers[(MODEL, "master")] = (ModelVersion(V1, T0 - 3600), ModelVersion(V2, T0 - 120))
    await poller.round()
    assert [(e.type, e.rid) for e in bus.events] == [(EventType.VERSION_BEHIND, rid(0))]


async def test_listing_errors_are_counted_logged_once_and_change_no_deployment() -> None:
    """ModelNotFound and UnsupportedModelSource are counted by kind on every failure, logged once per change
    of a branch's error (and once on recovery), and neither makes an event nor touches a record."""
    rig = setup()
    poller, lister, tracker, bus, clock = rig.poller, rig.lister, rig.tracker, rig.bus, rig.clock
    watch(tracker, 0, deployment(0))
    watch(tracker, 1, deployment(1, model=OTHER_MODEL))
    lister.answers[(MODEL, "master")] = ModelNotFound("gone", status=404)
    lister.answers[(OTHER_MODEL, "master")] = UnsupportedModelSource("no", status=400)
    versions = {r.target.rid: r.version for r in tracker}
    with configured_logging() as stream:
        for _ in range(3):
            await poller.round()
            clock.now += 301
        lister.answers[(MODEL, "master")] = (ModelVersion(V1, T0),)
        await poller.round()
    errors = rig.metrics.version_list_errors
    assert errors.labels("model_not_found")._value.get() == 3
    assert errors.labels("unsupported_model_source")._value.get() == 4
    assert bus.events == []
    assert {r.target.rid: r.version for r in tracker} == versions
    assert all(r.lag is None for r in tracker)
    logged = [(line["event"], line["model_rid"]) for line in json_lines(stream.getvalue())]
    assert sorted(logged) == sorted(
        [
            ("version_listing_failed", MODEL),
            ("version_listing_failed", OTHER_MODEL),
            ("version_listing_recovered", MODEL),
        ]
    )


async def test_run_lists_at_start() -> None:
    """The task lists every followed branch as soon as it starts."""
    rig = setup()
    poller, lister, tracker = rig.poller, rig.lister, rig.tracker
    watch(tracker, 0, deployment(0))
    async with anyio.create_task_group() as tg:
        await tg.start(poller.run)
        with anyio.fail_after(5):
            while not lister.calls:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert lister.calls == Counter({(MODEL, "master"): 1})
