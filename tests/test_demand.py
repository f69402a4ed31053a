"""Tests for monitor.demand: the demand of a configuration, the stretch that fits it in the budget, and the
scheduler keeping to it over many rounds on a virtual clock (trio's ``MockClock``: no real waiting)."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
import trio
from trio.testing import MockClock

from monitor.breaker import CircuitBreaker
from monitor.budget import TokenBucket
from monitor.config import BreakerConfig, PollingConfig, parse_config
from monitor.demand import Load, config_demand, demand
from monitor.events import Event
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.scheduler import Scheduler
from monitor.tracker import Target, Tracker

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{:012d}"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "trio", {"clock": MockClock(autojump_threshold=0)}


def polling(**settings: Any) -> PollingConfig:
    return PollingConfig(**{"interval": 30.0, "fast_interval": 5.0, "requests_per_second": 10.0, **settings})


def test_a_demand_within_the_budget_keeps_the_intervals() -> None:
    """200 GETs and 20 lists every 30 s, 10 in transition every 5 s: 9.3 of 9 usable (10 less the reserve)
    would not fit, 150 GETs do: 7.8 a second, the intervals kept."""
    d = demand(polling(), Load(gets=150, fast=10, lists=20))
    assert d.per_minute == pytest.approx(60 * (170 / 30 + 10 / 5))
    assert d.usable_per_minute == pytest.approx(540.0)
    assert d.ratio < 1
    assert (d.interval_stretch, d.fast_stretch) == (1.0, 1.0)
    assert "can be kept" in d.describe()


def test_over_the_budget_settled_intervals_stretch_and_transitions_keep_theirs() -> None:
    """900 GETs every 30 s (30/s) with 10 in transition (2/s) against 9 usable: the fast interval stays,
    the settled interval stretches so that the total fits the usable budget exactly."""
    d = demand(polling(), Load(gets=900, fast=10))
    assert d.over_budget
    assert d.fast_stretch == 1.0
    sent = 900 / d.effective_interval + 10 / d.effective_fast_interval
    assert sent == pytest.approx(9.0)
    assert d.effective_interval == pytest.approx(30 * 30 / 7)
    assert "CANNOT be kept" in d.describe()


def test_transitions_take_at_most_half_the_budget_and_never_wait_longer_than_settled_ones() -> None:
    """100 in transition every 5 s (20/s) take half of the 9 usable; with few settled ones left, the fast
    interval never ends up longer than the settled one."""
    d = demand(polling(), Load(gets=300, fast=100))
    assert 100 / d.effective_fast_interval == pytest.approx(4.5)
    assert 300 / d.effective_interval == pytest.approx(4.5)
    lopsided = demand(polling(fast_interval=25.0), Load(gets=10, fast=1000))
    assert lopsided.effective_fast_interval <= lopsided.effective_interval
    assert 10 / lopsided.effective_interval + 1000 / lopsided.effective_fast_interval == pytest.approx(9.0)


def test_discovery_listings_spend_from_the_same_budget() -> None:
    """What discovery lists a second leaves less for polling."""
    without = demand(polling(), Load(gets=300))
    with_discovery = demand(polling(), Load(gets=300, discovery_per_second=3.0))
    assert with_discovery.per_minute == pytest.approx(without.per_minute + 180)
    assert with_discovery.effective_interval == pytest.approx(300 / 6.0)


def test_the_demand_of_a_configuration_counts_its_deployments_and_listings() -> None:
    """Configured deployments each on their own GET, each discover entry one listing per its interval."""
    config = parse_config(
        {
            "foundry": {"base_url": "http://127.0.0.1:1", "auth": {"token": "t"}},
            "deployments": [{"rid": RID.format(i), "name": f"d{i}"} for i in range(60)],
            "discover": [{"model_rid": "ri.models.main.model.1", "interval": "60s"}],
            "polling": {"interval": "30s", "requests_per_second": 83},
        },
        environ={},
    )
    d = config_demand(config)
    assert d.per_minute == pytest.approx(121.0)
    assert d.budget_per_minute == pytest.approx(4980.0)


class BudgetedReader:
    """Answers every GET at once, after a token from a bucket on the virtual clock; logs each poll's time."""

    def __init__(self, rate: float, starting: set[str]) -> None:
        self.bucket = TokenBucket(rate, clock=trio.current_time)
        self.polled: dict[str, list[float]] = defaultdict(list)
        self.starting = starting

    def forget(self, rid: str) -> None:
        pass

    async def get_live_deployment(self, rid: str) -> LiveDeployment:
        await self.bucket.acquire()
        self.polled[rid].append(trio.current_time())
        return LiveDeployment(
            rid=rid,
            model_rid="ri.models.main.model.1",
            model_version_rid="ri.models.main.model-version.1",
            runtime=RuntimeConfiguration(min_replicas=1, max_replicas=1),
            state="STARTING" if rid in self.starting else "ACTIVE",
            is_ready=rid not in self.starting,
        )

    async def list_live_deployments(
        self, model_rid: str, branch: str | None = None
    ) -> tuple[LiveDeployment, ...]:
        raise AssertionError("pinned deployments are never listed")


class Discard:
    def publish(self, events: Sequence[Event]) -> None:
        pass


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_over_the_budget_every_deployment_is_polled_at_a_bounded_stretched_pace() -> None:
    """190 settled deployments every 10 s and 10 starting every 2 s need 24 requests a second of a budget
    of 10: over 2,000 virtual seconds nobody starves, gaps settle at the stretched interval and do not grow,
    and the starting ones are still polled far more often."""
    rids = [RID.format(i) for i in range(200)]
    starting = set(rids[:10])
    reader = BudgetedReader(10.0, starting)
    metrics = ProcessMetrics()
    scheduler = Scheduler(
        reader=reader,
        tracker=Tracker(),
        bus=Discard(),
        metrics=metrics,
        breaker=CircuitBreaker(BreakerConfig(min_polls=1_000_000)),
        cadence=PollingConfig(interval=10.0, fast_interval=2.0, jitter=0.1, requests_per_second=10.0),
        concurrency=8,
        monotonic=trio.current_time,
    )
    for rid in rids:
        scheduler.add(Target(rid, rid[-4:]))
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await anyio.sleep(2000.0)
        tg.cancel_scope.cancel()
    stretched = scheduler.demand
    assert stretched.over_budget
    assert metrics.registry.get_sample_value("foundry_monitor_request_demand_ratio") == stretched.ratio
    settled = [gaps(reader.polled[rid]) for rid in rids[10:]]
    # Warmed up after the first 200 s: every gap within the jittered stretched interval and a little.
    late = [
        g
        for times, rid in zip(settled, rids[10:], strict=True)
        for g, t in zip(times, reader.polled[rid][1:], strict=False)
        if t > 200
    ]
    bound = stretched.effective_interval * 1.1 + 2.0
    assert max(late) <= bound
    # No lag growing: the last rounds are no slower than the middle ones.
    middle = statistics.mean(g for times in settled for g in times[3:6])
    last = statistics.mean(times[-1] for times in settled)
    assert last <= middle * 1.2
    assert min(len(times) for times in settled) >= 2000 / bound - 3
    fast = [
        g
        for rid in starting
        for g, t in zip(gaps(reader.polled[rid]), reader.polled[rid][1:], strict=False)
        if t > 200
    ]
    assert max(fast) <= stretched.effective_fast_interval * 1.1 + 2.0
    assert statistics.mean(fast) < statistics.mean(late) / 4
    # What was sent fits the budget.
    total = sum(len(times) for times in reader.polled.values())
    assert total <= 10.0 * 2000 + reader.bucket.burst
