"""Access control for the HTTP endpoints: basic auth against bcrypt hashes, and a limit on failed attempts."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio

#: Worker threads bcrypt may hold at once: a check never runs on the event loop, nor takes every thread.
CHECK_THREADS = 2
#: Checks queued for those threads past which a new attempt is turned away instead of queued.
MAX_QUEUED_CHECKS = 32
#: Failed attempts one client may make in a row, then how many more it regains per minute.
FAILURE_BURST = 10
FAILURES_PER_MINUTE = 6.0
#: Clients whose failures are tracked; past this the one untouched longest is forgotten.
MAX_TRACKED_CLIENTS = 4096
#: Successful checks remembered, so that a scrape every few seconds costs no bcrypt round.
MAX_REMEMBERED = 256


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a check: let through, refused (401), or told to come back later (429)."""

    allowed: bool
    retry_after: int | None = None


ALLOWED = Verdict(allowed=True)
DENIED = Verdict(allowed=False)


def client_key(remote: str | None) -> str:
    """Who a failure is counted against: the address, or its /64 for IPv6 (one host owns a whole /64)."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailureLimiter:
    """A token bucket of failed attempts per client, bounded in memory.

    An attempt takes a token before any work is done and a success gives it back, so a client cannot
    start more checks at once than it has tokens. A client whose bucket is full again is forgotten.
    """

    def __init__(
        self,
        *,
        burst: int = FAILURE_BURST,
        per_minute: float = FAILURES_PER_MINUTE,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._rate = per_minute / 60.0
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self._burst
        tokens, stamp = entry
        return min(self._burst, tokens + (now - stamp) * self._rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        if tokens >= self._burst:
            self._buckets.pop(key, None)
            return
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)

    def take(self, key: str) -> int | None:
        """Take a token for an attempt; ``None`` if one was free, else the whole seconds until one is."""
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            return max(1, math.ceil((1.0 - tokens) / self._rate))
        self._store(key, tokens - 1.0, now)
        return None

    def give_back(self, key: str) -> None:
        """Return the token of an attempt that succeeded."""
        now = self._clock()
        self._store(key, self._tokens(key, now) + 1.0, now)


class _Check:
    """One bcrypt check in flight, which identical attempts arriving meanwhile wait for."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.ok = False


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes, as the Prometheus exporter toolkit does.

    bcrypt is slow on purpose, so it runs in a few worker threads, behind a per-client limit on failures
    that answers before any bcrypt work. A successful check is remembered (by a keyed digest, never the
    password); a remembered one passes even from a client that is over its limit.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        failures: FailureLimiter | None = None,
        threads: int = CHECK_THREADS,
        max_queued: int = MAX_QUEUED_CHECKS,
        max_remembered: int = MAX_REMEMBERED,
    ) -> None:
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        # An unknown user is checked against some real hash, so that its answer takes as long.
        self._decoy = next(iter(self._users.values()), b"")
        self._key = secrets.token_bytes(32)
        self._failures = FailureLimiter() if failures is None else failures
        self._threads = anyio.CapacityLimiter(threads)
        self._max_queued = max_queued
        self._max_remembered = max_remembered
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._checks: dict[bytes, _Check] = {}

    async def check(self, header: str | None, remote: str | None) -> Verdict:
        """Whether the request with this ``Authorization`` header from ``remote`` may pass."""
        if header is None:
            # No credentials at all is how a browser starts: it gets the challenge, not a strike.
            return DENIED
        key = client_key(remote)
        credentials = _credentials(header)
        if credentials is None:
            return self._limited(key) or DENIED
        memo = hmac.new(self._key, credentials, hashlib.sha256).digest()
        if memo in self._verified:
            self._verified.move_to_end(memo)
            return ALLOWED
        limited = self._limited(key)
        if limited is not None:
            return limited
        if memo not in self._checks and len(self._checks) >= self._max_queued:
            # Every thread is taken and the queue is long: refusing now is cheaper than queueing.
            self._failures.give_back(key)
            return Verdict(allowed=False, retry_after=1)
        if not await self._verify(memo, credentials):
            return DENIED
        self._failures.give_back(key)
        self._verified[memo] = None
        while len(self._verified) > self._max_remembered:
            self._verified.popitem(last=False)
        return ALLOWED

    def _limited(self, key: str) -> Verdict | None:
        """Counts an attempt against ``key``: ``None`` if it may go on, else the 429 to answer."""
        wait = self._failures.take(key)
        return None if wait is None else Verdict(allowed=False, retry_after=wait)

    async def _verify(self, memo: bytes, credentials: bytes) -> bool:
        check = self._checks.get(memo)
        if check is not None:
            await check.done.wait()
            return check.ok
        check = self._checks[memo] = _Check()
        try:
            user, _, password = credentials.partition(b":")
            hashed = self._users.get(user.decode())
            matched = await anyio.to_thread.run_sync(
                _checkpw, password, hashed or self._decoy, limiter=self._threads
            )
            check.ok = matched and hashed is not None
        finally:
            del self._checks[memo]
            check.done.set()
        return check.ok


def _credentials(header: str) -> bytes | None:
    """The ``user:password`` bytes of a well-formed basic ``Authorization`` header, else ``None``."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.isascii():
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True)
        decoded.decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded if b":" in decoded else None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    # Imported with the first check: a monitor without basic auth never loads bcrypt (~0.4 MB).
    import bcrypt

    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        # A password past bcrypt's 72 bytes, or a hash that is not one.
        return False
