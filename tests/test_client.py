"""Tests for monitor.client: every error kind, retries and backoff, token refresh, request shape, no leaks.

Most tests answer requests with aioresponses; a few run a raw HTTP server on 127.0.0.1 for what a mock
cannot show (compressed bodies, stalled and cut-off connections, the bytes on the wire).
"""

from __future__ import annotations

import errno
import gzip
import json
import random
import re
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from structlog.testing import capture_logs
from yarl import URL

from monitor import USER_AGENT, errors
from monitor.auth import ClientCredentials, StaticToken, TokenFile, TokenSource
from monitor.client import (
    FoundryClient,
    client_timeout,
    error_for_status,
    open_session,
    session_scope,
    ssl_context,
)
from monitor.config import RetryConfig, TimeoutsConfig, normalize_base_url
from monitor.decode import Decoder
from monitor.errors import (
    ERROR_KINDS,
    ApiError,
    ApiNotFound,
    BodyTooLarge,
    ConnectionFailed,
    FoundryError,
    InvalidArgument,
    InvalidRid,
    LiveDeploymentNotFound,
    ModelNotFound,
    NotJson,
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
from monitor.model import ModelVersion, latest_version
from monitor.retry import backoff
from tests.conftest import API_EXAMPLES_DIR, FakeClock, MockedHttp, RecordingSleep, rendered

# Marked here, not only by the root conftest's late marking, so parametrized coroutine tests keep their
# parameters (anyio's plugin rebuilds late-marked items with the backend as their only parameter).
pytestmark = pytest.mark.anyio

BASE = "https://foundry.test"
RID = "ri.foundry-ml-live.main.live-deployment.f351c142-0e4c-4b12-adc2-6e1539737ae9"
MODEL_RID = "ri.models.main.model.f351c142-0e4c-4b12-adc2-6e1539737ae9"
GET_URL = f"{BASE}/api/v2/models/liveDeployments/{RID}?preview=true"
TOKEN_URL = f"{BASE}/multipass/api/oauth2/token"
SENTINEL = "tok-SENTINEL-3f9a0c"
CLIENT_SECRET = "client-secret-SENTINEL-b7d2"
SEED = 20240611


def example(name: str) -> bytes:
    return (API_EXAMPLES_DIR / name).read_bytes()


DOCS_BODY = example("get-live-deployment.docs.json")
NOT_FOUND_BODY = example("error-not-found.json")
UNSUPPORTED_BODY = example("error-unsupported.json")
PREVIEW_BODY = json.dumps(
    {**json.loads(UNSUPPORTED_BODY), "errorName": "ApiFeaturePreviewUsageOnly"}
).encode()
HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


def envelope(code: str, name: str) -> bytes:
    return json.dumps(
        {"errorCode": code, "errorName": name, "errorInstanceId": "0000-1111", "parameters": {}}
    ).encode()


def make_client(
    session: aiohttp.ClientSession,
    *,
    tokens: TokenSource | None = None,
    attempts: int = 3,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    rng: random.Random | None = None,
    max_body: int = 1 << 20,
    retry: RetryConfig | None = None,
    base_url: str = BASE,
    **kwargs: Any,
) -> FoundryClient:
    return FoundryClient(
        session=session,
        base_url=base_url,
        tokens=tokens or StaticToken(SENTINEL),
        decoder=Decoder(b"k" * 32),
        retry=retry or RetryConfig(attempts=attempts, backoff_initial=0.2, backoff_max=10.0),
        max_body_bytes=max_body,
        sleep=sleep or RecordingSleep(),
        rng=rng or random.Random(SEED),
        **kwargs,
    )


# --- every error kind -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One way a GET can go, the error it must end in, and how many GETs that takes with 3 attempts."""

    id: str
    answer: dict[str, Any]
    error: type[FoundryError]
    gets: int = 1
    max_body: int = 1 << 20
    attrs: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "400-unsupported",
        {"status": 400, "body": UNSUPPORTED_BODY},
        UnsupportedLiveDeployment,
        attrs={
            "status": 400,
            "error_code": "INVALID_ARGUMENT",
            "error_name": "UnsupportedLiveDeployment",
            "error_instance_id": "8e7d6c5b-4a39-4281-b0c9-d8e7f6a5b4c3",
        },
    ),
    Case(
        "400-preview",
        {"status": 400, "body": PREVIEW_BODY},
        PreviewRequired,
        attrs={"error_name": "ApiFeaturePreviewUsageOnly"},
    ),
    Case(
        "400-other",
        {"status": 400, "body": envelope("INVALID_ARGUMENT", "InvalidModelApi")},
        InvalidArgument,
        attrs={"error_name": "InvalidModelApi"},
    ),
    Case(
        "400-unsupported-model-source",
        {"status": 400, "body": envelope("INVALID_ARGUMENT", "UnsupportedModelSource")},
        UnsupportedModelSource,
        attrs={"error_name": "UnsupportedModelSource"},
    ),
    Case("400-no-envelope", {"status": 400, "body": HTML_PAGE}, InvalidArgument, attrs={"error_name": None}),
    Case("401", {"status": 401, "body": envelope("UNAUTHORIZED", "MissingCredentials")}, Unauthorized),
    Case("401-empty", {"status": 401}, Unauthorized, attrs={"error_code": None}),
    Case("403", {"status": 403, "body": envelope("PERMISSION_DENIED", "ApiUsageDenied")}, PermissionDenied),
    Case(
        "404-envelope",
        {"status": 404, "body": NOT_FOUND_BODY},
        LiveDeploymentNotFound,
        attrs={"error_code": "NOT_FOUND", "error_name": "LiveDeploymentNotFound"},
    ),
    Case(
        "404-model-not-found",
        {"status": 404, "body": envelope("NOT_FOUND", "ModelNotFound")},
        ModelNotFound,
        attrs={"error_name": "ModelNotFound"},
    ),
    Case("404-empty", {"status": 404}, ApiNotFound, attrs={"error_name": None}),
    Case("404-html", {"status": 404, "body": HTML_PAGE}, ApiNotFound),
    Case("429", {"status": 429}, RateLimited, gets=3, attrs={"retry_after": None}),
    Case(
        "429-retry-after",
        {"status": 429, "headers": {"Retry-After": "2"}},
        RateLimited,
        3,
        attrs={"retry_after": 2.0},
    ),
    Case(
        "500",
        {"status": 500, "body": envelope("INTERNAL", "Default:Internal")},
        ServerError,
        attrs={"status": 500},
    ),
    Case("502", {"status": 502}, ServerError, gets=3, attrs={"status": 502}),
    Case("503", {"status": 503, "body": envelope("INTERNAL", "Default:Unavailable")}, Unavailable, gets=3),
    Case("504", {"status": 504}, ServerError, gets=3, attrs={"status": 504}),
    Case("200-html", {"status": 200, "body": HTML_PAGE, "content_type": "text/html"}, NotJson),
    Case(
        "502-html",
        {"status": 502, "body": HTML_PAGE, "content_type": "text/html"},
        ServerError,
        3,
        attrs={"error_name": None},
    ),
    Case("200-truncated", {"body": DOCS_BODY[: len(DOCS_BODY) // 2]}, NotJson),
    Case("200-not-json", {"body": b"\x00\xff\xfe garbage"}, NotJson),
    Case("200-empty", {"body": b""}, NotJson),
    Case("200-wrong-shape", {"body": b'{"data": []}'}, WrongShape),
    Case("200-error-envelope", {"body": NOT_FOUND_BODY}, WrongShape),
    Case(
        "200-other-rid", {"body": example("get-live-deployment.full.json")}, WrongShape, attrs={"path": "rid"}
    ),
    Case("too-large-streamed", {"body": DOCS_BODY}, BodyTooLarge, max_body=256),
    Case(
        "too-large-declared",
        {"body": DOCS_BODY, "headers": {"Content-Length": str(len(DOCS_BODY))}},
        BodyTooLarge,
        max_body=256,
    ),
    Case(
        "too-large-understated",
        {"body": DOCS_BODY, "headers": {"Content-Length": "10"}},
        BodyTooLarge,
        max_body=256,
    ),
    Case(
        "302-not-followed", {"status": 302, "headers": {"Location": "https://elsewhere.test/steal"}}, ApiError
    ),
    Case("connection-error", {"exception": aiohttp.ClientConnectionError("refused")}, ConnectionFailed, 3),
    Case("server-disconnected", {"exception": aiohttp.ServerDisconnectedError()}, ConnectionFailed, 3),
    Case(
        "connection-reset",
        {"exception": aiohttp.ClientOSError(errno.ECONNRESET, "reset by peer")},
        ConnectionFailed,
        3,
    ),
    Case("payload-error", {"exception": aiohttp.ClientPayloadError("cut short")}, ConnectionFailed, 3),
    Case("timeout", {"exception": TimeoutError()}, RequestTimeout, 3),
    Case("socket-read-timeout", {"exception": aiohttp.SocketTimeoutError("read")}, RequestTimeout, 3),
    Case("connect-timeout", {"exception": aiohttp.ConnectionTimeoutError("connect")}, RequestTimeout, 3),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_every_error_kind(
    case: Case,
    mocked_http: MockedHttp,
    mocked_session: aiohttp.ClientSession,
    recording_sleep: RecordingSleep,
) -> None:
    """Each upstream answer ends in its class of the error tree, after the documented number of GETs."""
    mocked_http.get(GET_URL, repeat=True, **case.answer)
    client = make_client(mocked_session, sleep=recording_sleep, max_body=case.max_body)
    with pytest.raises(FoundryError) as caught:
        await client.get_live_deployment(RID)
    error = caught.value
    assert type(error) is case.error
    assert error.rid == RID
    assert error.kind in ERROR_KINDS
    for name, value in case.attrs.items():
        assert getattr(error, name) == value, name
    assert len(mocked_http.calls()) == case.gets
    assert len(recording_sleep.delays) == case.gets - 1
    # Nothing was sent anywhere but the one URL (a redirect is never followed).
    assert {str(url) for _, url in mocked_http.requests} == {GET_URL}


def test_every_error_class_has_a_case() -> None:
    """The table reaches every leaf of the error tree (InvalidRid has its own test below)."""
    leaves = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, FoundryError)
        and not any(sub.__module__ == errors.__name__ for sub in cls.__subclasses__())
    }
    assert InvalidRid in leaves
    assert leaves - {InvalidRid} <= {case.error for case in CASES}


@pytest.mark.parametrize("rid", ["", "not-a-rid", RID + "/../x", RID + "\n", "ri.a.b.c.d e", RID.upper()])
async def test_invalid_rid_sends_nothing(
    rid: str, mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A RID off the SDK's pattern is InvalidRid before any token is asked for or request sent."""

    class NoTokens:
        async def token(self) -> Any:
            raise AssertionError("no token should be needed")

        async def invalidate(self, token: Any) -> bool:
            raise AssertionError("unreachable")

    client = make_client(mocked_session, tokens=NoTokens())
    with pytest.raises(InvalidRid) as caught:
        await client.get_live_deployment(rid)
    assert mocked_http.requests == {}
    assert caught.value.kind == "invalid_rid"


async def test_a_good_answer_decodes(mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession) -> None:
    """A 200 with the documentation's example is the snapshot, after one GET."""
    mocked_http.get(GET_URL, body=DOCS_BODY)
    snapshot = await make_client(mocked_session).get_live_deployment(RID)
    assert (snapshot.rid, snapshot.state, snapshot.is_ready) == (RID, "ACTIVE", True)
    assert len(mocked_http.calls()) == 1


async def test_an_unchanged_body_is_not_decoded_again(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """The same bytes give the same snapshot object back; different bytes are decoded afresh."""
    changed = json.dumps({**json.loads(DOCS_BODY), "status": {"state": "FAILED", "isReady": False}}).encode()
    mocked_http.get(GET_URL, body=DOCS_BODY)
    mocked_http.get(GET_URL, body=DOCS_BODY)
    mocked_http.get(GET_URL, body=changed)
    client = make_client(mocked_session)
    first = await client.get_live_deployment(RID)
    assert await client.get_live_deployment(RID) is first
    third = await client.get_live_deployment(RID)
    assert third.state == "FAILED"
    client.forget(RID)
    assert client._last == {}


@pytest.mark.parametrize("declared", [False, True])
async def test_body_cap_boundary(
    declared: bool, mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A body of exactly the cap is read; one byte over is BodyTooLarge, with and without Content-Length."""
    headers = {"Content-Length": str(len(DOCS_BODY))} if declared else {}
    mocked_http.get(GET_URL, body=DOCS_BODY, headers=headers)
    mocked_http.get(GET_URL, body=DOCS_BODY, headers=headers)
    assert (await make_client(mocked_session, max_body=len(DOCS_BODY)).get_live_deployment(RID)).rid == RID
    with pytest.raises(BodyTooLarge):
        await make_client(mocked_session, max_body=len(DOCS_BODY) - 1).get_live_deployment(RID)


def test_error_for_status_maps_other_statuses() -> None:
    """Statuses outside the documented table still land in the tree: other 4xx are InvalidArgument, other 5xx ServerError."""
    assert type(error_for_status(418, b"", None, rid=None)) is InvalidArgument
    assert type(error_for_status(409, b"", None, rid=None)) is InvalidArgument
    assert type(error_for_status(501, b"", None, rid=None)) is ServerError
    assert type(error_for_status(204, b"", None, rid=None)) is ApiError
    error = error_for_status(404, envelope("NOT_FOUND", "LiveDeploymentNotFound"), None, rid=None)
    assert str(error) == "Foundry answered 404 LiveDeploymentNotFound"


def test_error_messages_carry_no_body_text() -> None:
    """Only status, error name (or code) and RID reach the message; parameters and other body text do not."""
    body = json.dumps(
        {"errorCode": "NOT_FOUND", "errorName": "LiveDeploymentNotFound", "parameters": {"x": "BODY-TEXT"}}
    ).encode()
    error = error_for_status(404, body, None, rid=RID)
    assert str(error) == f"Foundry answered 404 LiveDeploymentNotFound for {RID}"
    assert "BODY-TEXT" not in rendered(error)
    html = error_for_status(502, b"<html>BODY-TEXT</html>", None, rid=RID)
    assert str(html) == f"Foundry answered 502 without an error envelope for {RID}"
    code_only = error_for_status(500, b'{"errorCode": "INTERNAL"}', None, rid=None)
    assert (str(code_only), code_only.error_name) == ("Foundry answered 500 INTERNAL", None)


# --- retries and backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_transient_status_then_success(
    status: int,
    mocked_http: MockedHttp,
    mocked_session: aiohttp.ClientSession,
    recording_sleep: RecordingSleep,
) -> None:
    """One transient failure, then the answer: two GETs and one jittered backoff from the injected rng."""
    mocked_http.get(GET_URL, status=status)
    mocked_http.get(GET_URL, body=DOCS_BODY)
    client = make_client(mocked_session, sleep=recording_sleep)
    assert (await client.get_live_deployment(RID)).rid == RID
    assert len(mocked_http.calls()) == 2
    assert recording_sleep.delays == [backoff(RetryConfig(backoff_initial=0.2), 1, random.Random(SEED))]


@pytest.mark.parametrize(
    "exception", [aiohttp.ClientConnectionError("refused"), aiohttp.ServerDisconnectedError(), TimeoutError()]
)
async def test_transport_failure_then_success(
    exception: Exception,
    mocked_http: MockedHttp,
    mocked_session: aiohttp.ClientSession,
    recording_sleep: RecordingSleep,
) -> None:
    """A connection failure or timeout is retried after a backoff and the next answer is returned."""
    mocked_http.get(GET_URL, exception=exception)
    mocked_http.get(GET_URL, body=DOCS_BODY)
    assert (await make_client(mocked_session, sleep=recording_sleep).get_live_deployment(RID)).rid == RID
    assert len(mocked_http.calls()) == 2
    assert len(recording_sleep.delays) == 1


@pytest.mark.parametrize("attempts", [1, 2, 5])
async def test_attempts_cap(
    attempts: int,
    mocked_http: MockedHttp,
    mocked_session: aiohttp.ClientSession,
    recording_sleep: RecordingSleep,
) -> None:
    """A request that keeps failing is sent exactly ``attempts`` times with a sleep between each."""
    mocked_http.get(GET_URL, status=503, repeat=True)
    with pytest.raises(Unavailable):
        await make_client(mocked_session, attempts=attempts, sleep=recording_sleep).get_live_deployment(RID)
    assert len(mocked_http.calls()) == attempts
    assert len(recording_sleep.delays) == attempts - 1


async def test_backoff_is_full_jitter_within_bounds(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, recording_sleep: RecordingSleep
) -> None:
    """Delay n is the seeded rng's draw from [0, min(max, initial * 2**(n-1))]."""
    mocked_http.get(GET_URL, status=502, repeat=True)
    policy = RetryConfig(attempts=8, backoff_initial=0.5, backoff_max=4.0)
    client = make_client(mocked_session, retry=policy, sleep=recording_sleep, rng=random.Random(SEED))
    with pytest.raises(ServerError):
        await client.get_live_deployment(RID)
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    twin = random.Random(SEED)
    assert recording_sleep.delays == [twin.uniform(0.0, c) for c in ceilings]
    assert all(0.0 <= d <= c for d, c in zip(recording_sleep.delays, ceilings, strict=True))


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("7", 7.0, 7.0),
        ("0", 0.0, 0.0),
        ("3600", 60.0, 60.0),
        ("http-date+30", 28.0, 30.0),
        ("http-date+7200", 60.0, 60.0),
        ("http-date-30", 0.0, 0.0),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_and_capped(
    status: int,
    header: str,
    low: float,
    high: float,
    mocked_http: MockedHttp,
    mocked_session: aiohttp.ClientSession,
    recording_sleep: RecordingSleep,
) -> None:
    """Retry-After in seconds or as an HTTP date sets the wait instead of backoff, capped by retry_after_max."""
    if header.startswith("http-date"):
        header = format_datetime(datetime.now(UTC) + timedelta(seconds=int(header[9:])), usegmt=True)
    mocked_http.get(GET_URL, status=status, headers={"Retry-After": header})
    mocked_http.get(GET_URL, body=DOCS_BODY)
    policy = RetryConfig(attempts=2, backoff_initial=100.0, backoff_max=100.0, retry_after_max=60.0)
    await make_client(mocked_session, retry=policy, sleep=recording_sleep).get_live_deployment(RID)
    (delay,) = recording_sleep.delays
    assert low <= delay <= high


async def test_unusable_retry_after_falls_back_to_backoff(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, recording_sleep: RecordingSleep
) -> None:
    """A Retry-After that parses as neither seconds nor a date is ignored in favour of the backoff."""
    mocked_http.get(GET_URL, status=429, headers={"Retry-After": "²"})
    mocked_http.get(GET_URL, body=DOCS_BODY)
    await make_client(mocked_session, sleep=recording_sleep).get_live_deployment(RID)
    assert recording_sleep.delays == [backoff(RetryConfig(backoff_initial=0.2), 1, random.Random(SEED))]


async def test_a_permanent_error_after_a_transient_one_stops_retrying(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, recording_sleep: RecordingSleep
) -> None:
    """503 then 404: the 404 is the answer, not retried, though attempts remain."""
    mocked_http.get(GET_URL, status=503)
    mocked_http.get(GET_URL, status=404, body=NOT_FOUND_BODY)
    mocked_http.get(GET_URL, body=DOCS_BODY)
    with pytest.raises(LiveDeploymentNotFound):
        await make_client(mocked_session, attempts=5, sleep=recording_sleep).get_live_deployment(RID)
    assert len(mocked_http.calls()) == 2


# --- token refresh --------------------------------------------------------------------------------------


def credentials(session: aiohttp.ClientSession, clock: FakeClock | None = None) -> ClientCredentials:
    return ClientCredentials(
        session,
        token_url=TOKEN_URL,
        client_id="service-user",
        client_secret=CLIENT_SECRET,
        user_agent=USER_AGENT,
        clock=clock or FakeClock(),
    )


def issue(mocked_http: MockedHttp, token: str) -> None:
    mocked_http.post(TOKEN_URL, payload={"access_token": token, "expires_in": 3600})


def bearer_tokens(mocked_http: MockedHttp) -> list[str]:
    return [call.kwargs["headers"]["Authorization"] for call in mocked_http.calls()]


async def test_401_refreshes_the_oauth_token_and_retries_once(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, recording_sleep: RecordingSleep
) -> None:
    """With client credentials, a 401 fetches a new token and the retry carries it; no backoff sleep."""
    issue(mocked_http, "first-token")
    issue(mocked_http, "second-token")
    mocked_http.get(GET_URL, status=401, body=envelope("UNAUTHORIZED", "Default:Unauthorized"))
    mocked_http.get(GET_URL, body=DOCS_BODY)
    source = credentials(mocked_session)
    snapshot = await make_client(mocked_session, tokens=source, sleep=recording_sleep).get_live_deployment(
        RID
    )
    assert snapshot.rid == RID
    assert bearer_tokens(mocked_http) == ["Bearer first-token", "Bearer second-token"]
    assert source.refreshes == 2
    assert recording_sleep.delays == []


async def test_a_second_401_is_the_answer(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """If the fresh token is refused too, Unauthorized is raised after exactly two GETs and two token POSTs."""
    issue(mocked_http, "first-token")
    issue(mocked_http, "second-token")
    issue(mocked_http, "third-token")
    mocked_http.get(GET_URL, status=401, repeat=True)
    source = credentials(mocked_session)
    with pytest.raises(Unauthorized):
        await make_client(mocked_session, tokens=source, attempts=5).get_live_deployment(RID)
    assert bearer_tokens(mocked_http) == ["Bearer first-token", "Bearer second-token"]
    assert len(mocked_http.calls("POST")) == 2
    assert source.refreshes == 2


async def test_the_refresh_retry_does_not_use_up_an_attempt(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, recording_sleep: RecordingSleep
) -> None:
    """401 (refresh), 503 (retry) then 200 succeeds with attempts=2: the refresh is not a backoff attempt."""
    issue(mocked_http, "first-token")
    issue(mocked_http, "second-token")
    mocked_http.get(GET_URL, status=401)
    mocked_http.get(GET_URL, status=503)
    mocked_http.get(GET_URL, body=DOCS_BODY)
    client = make_client(
        mocked_session, tokens=credentials(mocked_session), attempts=2, sleep=recording_sleep
    )
    assert (await client.get_live_deployment(RID)).rid == RID
    assert bearer_tokens(mocked_http) == ["Bearer first-token", "Bearer second-token", "Bearer second-token"]
    assert len(recording_sleep.delays) == 1


async def test_static_token_401_is_not_retried(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A static token cannot be refreshed: one GET, then Unauthorized."""
    mocked_http.get(GET_URL, status=401, repeat=True)
    with pytest.raises(Unauthorized):
        await make_client(mocked_session, attempts=5).get_live_deployment(RID)
    assert len(mocked_http.calls()) == 1


async def test_token_file_rotated_after_401_is_retried_with_the_new_token(
    tmp_path: Path, fake_clock: FakeClock, mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A 401 makes TokenFile re-read its file at once; a rotated token gets one retry."""
    path = tmp_path / "token"
    path.write_text("old-token", encoding="utf-8")
    source = TokenFile(path, check_interval=3600.0, clock=fake_clock)
    await source.token()
    staged = tmp_path / "token.new"
    staged.write_text("new-token", encoding="utf-8")
    staged.replace(path)

    mocked_http.get(GET_URL, status=401)
    mocked_http.get(GET_URL, body=DOCS_BODY)
    assert (await make_client(mocked_session, tokens=source).get_live_deployment(RID)).rid == RID
    assert bearer_tokens(mocked_http) == ["Bearer old-token", "Bearer new-token"]


async def test_token_file_unchanged_after_401_is_not_retried(
    tmp_path: Path, mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """When the token file still holds the refused token, the 401 is the answer after one GET."""
    path = tmp_path / "token"
    path.write_text("old-token", encoding="utf-8")
    mocked_http.get(GET_URL, status=401, repeat=True)
    with pytest.raises(Unauthorized):
        await make_client(mocked_session, tokens=TokenFile(path)).get_live_deployment(RID)
    assert len(mocked_http.calls()) == 1


# --- the request itself ---------------------------------------------------------------------------------


def project_user_agent() -> str:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]
    return f"{project['name']}/{project['version']}"


async def test_request_shape(mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession) -> None:
    """GET of the RID's URL with preview=true, bearer token, JSON accepted, our User-Agent, no redirects."""
    mocked_http.get(GET_URL, body=DOCS_BODY)
    await make_client(mocked_session).get_live_deployment(RID)
    ((method, url),) = mocked_http.requests
    assert (method, str(url)) == ("GET", GET_URL)
    assert url.query == {"preview": "true"}
    (call,) = mocked_http.calls()
    headers = call.kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {SENTINEL}"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT == project_user_agent()
    assert call.kwargs["allow_redirects"] is False


def test_rid_is_percent_encoded_in_the_path_with_dots_kept() -> None:
    """url_for keeps a RID's dots and encodes anything that could change the path or the query."""
    client = FoundryClient(session=None, base_url=BASE, tokens=StaticToken("x"), decoder=Decoder(b"k"))  # type: ignore[arg-type]
    assert str(client.url_for(RID)) == GET_URL
    odd = client.url_for("ri.a.b.c.x/y z?q=1#f%")
    assert odd.raw_path == "/api/v2/models/liveDeployments/ri.a.b.c.x%2Fy%20z%3Fq%3D1%23f%25"
    assert odd.raw_query_string == "preview=true"
    assert odd.fragment == ""


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("foundry.example.com", "https://foundry.example.com"),
        ("  foundry.example.com/ ", "https://foundry.example.com"),
        ("https://foundry.example.com/", "https://foundry.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_normalize_base_url(given: str, expected: str) -> None:
    """A bare host name means https; an explicit http:// (loopback simulators) is kept; trailing / dropped."""
    assert normalize_base_url(given) == expected


async def test_bare_host_name_is_polled_over_https(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """base_url "foundry.test" sends the GET to https://foundry.test/..."""
    mocked_http.get(GET_URL, body=DOCS_BODY)
    client = make_client(mocked_session, base_url="foundry.test/")
    assert client.base_url == BASE
    assert "foundry.test" in repr(client)
    await client.get_live_deployment(RID)


async def test_list_live_deployments(mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession) -> None:
    """The list endpoint is called with modelRid, branch and preview=true and its example decodes."""
    list_url = f"{BASE}/api/v2/models/liveDeployments?modelRid={MODEL_RID}&branch=master&preview=true"
    mocked_http.get(list_url, body=example("list-live-deployments.json"))
    (snapshot,) = await make_client(mocked_session).list_live_deployments(MODEL_RID, branch="master")
    assert snapshot.state == "STARTING"
    ((_, url),) = mocked_http.requests
    assert url.query == {"modelRid": MODEL_RID, "branch": "master", "preview": "true"}


async def test_list_without_branch_and_with_a_bad_model_rid(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """No branch means no branch parameter; an invalid model RID sends nothing."""
    mocked_http.get(
        f"{BASE}/api/v2/models/liveDeployments?modelRid={MODEL_RID}&preview=true", body=b'{"data": []}'
    )
    client = make_client(mocked_session)
    assert await client.list_live_deployments(MODEL_RID) == ()
    with pytest.raises(InvalidRid):
        await client.list_live_deployments("model/../x")
    assert len(mocked_http.calls()) == 1


class CountingGate:
    """A request gate that counts slots and how many are held at once."""

    def __init__(self) -> None:
        self.entered = 0
        self.held = 0

    def slot(self) -> AbstractAsyncContextManager[object]:
        @asynccontextmanager
        async def held() -> AsyncIterator[object]:
            self.entered += 1
            self.held += 1
            try:
                yield None
            finally:
                self.held -= 1

        return held()


class RecordingObserver:
    def __init__(self) -> None:
        self.codes: list[str] = []
        self.seconds: list[float] = []

    def request_done(self, code: str, seconds: float) -> None:
        self.codes.append(code)
        self.seconds.append(seconds)


async def test_each_attempt_takes_a_gate_slot_and_is_observed(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """Every attempt holds a gate slot while in flight and reports its status, timeout or connection failure."""
    gate, observer = CountingGate(), RecordingObserver()
    held_during_request: list[int] = []

    def record_gate(url: URL, **kwargs: Any) -> None:
        held_during_request.append(gate.held)

    mocked_http.get(GET_URL, status=503, callback=record_gate)
    mocked_http.get(GET_URL, exception=TimeoutError())
    mocked_http.get(GET_URL, exception=aiohttp.ServerDisconnectedError())
    mocked_http.get(GET_URL, body=DOCS_BODY, callback=record_gate)
    client = make_client(mocked_session, attempts=4, gate=gate, observer=observer)
    await client.get_live_deployment(RID)
    assert gate.entered == 4
    assert gate.held == 0
    assert held_during_request == [1, 1]
    assert observer.codes == ["503", "timeout", "connection", "200"]
    assert all(s >= 0.0 for s in observer.seconds)


def test_timeouts_map_onto_aiohttp() -> None:
    """connect, read and total become sock_connect, sock_read and total."""
    timeout = client_timeout(TimeoutsConfig(connect=1.0, read=2.0, total=3.0))
    assert (timeout.sock_connect, timeout.sock_read, timeout.total) == (1.0, 2.0, 3.0)


def test_tls_setting() -> None:
    """Verification is on by default and off only when asked."""
    assert ssl_context() is True
    assert ssl_context(insecure_skip_verify=True) is False


async def test_session_scope_closes_the_session() -> None:
    """The session opened for the client is closed when its scope ends."""
    session = open_session(timeouts=TimeoutsConfig(connect=1.0, read=2.0, total=3.0))
    async with session_scope(session) as scoped:
        assert scoped is session
        assert scoped.timeout.sock_read == 2.0
    assert session.closed


# --- the token never leaks ------------------------------------------------------------------------------


def _response_error() -> aiohttp.ClientResponseError:
    # aiohttp's own ClientResponseError carries the request headers, bearer token included.
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {SENTINEL}"}))
    info = aiohttp.RequestInfo(URL(GET_URL), "GET", headers=headers, real_url=URL(GET_URL))
    return aiohttp.ClientResponseError(info, (), status=400, message="bad status line")


LEAK_CASES = [*CASES, Case("response-error", {"exception": _response_error()}, ConnectionFailed, 3)]


@pytest.mark.parametrize("case", LEAK_CASES, ids=lambda c: c.id)
async def test_the_token_never_leaks(
    case: Case, mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """Whatever the failure, the bearer token is in no str, repr, traceback (causes included) or log line."""
    mocked_http.get(GET_URL, repeat=True, **case.answer)
    with capture_logs() as logs, pytest.raises(FoundryError) as caught:
        await make_client(mocked_session, max_body=case.max_body).get_live_deployment(RID)
    assert SENTINEL not in rendered(caught.value)
    assert SENTINEL not in repr(logs)
    assert SENTINEL not in USER_AGENT
    if case.id == "response-error":
        assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 401},
        {"status": 500, "body": json.dumps({"client_secret": CLIENT_SECRET})},
        {"body": '{"access_token": "' + SENTINEL},
        {"exception": aiohttp.ClientConnectionError("refused")},
        {"exception": TimeoutError()},
    ],
)
async def test_client_credentials_never_leak_through_the_client(
    answer: dict[str, Any], mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A failing token endpoint fails the poll without the client secret or any token in what it shows."""
    mocked_http.post(TOKEN_URL, **answer)
    client = make_client(mocked_session, tokens=credentials(mocked_session))
    with capture_logs() as logs, pytest.raises(FoundryError) as caught:
        await client.get_live_deployment(RID)
    for secret in (CLIENT_SECRET, SENTINEL):
        assert secret not in rendered(caught.value)
        assert secret not in repr(logs)
    assert mocked_http.calls() == []


async def test_a_refreshed_token_never_leaks_on_the_second_401(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """After refresh and a second 401, neither token nor the client secret is in the error."""
    issue(mocked_http, SENTINEL + "-1")
    issue(mocked_http, SENTINEL + "-2")
    mocked_http.get(GET_URL, status=401, repeat=True)
    with pytest.raises(Unauthorized) as caught:
        await make_client(mocked_session, tokens=credentials(mocked_session)).get_live_deployment(RID)
    assert SENTINEL not in rendered(caught.value)
    assert CLIENT_SECRET not in rendered(caught.value)


# --- against a real socket ------------------------------------------------------------------------------


Responder = Callable[[anyio.abc.SocketStream], Awaitable[None]]


@dataclass(slots=True)
class RawServer:
    """A loopback HTTP/1.1 server answering every request with the same hand-written bytes."""

    base_url: str
    requests: list[bytes]


@asynccontextmanager
async def raw_http_server(respond: Responder) -> AsyncIterator[RawServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
    server = RawServer(f"http://127.0.0.1:{port}", [])

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    head += await stream.receive()
                server.requests.append(head)
                await respond(stream)
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                return

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def real_client(
    server: RawServer, *, max_body: int = 1 << 20, read_timeout: float = 5.0
) -> AsyncIterator[FoundryClient]:
    session = open_session(timeouts=TimeoutsConfig(connect=2.0, read=read_timeout, total=8.0))
    async with session_scope(session):
        yield make_client(session, base_url=server.base_url, attempts=1, max_body=max_body)


def http_head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


async def test_wire_request_and_answer() -> None:
    """On a real socket: the request line, the headers, and a decoded answer."""

    async def respond(stream: anyio.abc.SocketStream) -> None:
        await stream.send(
            http_head("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(DOCS_BODY))})
        )
        await stream.send(DOCS_BODY)

    with anyio.fail_after(10):
        async with raw_http_server(respond) as server, real_client(server) as client:
            snapshot = await client.get_live_deployment(RID)
    assert snapshot.rid == RID
    (request,) = server.requests
    lines = request.decode("latin-1").split("\r\n")
    assert lines[0] == f"GET /api/v2/models/liveDeployments/{RID}?preview=true HTTP/1.1"
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    assert headers["authorization"] == f"Bearer {SENTINEL}"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"] == USER_AGENT


async def test_a_compressed_body_cannot_inflate_past_the_cap() -> None:
    """A small gzip body (small Content-Length) that inflates past the cap is BodyTooLarge, not read whole."""
    bomb = gzip.compress(b" " * (1 << 20))

    async def respond(stream: anyio.abc.SocketStream) -> None:
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Content-Length": str(len(bomb)),
        }
        await stream.send(http_head("200 OK", headers) + bomb)

    with anyio.fail_after(10):
        async with raw_http_server(respond) as server, real_client(server, max_body=64 * 1024) as client:
            assert len(bomb) < 64 * 1024
            with pytest.raises(BodyTooLarge):
                await client.get_live_deployment(RID)


async def test_a_stalled_body_times_out() -> None:
    """Headers then silence: the socket-read timeout ends the attempt as RequestTimeout."""

    async def respond(stream: anyio.abc.SocketStream) -> None:
        await stream.send(http_head("200 OK", {"Content-Length": "1000"}) + b'{"rid": ')
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with raw_http_server(respond) as server, real_client(server, read_timeout=0.3) as client:
            with pytest.raises(RequestTimeout) as caught:
                await client.get_live_deployment(RID)
    assert SENTINEL not in rendered(caught.value)


async def test_a_body_cut_short_is_a_connection_failure() -> None:
    """A connection closed before Content-Length bytes arrived is ConnectionFailed, not a NotJson answer."""

    async def respond(stream: anyio.abc.SocketStream) -> None:
        await stream.send(http_head("200 OK", {"Content-Length": str(len(DOCS_BODY))}) + DOCS_BODY[:40])

    with anyio.fail_after(10):
        async with raw_http_server(respond) as server, real_client(server) as client:
            with pytest.raises(ConnectionFailed) as caught:
                await client.get_live_deployment(RID)
    assert SENTINEL not in rendered(caught.value)


async def test_a_connection_closed_without_an_answer_is_a_connection_failure() -> None:
    """The server hangs up after reading the request: ConnectionFailed."""

    async def respond(stream: anyio.abc.SocketStream) -> None:
        return None

    with anyio.fail_after(10):
        async with raw_http_server(respond) as server, real_client(server) as client:
            with pytest.raises(ConnectionFailed):
                await client.get_live_deployment(RID)


async def test_nothing_listening_is_a_connection_failure() -> None:
    """A refused connection on loopback is ConnectionFailed."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
    await listener.aclose()
    with anyio.fail_after(10):
        async with real_client(RawServer(f"http://127.0.0.1:{port}", [])) as client:
            with pytest.raises(ConnectionFailed):
                await client.get_live_deployment(RID)


# --- model versions -------------------------------------------------------------------------------------

VERSIONS_URL = re.compile(r"^https://foundry\.test/api/v2/models/[^/?]+/versions\?.*$")
VERSION = "ri.models.main.model-version.0e1f2a3b-4c5d-4e6f-8a9b-{:012d}"


def version_doc(index: int, created: str) -> dict[str, Any]:
    return {
        "rid": VERSION.format(index),
        "modelApi": {"inputs": [], "outputs": []},
        "condaRequirements": [],
        "backingRepositories": [],
        "createdTime": created,
        "source": {
            "type": "codeRepository",
            "repositoryRid": "ri.stemma.main.repository.1",
            "branch": "master",
        },
    }


def version_page(*docs: dict[str, Any], token: str | None = None) -> bytes:
    page: dict[str, Any] = {"data": list(docs)}
    if token is not None:
        page["nextPageToken"] = token
    return json.dumps(page).encode()


def versions_served(mocked_http: MockedHttp, *answers: dict[str, Any]) -> list[URL]:
    """Answer successive version-list requests with ``answers`` in order; the URLs asked for are recorded."""
    asked: list[URL] = []

    def record(url: URL, **kwargs: Any) -> None:
        asked.append(url)

    for answer in answers:
        mocked_http.get(VERSIONS_URL, callback=record, **answer)
    return asked


async def test_list_model_versions_follows_every_page(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """Pages are fetched with branch, pageSize, the previous page's token and preview=true until a page has no
    nextPageToken; the versions come back in listing order, and the newest is the greatest createdTime."""
    asked = versions_served(
        mocked_http,
        {"body": version_page(version_doc(1, "2026-11-20T09:00:00Z"), token="v1.1")},
        {"body": version_page(version_doc(3, "2026-11-27T16:40:55.007Z"), token="v1.2")},
        {"body": version_page(version_doc(2, "2026-11-21T09:00:00+01:00"))},
    )
    versions = await make_client(mocked_session).list_model_versions(MODEL_RID, "feature/x y")
    assert [v.rid for v in versions] == [VERSION.format(i) for i in (1, 3, 2)]
    assert all(isinstance(v, ModelVersion) for v in versions)
    newest = latest_version(versions)
    assert newest is not None
    assert newest.rid == VERSION.format(3)
    assert [url.path for url in asked] == [f"/api/v2/models/{MODEL_RID}/versions"] * 3
    assert [dict(url.query) for url in asked] == [
        {"branch": "feature/x y", "pageSize": "100", "preview": "true"},
        {"branch": "feature/x y", "pageSize": "100", "pageToken": "v1.1", "preview": "true"},
        {"branch": "feature/x y", "pageSize": "100", "pageToken": "v1.2", "preview": "true"},
    ]
    for call in mocked_http.calls():
        assert call.kwargs["headers"]["Authorization"] == f"Bearer {SENTINEL}"


async def test_an_empty_listing_is_no_versions(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A branch without versions is an empty tuple after one request (with the page size asked for), and
    has no latest version."""
    asked = versions_served(mocked_http, {"body": b'{"data": []}'})
    versions = await make_client(mocked_session).list_model_versions(MODEL_RID, "master", page_size=7)
    assert versions == ()
    assert latest_version(versions) is None
    assert [url.query["pageSize"] for url in asked] == ["7"]


async def test_version_listing_stops_at_the_page_cap(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A server that always has another page is WrongShape at nextPageToken after exactly max_pages requests."""
    asked = versions_served(
        mocked_http,
        *({"body": version_page(version_doc(i, "2026-11-20T09:00:00Z"), token=f"t{i}")} for i in range(5)),
    )
    with pytest.raises(WrongShape) as caught:
        await make_client(mocked_session).list_model_versions(MODEL_RID, "master", max_pages=3)
    assert (caught.value.path, caught.value.rid) == ("nextPageToken", MODEL_RID)
    assert "3 pages" in caught.value.message
    assert len(asked) == 3


async def test_a_repeated_page_token_is_an_error(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A page token seen before ends the listing as WrongShape at once, instead of looping until the cap."""
    asked = versions_served(
        mocked_http,
        {"body": version_page(version_doc(1, "2026-11-20T09:00:00Z"), token="a")},
        {"body": version_page(version_doc(2, "2026-11-20T09:00:00Z"), token="b")},
        {"body": version_page(version_doc(3, "2026-11-20T09:00:00Z"), token="a")},
        {"body": version_page(version_doc(4, "2026-11-20T09:00:00Z"))},
    )
    with pytest.raises(WrongShape) as caught:
        await make_client(mocked_session).list_model_versions(MODEL_RID, "master")
    assert caught.value.path == "nextPageToken"
    assert "repeats" in caught.value.message
    assert len(asked) == 3


async def test_version_listing_stops_at_the_version_cap(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """More versions than max_versions (pages may be larger than asked for) is WrongShape, not a partial list."""
    docs = [version_doc(i, "2026-11-20T09:00:00Z") for i in range(4)]
    asked = versions_served(
        mocked_http, {"body": version_page(*docs[:2], token="t")}, {"body": version_page(*docs[2:])}
    )
    client = make_client(mocked_session)
    with pytest.raises(WrongShape) as caught:
        await client.list_model_versions(MODEL_RID, "master", max_versions=3)
    assert (caught.value.path, len(asked)) == ("nextPageToken", 2)
    versions_served(
        mocked_http, {"body": version_page(*docs[:2], token="t")}, {"body": version_page(*docs[2:])}
    )
    assert len(await client.list_model_versions(MODEL_RID, "master", max_versions=4)) == 4


@pytest.mark.parametrize(
    ("answer", "error", "name"),
    [
        ({"status": 404, "body": envelope("NOT_FOUND", "ModelNotFound")}, ModelNotFound, "ModelNotFound"),
        ({"status": 404, "body": envelope("NOT_FOUND", "BranchNotFound")}, ModelNotFound, "BranchNotFound"),
        ({"status": 404}, ApiNotFound, None),
        (
            {"status": 400, "body": envelope("INVALID_ARGUMENT", "UnsupportedModelSource")},
            UnsupportedModelSource,
            "UnsupportedModelSource",
        ),
        ({"status": 400, "body": PREVIEW_BODY}, PreviewRequired, "ApiFeaturePreviewUsageOnly"),
    ],
    ids=["model-not-found", "other-404-envelope", "404-empty", "unsupported-model-source", "preview"],
)
async def test_version_listing_errors_are_errors_on_the_model(
    answer: dict[str, Any],
    error: type[FoundryError],
    name: str | None,
    mocked_http: MockedHttp,
    mocked_session: aiohttp.ClientSession,
    recording_sleep: RecordingSleep,
) -> None:
    """A 404 envelope of the version list is ModelNotFound whatever its name (never LiveDeploymentNotFound),
    400 UnsupportedModelSource its own class; each names the model's RID and is not retried."""
    asked = versions_served(mocked_http, answer)
    with pytest.raises(FoundryError) as caught:
        await make_client(mocked_session, sleep=recording_sleep).list_model_versions(MODEL_RID, "master")
    assert type(caught.value) is error
    assert caught.value.rid == MODEL_RID
    assert getattr(caught.value, "error_name", None) == name
    assert not isinstance(caught.value, LiveDeploymentNotFound)
    assert (len(asked), recording_sleep.delays) == (1, [])


async def test_a_bad_page_fails_the_whole_listing(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A wrong shape on a later page is WrongShape naming the field and the model; not-JSON is NotJson."""
    bad = version_doc(2, "2026-11-20")
    versions_served(
        mocked_http,
        {"body": version_page(version_doc(1, "2026-11-20T09:00:00Z"), token="t")},
        {"body": version_page(bad)},
    )
    client = make_client(mocked_session)
    with pytest.raises(WrongShape) as caught:
        await client.list_model_versions(MODEL_RID, "master")
    assert (caught.value.path, caught.value.rid) == ("data[0].createdTime", MODEL_RID)
    versions_served(mocked_http, {"body": HTML_PAGE, "content_type": "text/html"})
    with pytest.raises(NotJson) as not_json:
        await client.list_model_versions(MODEL_RID, "master")
    assert not_json.value.rid == MODEL_RID


async def test_an_invalid_model_rid_lists_nothing(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A model RID off the SDK's pattern is InvalidRid before any request."""
    with pytest.raises(InvalidRid):
        await make_client(mocked_session).list_model_versions("model/../x", "master")
    assert mocked_http.requests == {}


async def test_each_version_page_goes_through_the_gate_retries_and_observer(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, recording_sleep: RecordingSleep
) -> None:
    """Every page, and every retry of a page, takes one request-budget slot and is observed; a transient
    503 on a later page is retried and the listing goes on."""
    gate, observer = CountingGate(), RecordingObserver()
    versions_served(
        mocked_http,
        {"body": version_page(version_doc(1, "2026-11-20T09:00:00Z"), token="t1")},
        {"status": 503},
        {"body": version_page(version_doc(2, "2026-11-21T09:00:00Z"), token="t2")},
        {"body": version_page(version_doc(3, "2026-11-19T09:00:00Z"))},
    )
    client = make_client(mocked_session, gate=gate, observer=observer, sleep=recording_sleep)
    versions = await client.list_model_versions(MODEL_RID, "master")
    assert len(versions) == 3
    assert gate.entered == 4
    assert gate.held == 0
    assert observer.codes == ["200", "503", "200", "200"]
    assert len(recording_sleep.delays) == 1


def test_error_for_status_takes_the_endpoints_not_found() -> None:
    """A 404 envelope is the endpoint's not-found class, or ModelNotFound when named so; no envelope is ApiNotFound."""
    model = envelope("NOT_FOUND", "ModelNotFound")
    other = envelope("NOT_FOUND", "SomethingNotFound")
    assert type(error_for_status(404, model, None, rid=None)) is ModelNotFound
    assert type(error_for_status(404, other, None, rid=None)) is LiveDeploymentNotFound
    assert type(error_for_status(404, other, None, rid=None, not_found=ModelNotFound)) is ModelNotFound
    assert type(error_for_status(404, b"", None, rid=None, not_found=ModelNotFound)) is ApiNotFound
