"""Tests for monitor.web.server: the listener over TLS, and what a hostile client can make it log."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

import aiohttp
import anyio
import pytest

from monitor.tracker import Tracker
from monitor.web import BasicAuth, serve_http, server_ssl_context
from tests.logcapture import configured_logging, json_lines
from tests.web.conftest import HASH, PASSWORD, basic, ready_endpoints, serving

#: Put in every malformed request; it must never reach the log.
SENTINEL = b"SENTINEL-7f3e9c01"
AUTH = b"Authorization: " + basic("prometheus", PASSWORD).encode() + b"\r\n"

#: (what, the bytes sent, one write each, and the status of the last answer).
MALFORMED: tuple[tuple[str, tuple[bytes, ...], int], ...] = (
    (
        "64 KB header",
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-" + SENTINEL + b": " + b"a" * 65536 + b"\r\n\r\n",),
        400,
    ),
    ("garbage request line", (SENTINEL + b" \x00\x01 garbage\r\n\r\n",), 400),
    (
        "bad method after a good request",
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
            SENTINEL + b"( / HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        400,
    ),
    ("header without a colon", (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad " + SENTINEL + b"\r\n\r\n",), 400),
    (
        "overlong request line",
        (b"GET /api/v1/events?x=" + SENTINEL + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",),
        400,
    ),
    ("bad version", (b"GET / HTTP/9." + SENTINEL + b"\r\n\r\n",), 400),
    (
        "bad Content-Length",
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + SENTINEL + b"\r\n\r\n",),
        400,
    ),
    (
        "bad chunk size",
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz" + SENTINEL + b"\r\n",),
        400,
    ),
    (
        "too many headers",
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, SENTINEL) for i in range(200)) + b"\r\n",),
        400,
    ),
    (
        "undecodable gzip body on a GET",
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(SENTINEL), SENTINEL),
        ),
        200,
    ),
    (
        "non-ASCII Authorization",
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic \xff\xfe"
            + SENTINEL
            + b"\r\n\r\n",
        ),
        401,
    ),
    (
        "limit with 5000 digits",
        (
            b"GET /api/v1/events?limit="
            + b"1" * 5000
            + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + AUTH
            + b"\r\n",
        ),
        400,
    ),
    (
        "limit that is not UTF-8",
        (
            b"GET /api/v1/events?limit=%ff%fe"
            + SENTINEL
            + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + AUTH
            + b"\r\n",
        ),
        400,
    ),
)


async def exchange(port: int, parts: tuple[bytes, ...], *, tls: bool = False) -> bytes:
    """Send ``parts`` (each after the answer to the one before) and read until the server closes."""
    received = b""
    with anyio.fail_after(15):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            for index, part in enumerate(parts):
                await stream.send(part)
                if index + 1 < len(parts):
                    received += await stream.receive()
            try:
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                pass
    return received


def last_status(received: bytes) -> int:
    """The status of the last response in ``received``."""
    return int(re.findall(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ", received)[-1])


def assert_clean_log(text: str) -> list[dict[str, object]]:
    """Every line is JSON, nothing is a traceback and nothing the clients sent is in it."""
    lines = json_lines(text)
    assert "Traceback" not in text
    assert SENTINEL.decode() not in text
    return lines


async def test_malformed_requests_get_a_4xx_and_at_most_one_json_warning_each() -> None:
    """A 64 KB header, a garbage request line, a bad chunk and the like: each gets its 4xx (a body the
    server cannot decode, after its answer, closes the connection), and the log, JSON at debug level, has
    at most one ``http_bad_request`` warning per request, with no traceback and none of the client's bytes."""
    with configured_logging("debug", "json") as logged:
        async with serving(BasicAuth({"prometheus": HASH})) as server:
            for what, parts, status in MALFORMED:
                received = await exchange(server.port, parts)
                assert last_status(received) == status, (what, received[:200])
    lines = assert_clean_log(logged.getvalue())
    bad = [line for line in lines if line["event"] == "http_bad_request"]
    assert 1 <= len(bad) <= len(MALFORMED)
    for line in bad:
        assert set(line) == {"event", "status", "peer", "logger", "level", "timestamp"}
        assert line["status"] == 400
    assert all(line["level"] in ("debug", "info", "warning") for line in lines), lines


@pytest.mark.parametrize("path", ["/metrics", "/api/v1/deployments"])
async def test_a_client_leaving_in_the_middle_of_a_streamed_answer_writes_no_traceback(path: str) -> None:
    """A scraper that times out, or a reader of the first lines, closes the connection while a large answer
    is still being streamed: the log gets no traceback and nothing above debug, and the server goes on
    answering the next request whole."""
    with configured_logging("debug", "json") as logged:
        async with serving(None, others=3000) as server:
            for _ in range(3):
                with anyio.fail_after(15):
                    async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
                        await stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                        assert (await stream.receive()).startswith(b"HTTP/1.1 200 ")
            async with aiohttp.ClientSession() as session, session.get(server.base + path) as response:
                assert response.status == 200
                assert len(await response.read()) > 1_000_000
    lines = assert_clean_log(logged.getvalue())
    assert all(line["level"] in ("debug", "info") for line in lines), [
        line for line in lines if line["level"] not in ("debug", "info")
    ]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_tls_serves_metrics_over_https(tls_files: tuple[Path, Path]) -> None:
    """With a certificate and key, the endpoints answer over TLS to a client that trusts the certificate;
    plain HTTP and garbage on the TLS port are dropped without a traceback or their bytes in the log."""
    cert, key = tls_files
    context = server_ssl_context(str(cert), str(key))
    assert context is not None
    endpoints = ready_endpoints(Tracker())
    client_context = ssl.create_default_context(cafile=str(cert))
    with configured_logging("debug", "json") as logged:
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                lambda task_status: serve_http(
                    endpoints.app(), host="127.0.0.1", port=0, ssl_context=context, task_status=task_status
                )
            )
            async with aiohttp.ClientSession() as session:
                async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=client_context) as response:
                    assert response.status == 200
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        await response.read()
            for garbage in (
                b"GET /" + SENTINEL + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                b"\x16\x03\x01\x00\x05" + SENTINEL,
                SENTINEL * 100,
            ):
                assert b"HTTP/1." not in await exchange(port, (garbage,))
            tg.cancel_scope.cancel()
    assert_clean_log(logged.getvalue())
