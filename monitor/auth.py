"""Where bearer tokens come from: a static token, a rotated token file, or OAuth2 client credentials."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import anyio
import structlog

from monitor.errors import ConnectionFailed, RequestTimeout, Unauthorized

log = structlog.get_logger(__name__)


class Secret:
    """A string that never shows itself in ``repr``/``str``: tokens travel in these."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class TokenSource(Protocol):
    """Supplies the bearer token for each request."""

    async def token(self) -> Secret:
        """The token to send now (fetching or re-reading it first when needed)."""
        ...

    async def invalidate(self, token: Secret) -> bool:
        """Called after a 401 with the token that was refused.

        Returns True when a different token may now be had, so that one retry is worth it.
        """
        ...


class StaticToken:
    """One token for the life of the process (``FOUNDRY_TOKEN`` or the config)."""

    def __init__(self, token: str) -> None:
        self._token = Secret(token)

    async def token(self) -> Secret:
        return self._token

    async def invalidate(self, token: Secret) -> bool:
        return False


class TokenFile:
    """A token read from a file and re-read when the file changes, so a rotated Kubernetes secret works.

    The file's identity (inode, size, mtime) is checked at most every ``check_interval`` seconds, and at
    once after a 401.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = Path(path)
        self._check_interval = check_interval
        self._clock = clock
        self._identity: tuple[int, int, int] | None = None
        self._token: Secret | None = None
        self._checked_at = -math.inf

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = self._path.stat()
        except OSError as exc:
            raise Unauthorized(
                f"token file {self._path} cannot be read ({exc.strerror})", status=401
            ) from None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload_if_changed(self) -> bool:
        self._checked_at = self._clock()
        identity = self._stat()
        if identity == self._identity and self._token is not None:
            return False
        try:
            text = self._path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise Unauthorized(f"token file {self._path} cannot be read", status=401) from None
        if not text:
            raise Unauthorized(f"token file {self._path} is empty", status=401)
        changed = self._token is not None and self._token.reveal() != text
        if changed:
            log.info("token_file_reloaded", path=str(self._path))
        self._identity = identity
        self._token = Secret(text)
        return changed

    async def token(self) -> Secret:
        if self._token is None or self._clock() - self._checked_at >= self._check_interval:
            self._reload_if_changed()
        assert self._token is not None
        return self._token

    async def invalidate(self, token: Secret) -> bool:
        if self._token is not None and self._token != token:
            return True  # already rotated since that request was sent
        return self._reload_if_changed()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An access token and the monotonic time at which it should be replaced."""

    value: Secret
    refresh_at: float


class ClientCredentials:
    """OAuth2 client credentials: refreshed ahead of expiry, one refresh in flight however many wait."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str = "api:models-read",
        user_agent: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = Secret(client_secret)
        self._scope = scope
        self._user_agent = user_agent
        self._clock = clock
        self._current: IssuedToken | None = None
        self._lock = anyio.Lock()
        #: How many tokens were fetched: a metric and a way for tests to prove single flight.
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self._client_id!r}, token_url={self._token_url!r})"

    def _fresh(self) -> Secret | None:
        current = self._current
        if current is not None and self._clock() < current.refresh_at:
            return current.value
        return None

    async def token(self) -> Secret:
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        async with self._lock:
            # Whoever held the lock before us may have refreshed already.
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            self._current = await self._fetch()
            self.refreshes += 1
            return self._current.value

    async def invalidate(self, token: Secret) -> bool:
        current = self._current
        if current is not None and current.value == token:
            self._current = None
        return True

    async def _fetch(self) -> IssuedToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.reveal(),
            "scope": self._scope,
        }
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        started = self._clock()
        try:
            async with self._session.post(
                self._token_url, data=form, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                payload = await response.json(content_type=None) if status == 200 else None
        except TimeoutError as exc:
            raise RequestTimeout("token request timed out") from exc
        except aiohttp.ClientResponseError:
            # Its request_info would carry the form's secret into tracebacks.
            raise ConnectionFailed("token request failed") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise ConnectionFailed(f"token request failed ({type(exc).__name__})") from exc
        if status != 200:
            raise Unauthorized(f"token endpoint answered {status}", status=401)
        if not isinstance(payload, dict):
            raise Unauthorized("token endpoint answered without a token", status=401)
        access = payload.get("access_token")
        expires_in = payload.get("expires_in", 3600)
        if (
            not isinstance(access, str)
            or not access
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
        ):
            raise Unauthorized("token endpoint answered without a usable token", status=401)
        lifetime = max(0.0, float(expires_in))
        # Refresh a minute early (or at 80% of a short lifetime) so no request carries a dying token.
        margin = min(60.0, lifetime * 0.2)
        return IssuedToken(value=Secret(access), refresh_at=started + lifetime - margin)
