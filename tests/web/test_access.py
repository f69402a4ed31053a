"""Tests for monitor.web.access: basic auth off the event loop and the per-client limit on failures."""

from __future__ import annotations

import base64
from collections.abc import Callable

import anyio
import bcrypt
import pytest

from monitor.web.access import ALLOWED, DENIED, BasicAuth, FailureLimiter, Verdict, client_key
from tests.conftest import FakeClock
from tests.web.conftest import HASH, PASSWORD, basic

pytestmark = pytest.mark.anyio

HOST = "192.0.2.7"


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The passwords bcrypt is asked to check, in order (the real check still runs)."""
    calls: list[bytes] = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer x",
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b"prometheus:\xff").decode(),
        "Basic \u00e9t\u00e9",
        "Basic \udcff\udcfe",
    ],
)
async def test_malformed_headers_are_refused_without_bcrypt(header: str, bcrypt_calls: list[bytes]) -> None:
    """Garbage in the Authorization header (non-ASCII included, which used to raise) is a plain refusal."""
    assert await BasicAuth({"prometheus": HASH}).check(header, HOST) == DENIED
    assert bcrypt_calls == []


async def test_right_password_passes_and_is_remembered(bcrypt_calls: list[bytes]) -> None:
    """The right password passes (the scheme's case does not matter); the second time costs no bcrypt."""
    auth = BasicAuth({"prometheus": HASH})
    assert await auth.check(basic("prometheus", PASSWORD), HOST) == ALLOWED
    assert await auth.check(basic("prometheus", PASSWORD).replace("Basic", "basic"), HOST) == ALLOWED
    assert len(bcrypt_calls) == 1
    assert await auth.check(basic("prometheus", "wrong"), HOST) == DENIED
    assert await auth.check(None, HOST) == DENIED


async def test_unknown_user_and_overlong_password_are_refused_after_a_real_check(
    bcrypt_calls: list[bytes],
) -> None:
    """An unknown user costs a bcrypt check like a known one (its refusal takes as long); a password past
    bcrypt's 72 bytes is a refusal, not an error."""
    auth = BasicAuth({"prometheus": HASH})
    assert await auth.check(basic("nobody", PASSWORD), HOST) == DENIED
    assert await auth.check(basic("prometheus", "x" * 100), HOST) == DENIED
    assert len(bcrypt_calls) == 2


async def test_past_its_burst_a_client_is_told_to_wait_and_costs_no_bcrypt(bcrypt_calls: list[bytes]) -> None:
    """After ``burst`` failures, attempts get a retry delay before any bcrypt work, the right password
    included; another client is unaffected, and remembered credentials pass even from the limited one."""
    auth = BasicAuth({"prometheus": HASH}, failures=FailureLimiter(burst=3, per_minute=6))
    for attempt in range(3):
        assert await auth.check(basic("prometheus", f"no-{attempt}"), HOST) == DENIED
    assert await auth.check(basic("prometheus", "no-3"), HOST) == Verdict(allowed=False, retry_after=10)
    assert await auth.check(basic("prometheus", PASSWORD), HOST) == Verdict(allowed=False, retry_after=10)
    assert len(bcrypt_calls) == 3
    assert await auth.check(basic("prometheus", PASSWORD), "192.0.2.8") == ALLOWED
    assert await auth.check(basic("prometheus", PASSWORD), HOST) == ALLOWED
    assert len(bcrypt_calls) == 4


async def test_identical_attempts_in_flight_share_one_bcrypt_check(bcrypt_calls: list[bytes]) -> None:
    """Four concurrent attempts with the same wrong password cost one bcrypt check, and all are refused."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    auth = BasicAuth({"prometheus": hashed})
    verdicts: list[Verdict] = []

    async def attempt() -> None:
        verdicts.append(await auth.check(basic("prometheus", "wrong"), HOST))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(attempt)
    assert verdicts == [DENIED] * 4
    assert len(bcrypt_calls) == 1


async def test_attempts_past_the_queue_are_turned_away() -> None:
    """While ``max_queued`` checks wait for a thread, a new attempt gets a retry delay instead of queueing."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    auth = BasicAuth({"prometheus": hashed}, threads=1, max_queued=1)
    verdicts: dict[str, Verdict] = {}

    async def attempt(password: str) -> None:
        verdicts[password] = await auth.check(basic("prometheus", password), HOST)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt, "first")
            tg.start_soon(attempt, "second")
    assert verdicts == {"first": DENIED, "second": Verdict(allowed=False, retry_after=1)}


def test_limiter_refills_at_its_rate(fake_clock: FakeClock) -> None:
    """A bucket of ``burst`` tokens refills at ``per_minute``; the wait is rounded up to whole seconds."""
    limiter = FailureLimiter(burst=2, per_minute=60, clock=fake_clock)
    assert limiter.take(HOST) is None
    assert limiter.take(HOST) is None
    assert limiter.take(HOST) == 1
    fake_clock.advance(0.5)
    assert limiter.take(HOST) == 1
    fake_clock.advance(0.5)
    assert limiter.take(HOST) is None
    assert limiter.take(HOST) == 1


def test_limiter_forgets_the_client_untouched_longest(fake_clock: FakeClock) -> None:
    """Past ``max_clients`` the oldest client is forgotten, so a spray of addresses cannot grow it; a
    client whose bucket is full again is not kept at all."""
    limiter = FailureLimiter(burst=1, per_minute=1, max_clients=3, clock=fake_clock)
    for n in range(1000):
        assert limiter.take(f"198.51.100.{n % 250}-{n}") is None
        assert len(limiter) <= 3
    assert limiter.take("198.51.100.0-0") is None
    fresh = FailureLimiter(burst=2, per_minute=1, clock=fake_clock)
    fresh.take(HOST)
    fresh.give_back(HOST)
    assert len(fresh) == 0


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::2", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, ""),
        ("not-an-address", "not-an-address"),
    ],
)
def test_failures_count_per_address_and_per_ipv6_64(remote: str | None, key: str) -> None:
    """IPv4 addresses count apart; IPv6 ones by /64, which a single host usually owns whole."""
    assert client_key(remote) == key
