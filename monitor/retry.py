"""Retrying: a failed request per a ``RetryConfig`` (which errors, how long to wait: backoff, Retry-After),
and the jittered, capped backoff of a loop whose rounds fail."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from monitor.config import RetryConfig
from monitor.errors import FoundryError, ServerError


def backoff_ceiling(initial: float, maximum: float, attempt: int) -> float:
    """The capped exponential wait after failure ``attempt`` (1-based): ``initial * 2**(attempt-1)``."""
    return min(maximum, initial * 2.0 ** min(attempt - 1, 32))


@dataclass(slots=True)
class Backoff:
    """Waits between failed rounds: a capped exponential ceiling per failure in a row, jittered below it."""

    initial: float
    maximum: float
    failures: int = 0

    def failed(self) -> float:
        """Count a failure; the wait before the next round."""
        self.failures += 1
        ceiling = backoff_ceiling(self.initial, self.maximum, self.failures)
        return random.uniform(ceiling / 2, ceiling)

    def succeeded(self) -> None:
        self.failures = 0


def should_retry(policy: RetryConfig, error: FoundryError, attempt: int) -> bool:
    """Whether attempt number ``attempt`` (1-based) that failed with ``error`` gets another try."""
    if attempt >= policy.attempts:
        return False
    if isinstance(error, ServerError):
        return error.is_gateway_error
    return error.retryable


def backoff(policy: RetryConfig, attempt: int, rng: random.Random) -> float:
    """Full jitter (AWS architecture blog): uniform over [0, min(max, initial * 2**(attempt-1))]."""
    return rng.uniform(0.0, backoff_ceiling(policy.backoff_initial, policy.backoff_max, attempt))


def delay(policy: RetryConfig, error: FoundryError, attempt: int, rng: random.Random) -> float:
    """The wait before the next attempt: the server's Retry-After when it gave one, else backoff."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return min(float(retry_after), policy.retry_after_max)
    return backoff(policy, attempt, rng)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # isdigit alone admits "²" and other Unicode digits, which float() refuses or the RFC does not allow.
    if text.isascii() and text.isdigit():
        return float(text[:12])
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())
