"""Tests for monitor.breaker: the upstream circuit breaker."""

from __future__ import annotations

from monitor.breaker import CircuitBreaker
from monitor.config import BreakerConfig

SETTINGS = BreakerConfig(failure_ratio=1.0, min_polls=5, window=60.0, cooldown=30.0)


def _fail(breaker: CircuitBreaker, count: int, at: float = 0.0) -> None:
    for _ in range(count):
        assert breaker.allow(at)
        breaker.record(at, upstream_fault=True)


def test_opens_when_every_recent_poll_is_an_upstream_fault() -> None:
    """min_polls upstream faults in the window open the breaker; then nothing is let through."""
    breaker = CircuitBreaker(SETTINGS)
    _fail(breaker, 4)
    assert breaker.state == "closed"
    _fail(breaker, 1)
    assert breaker.state == "open"
    assert not breaker.allow(10.0)


def test_one_healthy_answer_keeps_it_closed() -> None:
    """With ratio 1.0, a single non-fault (a 4xx answer counts as one) keeps it closed."""
    breaker = CircuitBreaker(SETTINGS)
    _fail(breaker, 3)
    breaker.record(0.0, upstream_fault=False)
    _fail(breaker, 10)
    assert breaker.state == "closed"


def test_old_outcomes_leave_the_window() -> None:
    """Faults older than the window no longer count."""
    breaker = CircuitBreaker(SETTINGS)
    breaker.record(0.0, upstream_fault=False)
    _fail(breaker, 4, at=0.0)
    _fail(breaker, 1, at=61.0)
    assert breaker.state == "closed"
    _fail(breaker, 4, at=62.0)
    assert breaker.state == "open"


def test_after_cooldown_a_single_probe_decides() -> None:
    """Half open lets exactly one probe through; its failure reopens, its success closes."""
    breaker = CircuitBreaker(SETTINGS)
    _fail(breaker, 5)
    assert breaker.reopens_at == 30.0
    assert breaker.allow(30.0)
    assert breaker.state == "half_open"
    assert not breaker.allow(30.1)
    breaker.record(31.0, upstream_fault=True)
    assert breaker.state == "open"
    assert not breaker.allow(60.0)
    assert breaker.allow(61.0)
    breaker.record(61.5, upstream_fault=False)
    assert breaker.state == "closed"
    assert breaker.allow(61.6)


def test_memory_is_bounded_by_the_window_not_the_poll_rate() -> None:
    """A thousand polls a second for five minutes keep at most one bucket per second of the window."""
    breaker = CircuitBreaker(SETTINGS)
    for step in range(300_000):
        breaker.record(step / 1000, upstream_fault=step % 2 == 0)
    assert breaker.state == "closed"
    assert len(breaker._buckets) <= SETTINGS.window + 1
    assert breaker._total == sum(bucket[1] for bucket in breaker._buckets)
