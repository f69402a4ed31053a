"""The Foundry client of live deployments and model versions: one aiohttp session, typed errors, retries,
token refresh on 401."""

from __future__ import annotations

import json
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
import anyio
import structlog
from yarl import URL

from monitor import USER_AGENT
from monitor import retry as retries
from monitor.auth import Secret, TokenSource
from monitor.config import RetryConfig, TimeoutsConfig, normalize_base_url
from monitor.decode import Decoder
from monitor.errors import (
    ApiError,
    ApiNotFound,
    BodyTooLarge,
    ConnectionFailed,
    FoundryError,
    InvalidArgument,
    InvalidRid,
    LiveDeploymentNotFound,
    ModelNotFound,
    PermissionDenied,
    PreviewRequired,
    RateLimited,
    RequestTimeout,
    ServerError,
    Unauthorized,
    Unavailable,
    UnsupportedLiveDeployment,
    UnsupportedModelSource,
    WrongShape,
)
from monitor.model import LiveDeployment, ModelVersion, is_valid_rid
from monitor.retry import parse_retry_after

log = structlog.get_logger(__name__)

_API_PATH = "/api/v2/models/liveDeployments"
_MODELS_PATH = "/api/v2/models"
#: A version listing asks for this many per page, and gives up past these caps (a server could page forever).
VERSIONS_PAGE_SIZE = 100
MAX_VERSION_PAGES = 100
MAX_VERSIONS = 10_000


class RequestGate(Protocol):
    """Admission for each attempt sent upstream: the global request budget and concurrency limit."""

    def slot(self) -> AbstractAsyncContextManager[object]:
        """Held for the duration of one HTTP attempt."""
        ...


class RequestObserver(Protocol):
    """Told about every attempt: ``code`` is the HTTP status, or ``timeout`` / ``connection``."""

    def request_done(self, code: str, seconds: float) -> None: ...


class _OpenGate:
    def slot(self) -> AbstractAsyncContextManager[object]:
        return nullcontext()


class _NoObserver:
    def request_done(self, code: str, seconds: float) -> None:
        return None


def client_timeout(timeouts: TimeoutsConfig) -> aiohttp.ClientTimeout:
    """Per-attempt timeouts. ``read`` bounds each socket read: a total alone can hang on a stalled body."""
    return aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read)


def ssl_context(*, ca_bundle: str | None = None, insecure_skip_verify: bool = False) -> ssl.SSLContext | bool:
    """The TLS setting for the session: verified by default, a CA bundle on request, off only when asked."""
    if insecure_skip_verify:
        log.warning("tls_verification_disabled", reason="foundry.tls.insecure_skip_verify is set")
        return False
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=ca_bundle)
    return True


