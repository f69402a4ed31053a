"""Tests for monitor.budget: the request budget's token bucket and concurrency cap."""

from __future__ import annotations

import anyio
import pytest

from monitor.budget import RequestBudget, TokenBucket


class FakeTime:
    """A clock whose sleep advances it instantly, recording each wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_bucket_never_exceeds_its_rate() -> None:
    """1,000 acquisitions at 50/s take at least (1000 - burst) / 50 seconds of (fake) time."""
    fake = FakeTime()
    bucket = TokenBucket(50.0, burst=5.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(1000):
        await bucket.acquire()
    assert fake.now >= (1000 - 5) / 50 - 1e-6
    assert fake.now <= 1000 / 50 + 1e-6


async def test_bucket_admits_a_burst_without_waiting() -> None:
    """Up to ``burst`` acquisitions go through at once."""
    fake = FakeTime()
    bucket = TokenBucket(10.0, burst=3.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        await bucket.acquire()
    assert fake.sleeps == []
    await bucket.acquire()
    assert fake.sleeps
    assert fake.sleeps[0] == pytest.approx(0.1)


async def test_budget_caps_requests_in_flight() -> None:
    """No more than ``concurrency`` slots are held at once, however many ask."""
    budget = RequestBudget(requests_per_second=1e6, concurrency=3)
    peak = 0
    release = anyio.Event()

    async def worker() -> None:
        nonlocal peak
        async with budget.slot():
            peak = max(peak, budget.in_flight)
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(worker)
        with anyio.fail_after(5):
            while budget.in_flight < 3:
                await anyio.sleep(0)
        release.set()
    assert peak == 3
