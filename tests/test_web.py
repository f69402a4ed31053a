"""Tests for monitor.web: the HTTP endpoints over real loopback sockets."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import bcrypt
import pytest

from monitor.events import Event, EventType
from monitor.metrics import MetricsView, ProcessMetrics
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.sinks import EventBus
from monitor.tracker import Target, Tracker
from monitor.web import BasicAuth, Endpoints, serve_http

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
SNAPSHOT = LiveDeployment(
    rid=RID,
    model_rid="ri.models.main.model.1",
    model_version_rid="ri.models.main.model-version.1",
    runtime=RuntimeConfiguration(
        min_replicas=1, max_replicas=2, environment=(("API_KEY", "hmac-sha256:ab"),)
    ),
    state="ACTIVE",
    is_ready=True,
)
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


class Server:
    def __init__(self, base: str, tracker: Tracker, bus: EventBus, ready: list[bool]) -> None:
        self.base, self.tracker, self.bus, self.ready = base, tracker, bus, ready


async def _serve(auth: BasicAuth | None) -> AsyncIterator[Server]:
    tracker = Tracker()
    tracker.add(Target(RID, "scorer"))
    tracker.observe(RID, SNAPSHOT, 1000.0)
    metrics = ProcessMetrics()
    bus = EventBus([], metrics, keep=50)
    bus.publish([Event(EventType.OBSERVED, RID, "scorer", (), 1000.0 + i, i) for i in range(10)])
    ready = [False]
    view = MetricsView(metrics, tracker, label_names=(), staleness=1e12)
    endpoints = Endpoints(view=view, tracker=tracker, bus=bus, ready=lambda: ready[0], auth=auth)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_http(endpoints.app(), host="127.0.0.1", port=0, task_status=task_status)
        )
        yield Server(f"http://127.0.0.1:{port}", tracker, bus, ready)
        tg.cancel_scope.cancel()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for s in _serve(None):
        yield s


@pytest.fixture
async def protected() -> AsyncIterator[Server]:
    async for s in _serve(BasicAuth({"prometheus": HASH})):
        yield s


async def test_metrics_healthz_and_readyz(server: Server) -> None:
    """/metrics serves the families; /healthz is 200; /readyz is 503 until the first round is done."""
    async with aiohttp.ClientSession() as session:
        async with session.get(server.base + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert 'foundry_live_deployment_state{rid="' + RID in await response.text()
        async with session.get(
            server.base + "/metrics", headers={"Accept": "application/openmetrics-text"}
        ) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.text()).endswith("# EOF\n")
        async with session.get(
            server.base + "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            text = gzip.decompress(await response.read()).decode()
            assert 'foundry_live_deployment_state{rid="' + RID in text
        async with session.get(server.base + "/healthz") as response:
            assert response.status == 200
        async with session.get(server.base + "/readyz") as response:
            assert response.status == 503
        server.ready[0] = True
        async with session.get(server.base + "/readyz") as response:
            assert response.status == 200


async def test_deployments_api_has_no_secret_values(server: Server) -> None:
    """/api/v1/deployments lists snapshots; env vars appear only as digests."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.base + "/api/v1/deployments") as response,
    ):
        body = await response.json()
    (item,) = body["deployments"]
    assert item["rid"] == RID
    assert item["snapshot"]["status"]["state"] == "ACTIVE"
    assert item["snapshot"]["runtimeConfiguration"]["environmentVariables"] == {"API_KEY": "hmac-sha256:ab"}


async def test_events_api_limits(server: Server) -> None:
    """limit picks the newest events; a bad limit is a 400, not a crash."""
    async with aiohttp.ClientSession() as session:
        async with session.get(server.base + "/api/v1/events?limit=3") as response:
            events = (await response.json())["events"]
        assert [e["sequence"] for e in events] == [7, 8, 9]
        for bad in ("abc", "-1", "100000000"):
            async with session.get(server.base + f"/api/v1/events?limit={bad}") as response:
                assert response.status == 400


async def test_basic_auth_guards_every_endpoint(protected: Server) -> None:
    """Without or with wrong credentials: 401 with a challenge; with the right ones: 200."""
    good = "Basic " + base64.b64encode(b"prometheus:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"prometheus:nope").decode()
    async with aiohttp.ClientSession() as session:
        for path in ("/metrics", "/healthz", "/api/v1/deployments"):
            async with session.get(protected.base + path) as response:
                assert response.status == 401
                assert "Basic" in response.headers["WWW-Authenticate"]
            async with session.get(protected.base + path, headers={"Authorization": bad}) as response:
                assert response.status == 401
            async with session.get(protected.base + path, headers={"Authorization": good}) as response:
                assert response.status == 200


def test_basic_auth_rejects_malformed_headers() -> None:
    """Garbage in the Authorization header is a plain refusal."""
    auth = BasicAuth({"prometheus": HASH})
    for header in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()):
        assert not auth.check(header)


async def test_tls_serves_metrics_over_https(tmp_path: Path) -> None:
    """With a certificate and key, the endpoints answer over TLS to a client that trusts the certificate."""
    import ssl
    import subprocess

    from monitor.web import server_ssl_context

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
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
    context = server_ssl_context(str(cert), str(key))
    assert context is not None
    tracker = Tracker()
    metrics = ProcessMetrics()
    endpoints = Endpoints(
        view=MetricsView(metrics, tracker, label_names=(), staleness=60.0),
        tracker=tracker,
        bus=EventBus([], metrics),
        ready=lambda: True,
    )
    client_context = ssl.create_default_context(cafile=str(cert))
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
        tg.cancel_scope.cancel()
