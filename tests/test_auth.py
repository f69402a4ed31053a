"""Tests for monitor.auth: Secret, StaticToken, TokenFile rotation, OAuth2 client credentials."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from monitor import USER_AGENT
from monitor.auth import ClientCredentials, Secret, StaticToken, TokenFile
from monitor.errors import ConnectionFailed, FoundryError, RequestTimeout, Unauthorized
from tests.conftest import FakeClock, MockedHttp, rendered

TOKEN_URL = "https://foundry.test/multipass/api/oauth2/token"
CLIENT_SECRET = "client-secret-SENTINEL-5b1e"
ACCESS_TOKEN = "access-token-SENTINEL-77c0"

# Marked here, not only by the root conftest's late marking, so parametrized coroutine tests keep their
# parameters (anyio's plugin rebuilds late-marked items with the backend as their only parameter).
pytestmark = pytest.mark.anyio


def rotate(path: Path, text: str) -> None:
    """Replace the file the way a Kubernetes secret update does: a new file swapped in atomically."""
    staged = path.with_suffix(".new")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)


# --- Secret and StaticToken -----------------------------------------------------------------------------


def test_secret_hides_its_value() -> None:
    """repr, str and f-strings of a Secret show stars; reveal() is the only way to the value."""
    secret = Secret(ACCESS_TOKEN)
    for shown in (repr(secret), str(secret), f"{secret}", repr([secret]), repr({"t": secret})):
        assert ACCESS_TOKEN not in shown
        assert "***" in shown
    assert secret.reveal() == ACCESS_TOKEN


def test_secrets_compare_by_value() -> None:
    """Equal values are equal secrets with equal hashes; a Secret never equals a plain string."""
    assert Secret("a") == Secret("a")
    assert hash(Secret("a")) == hash(Secret("a"))
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"


async def test_static_token_is_constant_and_never_refreshes() -> None:
    """A static token is returned as given; after a 401 it says no other token can be had."""
    source = StaticToken(ACCESS_TOKEN)
    token = await source.token()
    assert token.reveal() == ACCESS_TOKEN
    assert await source.token() == token
    assert await source.invalidate(token) is False


# --- TokenFile ------------------------------------------------------------------------------------------


async def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    """The token is the file's content without surrounding whitespace and newline."""
    path = tmp_path / "token"
    path.write_text(f"  {ACCESS_TOKEN}\n", encoding="utf-8")
    assert (await TokenFile(path).token()).reveal() == ACCESS_TOKEN