def _envelope(body: bytes) -> dict[str, Any] | None:
    """The Foundry error envelope in ``body``, or None when the body is not one."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("errorCode") or parsed.get("errorName"), str):
        return parsed
    return None


def error_for_status(
    status: int,
    body: bytes,
    retry_after: str | None,
    *,
    rid: str | None,
    not_found: type[ApiError] = LiveDeploymentNotFound,
) -> ApiError:
    """Map an error status and body to the error tree. The message carries no body text.

    A 404 with an envelope is ``not_found``, the endpoint's own (a deployment's by default), unless the
    envelope names ``ModelNotFound``.
    """
    envelope = _envelope(body)
    code = envelope.get("errorCode") if envelope else None
    name = envelope.get("errorName") if envelope else None
    instance = envelope.get("errorInstanceId") if envelope else None
    error_code = code if isinstance(code, str) else None
    error_name = name if isinstance(name, str) else None
    detail = f"{status} {error_name or error_code or 'without an error envelope'}"
    cls: type[ApiError]
    if status == 400:
        cls = {
            "UnsupportedLiveDeployment": UnsupportedLiveDeployment,
            "UnsupportedModelSource": UnsupportedModelSource,
            "ApiFeaturePreviewUsageOnly": PreviewRequired,
        }.get(error_name or "", InvalidArgument)
    elif status == 401:
        cls = Unauthorized
    elif status == 403:
        cls = PermissionDenied
    elif status == 404:
        if envelope is None:
            cls = ApiNotFound
        else:
            cls = ModelNotFound if error_name == "ModelNotFound" else not_found
    elif status == 429:
        cls = RateLimited
    elif status == 503:
        cls = Unavailable
    elif status >= 500:
        cls = ServerError
    elif 400 <= status < 500:
        cls = InvalidArgument
    else:
        cls = ApiError
    return cls(
        f"Foundry answered {detail}" + (f" for {rid}" if rid else ""),
        status=status,
        rid=rid,
        error_code=error_code,
        error_name=error_name,
        error_instance_id=instance if isinstance(instance, str) else None,
        retry_after=parse_retry_after(retry_after),
    )


class FoundryClient:
    """Reads live deployments and model versions. Read-only: it never calls the mutating endpoints."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        tokens: TokenSource,
        decoder: Decoder,
        retry: RetryConfig | None = None,
        max_body_bytes: int = 1 << 20,
        gate: RequestGate | None = None,
        observer: RequestObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._base = normalize_base_url(base_url)
        self._tokens = tokens
        self._decoder = decoder
        self._retry = retry or RetryConfig()
        self._max_body = max_body_bytes
        self._gate: RequestGate = gate or _OpenGate()
        self._observer: RequestObserver = observer or _NoObserver()
        self._sleep = sleep
        self._rng = rng or random.Random()
        #: The last answer per RID, by the hash of its bytes: an unchanged body skips decoding entirely.
        self._last: dict[str, tuple[int, int, LiveDeployment]] = {}

    def __repr__(self) -> str:
        return f"FoundryClient(base_url={self._base!r})"

    @property
    def base_url(self) -> str:
        return self._base

    def url_for(self, rid: str) -> URL:
        """The get URL for ``rid``: percent-encoded in the path (dots stay), always ``preview=true``."""
        return self._url_of_encoded(quote(rid, safe="."))

    def _url_of_encoded(self, rid: str) -> URL:
        return URL(f"{self._base}{_API_PATH}/{rid}?preview=true", encoded=True)

    async def get_live_deployment(self, rid: str) -> LiveDeployment:
        """The current state of one deployment; raises a ``FoundryError`` subclass on any failure."""
        if not is_valid_rid(rid):
            raise InvalidRid("not a valid RID", rid=None)
        # A valid RID is made of unreserved URL characters only: quoting it would change nothing.
        body = await self._request(self._url_of_encoded(rid), rid=rid)
        fingerprint = (len(body), hash(body))
        last = self._last.get(rid)
        if last is not None and last[:2] == fingerprint:
            return last[2]
        try:
            snapshot = self._decoder.live_deployment(body, expected_rid=rid)
        except FoundryError as exc:
            exc.rid = rid
            raise
        self._last[rid] = (*fingerprint, snapshot)
        return snapshot

    def forget(self, rid: str) -> None:
        """Drop what is remembered of ``rid`` (it is no longer watched)."""
        self._last.pop(rid, None)

    async def list_live_deployments(
        self, model_rid: str, branch: str | None = None
    ) -> tuple[LiveDeployment, ...]:
        """The direct deployments of one model (the list endpoint is unpaginated)."""
        if not is_valid_rid(model_rid):
            raise InvalidRid("not a valid model RID")
        query = {"modelRid": model_rid, "preview": "true"}
        if branch is not None:
            query["branch"] = branch
        url = URL(f"{self._base}{_API_PATH}?{urlencode(query)}", encoded=True)
        body = await self._request(url, rid=model_rid)
        return self._decoder.live_deployment_list(body)

    async def list_model_versions(
        self,
        model_rid: str,
        branch: str,
        *,
        page_size: int = VERSIONS_PAGE_SIZE,
        max_pages: int = MAX_VERSION_PAGES,
        max_versions: int = MAX_VERSIONS,
    ) -> tuple[ModelVersion, ...]:
        """Every version of ``branch`` of one model, following ``nextPageToken`` to the last page.

        Each page is one request through the same path as a poll (token, retries, gate, observer, body cap).
        Any 404 with an envelope is ``ModelNotFound``. A page token seen before, or more than ``max_pages``
        pages or ``max_versions`` versions, is ``WrongShape`` at ``nextPageToken``: a partial listing could
        miss the newest version, so none is returned.
        """
        if not is_valid_rid(model_rid):
            raise InvalidRid("not a valid model RID")
        versions: list[ModelVersion] = []
        seen: set[str] = set()
        token: str | None = None
        for _ in range(max_pages):
            query = {"branch": branch, "pageSize": str(page_size)}
            if token is not None:
                query["pageToken"] = token
            query["preview"] = "true"
            # A valid RID is made of unreserved URL characters only: it goes in the path as it is.
            url = URL(f"{self._base}{_MODELS_PATH}/{model_rid}/versions?{urlencode(query)}", encoded=True)
            body = await self._request(url, rid=model_rid, not_found=ModelNotFound)
            try:
                page, token = self._decoder.model_version_page(body)
            except FoundryError as exc:
                exc.rid = model_rid
                raise
            versions.extend(page)
            if len(versions) > max_versions:
                raise WrongShape(
                    f"version listing is over {max_versions} versions", path="nextPageToken", rid=model_rid
                )
            if token is None:
                return tuple(versions)
            if token in seen:
                raise WrongShape("version listing repeats a page token", path="nextPageToken", rid=model_rid)
            seen.add(token)
        raise WrongShape(f"version listing is over {max_pages} pages", path="nextPageToken", rid=model_rid)

    async def _request(
        self, url: URL, *, rid: str, not_found: type[ApiError] = LiveDeploymentNotFound
    ) -> bytes:
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            token = await self._tokens.token()
            try:
                return await self._attempt(url, token, rid=rid, not_found=not_found)
            except Unauthorized:
                # One fresh token and one retry; a second 401 is the answer.
                if refreshed or not await self._tokens.invalidate(token):
                    raise
                refreshed = True
                attempt -= 1
            except FoundryError as exc:
                if not retries.should_retry(self._retry, exc, attempt):
                    raise
                delay = retries.delay(self._retry, exc, attempt, self._rng)
                log.debug("retrying", rid=rid, error=exc.kind, attempt=attempt, delay=round(delay, 3))
                await self._sleep(delay)

    async def _attempt(self, url: URL, token: Secret, *, rid: str, not_found: type[ApiError]) -> bytes:
        headers = {
            "Authorization": "Bearer " + token.reveal(),
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        started = time.perf_counter()
        code = "connection"
        try:
            async with (
                self._gate.slot(),
                self._session.get(url, headers=headers, allow_redirects=False) as response,
            ):
                code = str(response.status)
                body = await self._read_capped(response, rid)
                if response.status != 200:
                    raise error_for_status(
                        response.status,
                        body,
                        response.headers.get("Retry-After"),
                        rid=rid,
                        not_found=not_found,
                    )
                return body
        except TimeoutError as exc:
            code = "timeout"
            raise RequestTimeout("request timed out", rid=rid) from exc
        except aiohttp.ClientResponseError:
            # Its request_info holds our request headers, bearer token included: keep it out of tracebacks.
            raise ConnectionFailed("malformed HTTP answer", rid=rid) from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"connection failed ({type(exc).__name__})", rid=rid) from exc
        finally:
            self._observer.request_done(code, time.perf_counter() - started)

    async def _read_capped(self, response: aiohttp.ClientResponse, rid: str) -> bytes:
        length = response.content_length
        if length is not None and length > self._max_body:
            raise BodyTooLarge(f"body of {length} bytes is over the cap", rid=rid)
        if length is not None and "Content-Encoding" not in response.headers:
            # Identity encoding: aiohttp reads no more than the declared length, which is within the cap; the
            # check after reading keeps the cap whatever the transport does.
            body = await response.read()
            if len(body) > self._max_body:
                raise BodyTooLarge("body is over the cap", rid=rid)
            return body
        # Content-Length counts the bytes on the wire: a compressed body inflates past it, so the decoded
        # stream is counted whatever the header said.
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > self._max_body:
                raise BodyTooLarge("body is over the cap", rid=rid)
            chunks.append(chunk)
        return b"".join(chunks)


def open_session(
    *, timeouts: TimeoutsConfig, ssl_setting: ssl.SSLContext | bool = True, limit: int = 100
) -> aiohttp.ClientSession:
    """The one client session of the process: pooled connections, timeouts, TLS settings."""
    connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_setting, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=client_timeout(timeouts),
        raise_for_status=False,
        auto_decompress=True,
    )


@asynccontextmanager
async def session_scope(session: aiohttp.ClientSession) -> AsyncIterator[aiohttp.ClientSession]:
    """Close ``session`` on exit, shielded and bounded so a cancelled service still releases sockets."""
    try:
        yield session
    finally:
        with anyio.move_on_after(5, shield=True):
            await session.close()
