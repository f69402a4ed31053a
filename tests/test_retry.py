"""Tests for monitor.retry: which errors retry, the attempts cap, full jitter, Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import RetryConfig
from monitor.errors import (
    ApiNotFound,
    BodyTooLarge,
    ConnectionFailed,
    FoundryError,
    InvalidArgument,
    InvalidRid,
    LiveDeploymentNotFound,
    NotJson,
    PermissionDenied,
    PreviewRequired,
    RateLimited,
    RequestTimeout,
    ServerError,
    Unauthorized,
    Unavailable,
    UnsupportedLiveDeployment,
    WrongShape,
)
from monitor.retry import backoff, delay, parse_retry_after, should_retry

RETRIED: list[FoundryError] = [
    RateLimited("429", status=429),
    Unavailable("503", status=503),
    ServerError("502", status=502),
    ServerError("504", status=504),
    ConnectionFailed("reset"),
    RequestTimeout("slow"),
]
NEVER_RETRIED: list[FoundryError] = [
    InvalidArgument("400", status=400),
    UnsupportedLiveDeployment("400", status=400),
    PreviewRequired("400", status=400),
    Unauthorized("401", status=401),
    PermissionDenied("403", status=403),
    LiveDeploymentNotFound("404", status=404),
    ApiNotFound("404", status=404),
    ServerError("500", status=500),
    ServerError("501", status=501),
    InvalidRid("bad"),
    NotJson("html"),
    WrongShape("shape"),
    BodyTooLarge("big"),
]


@pytest.mark.parametrize("error", RETRIED, ids=repr)
def test_transient_errors_retry_until_the_attempts_cap(error: FoundryError) -> None:
    """429, 502, 503, 504, connection and timeout get another try while attempts remain, and not after."""
    policy = RetryConfig(attempts=4)
    assert [should_retry(policy, error, attempt) for attempt in (1, 2, 3, 4, 5)] == [
        True,
        True,
        True,
        False,
        False,
    ]


@pytest.mark.parametrize("error", NEVER_RETRIED, ids=repr)
def test_permanent_errors_never_retry(error: FoundryError) -> None:
    """400s, 401, 403, 404, 500, bad RIDs and bad bodies are never retried, even on the first attempt."""
    assert not should_retry(RetryConfig(attempts=10), error, 1)


def test_a_single_attempt_never_retries() -> None:
    """With attempts=1 even a retryable error is final."""
    assert not should_retry(RetryConfig(attempts=1), RateLimited("429", status=429), 1)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 7, 8, 40, 10_000])
def test_backoff_is_full_jitter_under_a_capped_exponential(attempt: int) -> None:
    """Each delay is uniform in [0, min(max, initial * 2**(attempt-1))], drawn from the injected rng."""
    policy = RetryConfig(backoff_initial=0.2, backoff_max=10.0)
    ceiling = min(10.0, 0.2 * 2 ** min(attempt - 1, 32))
    rng, twin = random.Random(7), random.Random(7)
    delays = [backoff(policy, attempt, rng) for _ in range(300)]
    assert delays == [twin.uniform(0.0, ceiling) for _ in range(300)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter spreads over the whole range, not a narrow band near the ceiling.
    assert min(delays) < ceiling * 0.05
    assert max(delays) > ceiling * 0.95


def test_backoff_ceilings_double_then_cap() -> None:
    """The largest delay seen per attempt doubles from the initial value until it reaches backoff_max."""
    policy = RetryConfig(backoff_initial=1.0, backoff_max=5.0)
    rng = random.Random(1)
    highest = [max(backoff(policy, attempt, rng) for _ in range(500)) for attempt in (1, 2, 3, 4, 5)]
    assert [round(h) for h in highest] == [1, 2, 4, 5, 5]
    assert all(h <= c for h, c in zip(highest, [1, 2, 4, 5, 5], strict=True))


def test_delay_uses_backoff_without_retry_after() -> None:
    """An error without Retry-After waits the jittered backoff."""
    policy = RetryConfig(backoff_initial=0.5, backoff_max=4.0)
    error = ConnectionFailed("reset")
    assert delay(policy, error, 3, random.Random(3)) == backoff(policy, 3, random.Random(3))


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(0.0, 0.0), (7.0, 7.0), (60.0, 60.0), (61.0, 60.0), (1e12, 60.0)]
)
def test_delay_honours_retry_after_capped(retry_after: float, expected: float) -> None:
    """A server's Retry-After replaces the backoff, capped by retry_after_max."""
    policy = RetryConfig(backoff_initial=100.0, backoff_max=100.0, retry_after_max=60.0)
    for error in (
        RateLimited("429", status=429, retry_after=retry_after),
        Unavailable("503", status=503, retry_after=retry_after),
    ):
        assert delay(policy, error, 1, random.Random(0)) == expected


def test_retry_after_max_zero_means_retry_at_once() -> None:
    """retry_after_max=0 turns any Retry-After into an immediate retry."""
    assert (
        delay(
            RetryConfig(retry_after_max=0.0),
            RateLimited("429", status=429, retry_after=30.0),
            1,
            random.Random(),
        )
        == 0.0
    )


NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 120 ", 120.0),
        ("007", 7.0),
        ("-1", None),
        ("+5", None),
        ("1.5", None),
        ("1e3", None),
        ("soon", None),
        ("²", None),
        ("٣", None),
        ("12²", None),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("Fri, 02 Jan 2026 04:04:05 +0100", 0.0),
        ("Fri, 02 Jan 2026 03:05:05 -0000", 60.0),
        ("Fri, 02 Jan 2026 03:05:05", 60.0),
        ("Fri, 02 Jan 2026 03:05:05 GMT", 60.0),
        ("Friday, 02-Jan-26 03:05:05 GMT", 60.0),
        ("Fri Jan  2 03:05:05 2026", 60.0),
        ("Fri, 32 Jan 2026 03:05:05 GMT", None),
        ("Fri, 02 Jan 99999 03:05:05 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Delta-seconds (ASCII digits only) and HTTP dates (three formats, naive read as UTC); bad gives None."""
    assert parse_retry_after(header, now=NOW) == expected


def test_parse_retry_after_measures_dates_from_now_by_default() -> None:
    """Without ``now`` a date is measured from the current UTC time."""
    when = datetime.now(UTC) + timedelta(seconds=300)
    delay = parse_retry_after(format_datetime(when, usegmt=True))
    assert delay is not None
    assert 295.0 <= delay <= 300.0


def test_parse_retry_after_accepts_an_aware_now_in_another_zone() -> None:
    """``now`` in a non-UTC zone is the same instant: the delay does not shift by the offset."""
    header = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=NOW.astimezone(timezone(timedelta(hours=5)))) == 30.0


@settings(max_examples=300)
@given(
    st.text(max_size=40)
    | st.from_regex(
        r"\A[A-Z][a-z]{2}, [0-9]{1,2} [A-Z][a-z]{2} [0-9]{1,5} [0-9:]{5,8} [A-Z+-][A-Z0-9]{2,4}\Z"
    )
)
def test_parse_retry_after_never_raises(header: str) -> None:
    """Any header text gives None or a non-negative number of seconds."""
    result = parse_retry_after(header, now=NOW)
    assert result is None or result >= 0.0