async def test_token_file_change_is_seen_after_the_check_interval(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """A rotated file is not re-checked before check_interval has passed, and is picked up once it has."""
    path = tmp_path / "token"
    path.write_text("first", encoding="utf-8")
    source = TokenFile(path, check_interval=10.0, clock=fake_clock)
    assert (await source.token()).reveal() == "first"
    rotate(path, "second")
    fake_clock.advance(9.9)
    assert (await source.token()).reveal() == "first"
    fake_clock.advance(0.1)
    assert (await source.token()).reveal() == "second"


async def test_token_file_with_zero_interval_is_checked_on_every_call(tmp_path: Path) -> None:
    """check_interval=0 re-checks the file each time, with the real clock."""
    path = tmp_path / "token"
    path.write_text("first", encoding="utf-8")
    source = TokenFile(path, check_interval=0)
    assert (await source.token()).reveal() == "first"
    rotate(path, "second-and-longer")
    assert (await source.token()).reveal() == "second-and-longer"


async def test_token_file_follows_a_swapped_symlink(tmp_path: Path, fake_clock: FakeClock) -> None:
    """Kubernetes updates a mounted secret by re-pointing a symlink; the new target is read."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1" / "token").write_text("first", encoding="utf-8")
    (tmp_path / "v2" / "token").write_text("second", encoding="utf-8")
    (tmp_path / "data").symlink_to(tmp_path / "v1")
    source = TokenFile(tmp_path / "data" / "token", check_interval=1.0, clock=fake_clock)
    assert (await source.token()).reveal() == "first"
    (tmp_path / "data.new").symlink_to(tmp_path / "v2")
    os.replace(tmp_path / "data.new", tmp_path / "data")
    fake_clock.advance(1.0)
    assert (await source.token()).reveal() == "second"


async def test_token_file_is_re_read_at_once_after_a_401(tmp_path: Path, fake_clock: FakeClock) -> None:
    """invalidate() checks the file immediately: a rotated token is worth one retry even mid-interval."""
    path = tmp_path / "token"
    path.write_text("first", encoding="utf-8")
    source = TokenFile(path, check_interval=3600.0, clock=fake_clock)
    refused = await source.token()
    rotate(path, "second")
    assert await source.invalidate(refused) is True
    assert (await source.token()).reveal() == "second"


async def test_token_file_unchanged_after_a_401_is_not_worth_a_retry(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """When the file still holds the refused token, invalidate() says no retry."""
    path = tmp_path / "token"
    path.write_text("first", encoding="utf-8")
    source = TokenFile(path, check_interval=3600.0, clock=fake_clock)
    assert await source.invalidate(await source.token()) is False


async def test_token_file_rewritten_with_the_same_token_is_not_a_change(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """A new file with the same token (new inode) is re-read but does not count as a rotation."""
    path = tmp_path / "token"
    path.write_text("same", encoding="utf-8")
    source = TokenFile(path, check_interval=3600.0, clock=fake_clock)
    refused = await source.token()
    rotate(path, "same\n")
    assert await source.invalidate(refused) is False


async def test_token_file_401_with_an_already_replaced_token(tmp_path: Path, fake_clock: FakeClock) -> None:
    """A 401 for a token that was rotated away since the request was sent is worth a retry at once."""
    path = tmp_path / "token"
    path.write_text("first", encoding="utf-8")
    source = TokenFile(path, check_interval=0.0, clock=fake_clock)
    old = await source.token()
    rotate(path, "second")
    assert (await source.token()).reveal() == "second"
    assert await source.invalidate(old) is True


@pytest.mark.parametrize("content", [b"", b"  \n", b"\xff\xfe\xfa" + ACCESS_TOKEN.encode()])
async def test_token_file_empty_or_undecodable_is_unauthorized(tmp_path: Path, content: bytes) -> None:
    """An empty or non-UTF-8 token file is Unauthorized, and the message shows none of its content."""
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(Unauthorized) as caught:
        await TokenFile(path).token()
    assert str(path) in str(caught.value)
    assert ACCESS_TOKEN not in rendered(caught.value)


async def test_token_file_missing_is_unauthorized(tmp_path: Path) -> None:
    """A missing token file is Unauthorized naming the path."""
    with pytest.raises(Unauthorized, match="cannot be read"):
        await TokenFile(tmp_path / "absent").token()


async def test_token_file_that_vanishes_is_unauthorized_on_the_next_check(tmp_path: Path) -> None:
    """Once read, a file that disappears makes the next check fail rather than silently serve the old token."""
    path = tmp_path / "token"
    path.write_text(ACCESS_TOKEN, encoding="utf-8")
    source = TokenFile(path, check_interval=0)
    await source.token()
    path.unlink()
    with pytest.raises(Unauthorized) as caught:
        await source.token()
    assert ACCESS_TOKEN not in rendered(caught.value)


# --- ClientCredentials ----------------------------------------------------------------------------------


def credentials(session: aiohttp.ClientSession, clock: FakeClock | None = None) -> ClientCredentials:
    return ClientCredentials(
        session,
        token_url=TOKEN_URL,
        client_id="service-user",
        client_secret=CLIENT_SECRET,
        scope="api:models-read",
        user_agent=USER_AGENT,
        clock=clock or FakeClock(),
    )


def issue(mocked_http: MockedHttp, token: str = ACCESS_TOKEN, expires_in: Any = 3600, **kwargs: Any) -> None:
    mocked_http.post(
        TOKEN_URL, payload={"access_token": token, "token_type": "bearer", "expires_in": expires_in}, **kwargs
    )


async def test_client_credentials_posts_the_documented_form(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """One form-encoded POST with grant type, id, secret and scope; JSON accepted; no redirects followed."""
    issue(mocked_http)
    source = credentials(mocked_session)
    token = await source.token()
    assert token.reveal() == ACCESS_TOKEN
    (call,) = mocked_http.calls("POST")
    assert call.kwargs["data"] == {
        "grant_type": "client_credentials",
        "client_id": "service-user",
        "client_secret": CLIENT_SECRET,
        "scope": "api:models-read",
    }
    assert call.kwargs["headers"]["Accept"] == "application/json"
    assert call.kwargs["headers"]["User-Agent"] == USER_AGENT
    assert call.kwargs["allow_redirects"] is False
    assert source.refreshes == 1


async def test_client_credentials_token_is_reused_until_shortly_before_expiry(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    """An hour-long token is reused for 59 minutes and refreshed a minute before it expires."""
    issue(mocked_http, "first", 3600)
    issue(mocked_http, "second", 3600)
    source = credentials(mocked_session, fake_clock)
    assert (await source.token()).reveal() == "first"
    fake_clock.advance(3539.9)
    assert (await source.token()).reveal() == "first"
    assert len(mocked_http.calls("POST")) == 1
    fake_clock.advance(0.1)
    assert (await source.token()).reveal() == "second"
    assert source.refreshes == 2


async def test_short_lived_tokens_are_refreshed_at_80_percent(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    """A 100-second token is refreshed after 80 seconds, not one minute before its end."""
    issue(mocked_http, "first", 100)
    issue(mocked_http, "second", 100)
    source = credentials(mocked_session, fake_clock)
    await source.token()
    fake_clock.advance(79.9)
    assert (await source.token()).reveal() == "first"
    fake_clock.advance(0.1)
    assert (await source.token()).reveal() == "second"


async def test_missing_expires_in_means_an_hour(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    """A token answer without expires_in is treated as an hour-long token."""
    mocked_http.post(TOKEN_URL, payload={"access_token": "first"})
    source = credentials(mocked_session, fake_clock)
    await source.token()
    fake_clock.advance(3539.0)
    assert (await source.token()).reveal() == "first"


async def test_one_refresh_in_flight_however_many_wait(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """50 concurrent token() calls on a cold source make exactly one POST and all get that token."""
    release = anyio.Event()

    async def slow_token_endpoint(url: URL, **kwargs: Any) -> None:
        await release.wait()

    issue(mocked_http, callback=slow_token_endpoint)
    source = credentials(mocked_session)
    tokens: list[Secret] = []

    async def poll() -> None:
        tokens.append(await source.token())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(poll)
            # Every poll is now either inside the one POST or queued behind it.
            await anyio.wait_all_tasks_blocked()
            assert len(mocked_http.calls("POST")) == 1
            release.set()
    assert source.refreshes == 1
    assert len(mocked_http.calls("POST")) == 1
    assert tokens == [Secret(ACCESS_TOKEN)] * 50


async def test_invalidate_drops_only_the_refused_token(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """After a 401 with the current token the next call fetches anew; a 401 with an old token keeps the current."""
    issue(mocked_http, "first")
    issue(mocked_http, "second")
    source = credentials(mocked_session)
    first = await source.token()
    assert await source.invalidate(first) is True
    second = await source.token()
    assert second.reveal() == "second"
    assert await source.invalidate(first) is True
    assert await source.token() == second
    assert source.refreshes == 2


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 400, "payload": {"error": "invalid_client", "client_secret": CLIENT_SECRET}},
        {"status": 401, "payload": {"error": "invalid_client"}},
        {"status": 500, "body": "<html>oops</html>", "content_type": "text/html"},
        {"status": 200, "payload": {"token_type": "bearer"}},
        {"status": 200, "payload": {"access_token": ""}},
        {"status": 200, "payload": {"access_token": 12345}},
        {"status": 200, "payload": {"access_token": ACCESS_TOKEN, "expires_in": True}},
        {"status": 200, "payload": {"access_token": ACCESS_TOKEN, "expires_in": "3600"}},
        {"status": 200, "body": f'["{ACCESS_TOKEN}"]'},
    ],
)
async def test_token_endpoint_refusals_are_unauthorized(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession, answer: dict[str, Any]
) -> None:
    """A refusal or an answer without a usable token is Unauthorized; no secret or token in what it shows."""
    mocked_http.post(TOKEN_URL, **answer)
    source = credentials(mocked_session)
    with pytest.raises(Unauthorized) as caught:
        await source.token()
    assert caught.value.status == 401
    assert CLIENT_SECRET not in rendered(caught.value)
    assert ACCESS_TOKEN not in rendered(caught.value)
    assert source.refreshes == 0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"body": '{"access_token": "' + ACCESS_TOKEN}, ConnectionFailed),
        ({"body": "<html>proxy</html>", "content_type": "text/html"}, ConnectionFailed),
        ({"exception": aiohttp.ClientConnectionError("refused")}, ConnectionFailed),
        ({"exception": aiohttp.ServerDisconnectedError()}, ConnectionFailed),
        ({"exception": TimeoutError()}, RequestTimeout),
        ({"exception": aiohttp.ServerTimeoutError("read")}, RequestTimeout),
    ],
)
async def test_token_endpoint_transport_failures(
    mocked_http: MockedHttp,
    mocked_session: aiohttp.ClientSession,
    answer: dict[str, Any],
    expected: type[FoundryError],
) -> None:
    """Unparseable answers and connection failures are ConnectionFailed; timeouts are RequestTimeout."""
    mocked_http.post(TOKEN_URL, **answer)
    with pytest.raises(expected) as caught:
        await credentials(mocked_session).token()
    assert CLIENT_SECRET not in rendered(caught.value)
    assert ACCESS_TOKEN not in rendered(caught.value)


async def test_token_endpoint_response_error_drops_its_request_info(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A ClientResponseError (which carries the request) is not chained into the traceback."""
    info = aiohttp.RequestInfo(
        URL(TOKEN_URL),
        "POST",
        headers=CIMultiDictProxy(CIMultiDict({"X-Echo": CLIENT_SECRET})),
        real_url=URL(TOKEN_URL),
    )
    mocked_http.post(
        TOKEN_URL, exception=aiohttp.ClientResponseError(info, (), status=400, message=CLIENT_SECRET)
    )
    with pytest.raises(ConnectionFailed) as caught:
        await credentials(mocked_session).token()
    assert caught.value.__cause__ is None
    assert CLIENT_SECRET not in rendered(caught.value)


async def test_a_failed_refresh_is_tried_again_on_the_next_call(
    mocked_http: MockedHttp, mocked_session: aiohttp.ClientSession
) -> None:
    """A failed fetch leaves no broken state: the next token() call fetches again and succeeds."""
    mocked_http.post(TOKEN_URL, status=503)
    issue(mocked_http)
    source = credentials(mocked_session)
    with pytest.raises(Unauthorized):
        await source.token()
    assert (await source.token()).reveal() == ACCESS_TOKEN
    assert source.refreshes == 1


async def test_client_credentials_repr_hides_the_secret(mocked_session: aiohttp.ClientSession) -> None:
    """repr names the client id and token URL, never the client secret."""
    shown = repr(credentials(mocked_session))
    assert "service-user" in shown
    assert CLIENT_SECRET not in shown
