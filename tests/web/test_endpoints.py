"""Tests for monitor.web.endpoints: the HTTP endpoints over real loopback sockets."""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import aiohttp
import anyio
import bcrypt

from monitor.state import SqliteState, StateUnavailable
from monitor.status.routes import add_status_routes
from monitor.status.writer import HistoryWriter
from monitor.tracker import Target, Tracker
from monitor.web import BasicAuth, FailureLimiter, serve_http
from monitor.web.access import FAILURE_BURST, FAILURES_PER_MINUTE
from tests.logcapture import configured_logging, json_lines
from tests.web.conftest import PASSWORD, RID, SNAPSHOT, Server, basic, ready_endpoints, serving

#: Where the clients that are not the flooding one connect from (the whole of 127/8 is loopback).
OTHER_ADDRESS = "127.0.0.2"


def from_address(address: str) -> aiohttp.ClientSession:
    """A client session whose connections come from ``address``."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))

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


async def test_readyz_stays_ready_while_the_database_is_down_and_its_body_tells_the_database_state(
    server: Server,
) -> None:
    """Before the first round /readyz is 503; after it, 200 whether the state database answers or not, its
    JSON body saying up or down, since when, and the events held meanwhile."""
    async with aiohttp.ClientSession() as session:
        async with session.get(server.base + "/readyz") as response:
            assert (response.status, (await response.json())["ready"]) == (503, False)
        server.ready[0] = True
        async with session.get(server.base + "/readyz") as response:
            body = await response.json()
        assert response.status == 200
        assert (body["ready"], body["database"]["up"], body["database"]["events_held"]) == (True, True, 0)
        server.database.failed("append", StateUnavailable("state database: connection refused"))
        server.database.holding(7)
        async with session.get(server.base + "/readyz") as response:
            body = await response.json()
        assert response.status == 200
        assert (body["database"]["up"], body["database"]["events_held"]) == (False, 7)
        assert time.strptime(body["database"]["since"], "%Y-%m-%dT%H:%M:%SZ")


async def test_a_status_page_whose_history_cannot_be_read_is_a_503_without_a_traceback(
    tmp_path: Path,
) -> None:
    """A page that reads the status history while the state cannot be used answers 503, and nothing is
    logged at error level (no traceback of the handler)."""
    state = SqliteState(tmp_path / "state.sqlite3")
    await state.open()
    await state.close()  # every use now fails as StateUnavailable
    tracker = Tracker()
    tracker.add(Target(RID, "scorer"))
    tracker.observe(RID, SNAPSHOT, 1000.0)
    app = ready_endpoints(tracker).app()
    add_status_routes(app, tracker=tracker, history=HistoryWriter(state.history, tracker))
    with configured_logging("info", "json") as logged:
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                lambda task_status: serve_http(app, host="127.0.0.1", port=0, task_status=task_status)
            )
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/deployments/{RID}") as response,
            ):
                assert response.status == 503
            tg.cancel_scope.cancel()
    assert "Traceback" not in logged.getvalue()
    assert all(line["level"] != "error" for line in json_lines(logged.getvalue()))


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


async def test_a_large_listing_does_not_hold_up_other_requests() -> None:
    """/api/v1/deployments is written a batch at a time: while four clients fetch the listing of 5,000
    deployments over and over, /healthz answers in under 100 ms (the 95th percentile), and each listing
    is whole."""
    bodies: list[bytes] = []
    latencies: list[float] = []
    async with serving(None, others=4999) as server, aiohttp.ClientSession() as session:

        async def fetch() -> None:
            for _ in range(3):
                async with session.get(server.base + "/api/v1/deployments") as response:
                    bodies.append(await response.read())

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(fetch)
                while len(bodies) < 12 and len(latencies) < 20_000:
                    start = time.perf_counter()
                    async with session.get(server.base + "/healthz") as response:
                        assert response.status == 200
                    latencies.append(time.perf_counter() - start)
    assert all(len(json.loads(body)["deployments"]) == 5000 for body in bodies)
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95)]
    assert p95 < 0.1, f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms over {len(latencies)}"


async def test_basic_auth_guards_every_endpoint(protected: Server) -> None:
    """Without or with wrong credentials: 401 with a challenge; with the right ones: 200."""
    good = basic("prometheus", PASSWORD)
    bad = basic("prometheus", "nope")
    async with aiohttp.ClientSession() as session:
        for path in ("/metrics", "/healthz", "/api/v1/deployments"):
            async with session.get(protected.base + path) as response:
                assert response.status == 401
                assert "Basic" in response.headers["WWW-Authenticate"]
            async with session.get(protected.base + path, headers={"Authorization": bad}) as response:
                assert response.status == 401
            async with session.get(protected.base + path, headers={"Authorization": good}) as response:
                assert response.status == 200


async def test_a_client_over_its_failure_limit_gets_429_and_others_still_pass(protected: Server) -> None:
    """After its burst of wrong passwords a client gets 429 with Retry-After, even with the right password
    (no bcrypt is spent on it); the right password from another address gets 200, and once remembered it
    passes from the limited address too."""
    url = protected.base + "/metrics"
    statuses: list[int] = []
    async with aiohttp.ClientSession() as flooder:
        for attempt in range(FAILURE_BURST + 5):
            async with flooder.get(url, headers={"Authorization": basic("prometheus", f"no-{attempt}")}) as r:
                statuses.append(r.status)
                retry_after = r.headers.get("Retry-After")
        assert statuses == [401] * FAILURE_BURST + [429] * 5
        assert retry_after is not None
        assert 1 <= int(retry_after) <= math.ceil(60 / FAILURES_PER_MINUTE)
        async with flooder.get(url, headers={"Authorization": basic("prometheus", PASSWORD)}) as r:
            assert r.status == 429
        async with (
            from_address(OTHER_ADDRESS) as other,
            other.get(url, headers={"Authorization": basic("prometheus", PASSWORD)}) as r,
        ):
            assert r.status == 200
        async with flooder.get(url, headers={"Authorization": basic("prometheus", PASSWORD)}) as r:
            assert r.status == 200


async def test_an_authorized_scrape_stays_fast_while_four_clients_flood_wrong_passwords() -> None:
    """bcrypt runs off the event loop: while four clients send wrong passwords, each one a real check at
    cost 12 (the limit on failures raised so that the flood is bcrypt work throughout), scrapes from an
    authorized client take under 100 ms (the 95th percentile; about 800 ms when bcrypt ran on the loop)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()
    auth = BasicAuth({"prometheus": hashed}, failures=FailureLimiter(burst=1000))
    checked = [0]
    stop = anyio.Event()
    latencies: list[float] = []

    async with serving(auth) as server:
        url = server.base + "/metrics"

        async def flood(client: int) -> None:
            async with aiohttp.ClientSession() as session:
                for n in range(100):
                    if stop.is_set():
                        return
                    header = {"Authorization": basic("prometheus", f"wrong-{client}-{n}")}
                    async with session.get(url, headers=header) as response:
                        assert response.status == 401
                    checked[0] += 1

        async with from_address(OTHER_ADDRESS) as scraper:
            good = {"Authorization": basic("prometheus", PASSWORD)}
            async with scraper.get(url, headers=good) as response:
                assert response.status == 200
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for client in range(4):
                        tg.start_soon(flood, client)
                    while checked[0] < 12 and len(latencies) < 20_000:
                        start = time.perf_counter()
                        async with scraper.get(url, headers=good) as response:
                            assert response.status == 200
                            await response.read()
                        latencies.append(time.perf_counter() - start)
                    stop.set()
    assert checked[0] >= 12
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95)]
    assert p95 < 0.1, f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms over {len(latencies)}"


async def test_the_after_scrape_hook_runs_once_per_scrape_sent_whole(server: Server) -> None:
    """Each /metrics answer, plain or gzip, runs the hook (the service's memory release) once, after its
    body; other endpoints do not run it."""
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Accept-Encoding": "gzip"}):
            async with session.get(server.base + "/metrics", headers=headers) as response:
                await response.read()
        async with session.get(server.base + "/healthz") as response:
            await response.read()
        with anyio.fail_after(5):
            while server.scrapes_sent < 2:
                await anyio.sleep(0.01)
    assert server.scrapes_sent == 2
