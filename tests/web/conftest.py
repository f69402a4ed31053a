"""Fixtures for the HTTP server tests: the endpoints over a small fleet, served on a loopback port 0."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import bcrypt
import pytest

from monitor.events import Event, EventType
from monitor.metrics import MetricsView, ProcessMetrics
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.sinks import EventBus
from monitor.state import DatabaseHealth
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
PASSWORD = "s3cret"
#: A cheap hash for the tests that only need a right and a wrong password.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    """An ``Authorization`` header value for basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Server:
    def __init__(
        self,
        base: str,
        port: int,
        tracker: Tracker,
        bus: EventBus,
        ready: list[bool],
        database: DatabaseHealth,
    ) -> None:
        self.base, self.port, self.tracker, self.bus, self.ready = base, port, tracker, bus, ready
        self.database = database
        #: How many scrapes were sent whole (the endpoints' ``after_scrape``).
        self.scrapes_sent = 0

    def scrape_sent(self) -> None:
        self.scrapes_sent += 1


def ready_endpoints(tracker: Tracker) -> Endpoints:
    """Endpoints over ``tracker`` (no events, its own metrics), past the first round, the database up."""
    metrics = ProcessMetrics()
    return Endpoints(
        view=MetricsView(metrics, tracker, label_names=(), staleness=60.0),
        tracker=tracker,
        bus=EventBus([], metrics),
        ready=lambda: True,
        database=DatabaseHealth(metrics),
    )


@asynccontextmanager
async def serving(auth: BasicAuth | None, *, others: int = 0) -> AsyncIterator[Server]:
    """The endpoints over one watched deployment (and ``others`` more) and ten events, until the block ends."""
    tracker = Tracker()
    tracker.add(Target(RID, "scorer"))
    tracker.observe(RID, SNAPSHOT, 1000.0)
    for n in range(others):
        rid = RID[:-12] + f"{n + 2:012d}"
        tracker.add(Target(rid, f"other-{n}", (("team", "t"),)))
        tracker.observe(rid, dataclasses.replace(SNAPSHOT, rid=rid), 1000.0)
    metrics = ProcessMetrics()
    bus = EventBus([], metrics, keep=50)
    bus.publish([Event(EventType.OBSERVED, RID, "scorer", (), 1000.0 + i, i) for i in range(10)])
    ready = [False]
    view = MetricsView(metrics, tracker, label_names=(), staleness=1e12)
    database = DatabaseHealth(metrics)
    sent: list[Server] = []
    endpoints = Endpoints(
        view=view,
        tracker=tracker,
        bus=bus,
        ready=lambda: ready[0],
        database=database,
        auth=auth,
        after_scrape=lambda: sent[0].scrape_sent(),
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_http(endpoints.app(), host="127.0.0.1", port=0, task_status=task_status)
        )
        sent.append(Server(f"http://127.0.0.1:{port}", port, tracker, bus, ready, database))
        yield sent[0]
        tg.cancel_scope.cancel()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serving(None) as s:
        yield s


@pytest.fixture
async def protected() -> AsyncIterator[Server]:
    async with serving(BasicAuth({"prometheus": HASH})) as s:
        yield s
