"""Tests for monitor.alertmanager: events to firing and resolved alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from monitor.alertmanager import AlertmanagerSink
from monitor.events import Event, EventType
from monitor.metrics import ProcessMetrics

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"


def ev(kind: EventType, seq: int, old: str | None = None, new: str | None = None) -> Event:
    return Event(kind, RID, "scorer", (("team", "risk"),), 1000.0 + seq, seq, old_state=old, new_state=new)


def names(alerts: list[Any]) -> list[str]:
    return [a.name for a in alerts]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def test_failed_fires_and_recovery_resolves() -> None:
    """A change into FAILED fires one critical alert; the change back resolves it; repeats don't refire."""
    sink = AlertmanagerSink(ProcessMetrics(), url="http://127.0.0.1:1", session=None)  # type: ignore[arg-type]
    fired, resolved = sink.updates(ev(EventType.CHANGED, 1, "ACTIVE", "FAILED"))
    assert names(fired) == ["FoundryDeploymentFailed"]
    assert fired[0].payload()["labels"]["severity"] == "critical"
    assert fired[0].payload()["labels"]["team"] == "risk"
    assert sink.updates(ev(EventType.CHANGED, 2, "FAILED", "FAILED")) == ([], [])
    fired, resolved = sink.updates(ev(EventType.CHANGED, 3, "FAILED", "ACTIVE"))
    assert fired == []
    assert names(resolved) == ["FoundryDeploymentFailed"]
    assert sink.firing == {}


def test_unreachable_not_found_and_removed() -> None:
    """Unreachable fires until recovered; not found until returned; removal resolves everything."""
    sink = AlertmanagerSink(ProcessMetrics(), url="http://127.0.0.1:1", session=None)  # type: ignore[arg-type]
    assert names(sink.updates(ev(EventType.UNREACHABLE, 1))[0]) == ["FoundryDeploymentUnreachable"]
    assert names(sink.updates(ev(EventType.RECOVERED, 2, new="ACTIVE"))[1]) == [
        "FoundryDeploymentUnreachable"
    ]
    assert names(sink.updates(ev(EventType.NOT_FOUND, 3, old="ACTIVE"))[0]) == ["FoundryDeploymentNotFound"]
    assert names(sink.updates(ev(EventType.RETURNED, 4, "ACTIVE", "DEGRADED"))[1]) == [
        "FoundryDeploymentNotFound"
    ]
    assert list(sink.firing) == [("FoundryDeploymentDegraded", RID)]
    _, resolved = sink.updates(ev(EventType.REMOVED, 5))
    assert names(resolved) == ["FoundryDeploymentDegraded"]
    assert sink.firing == {}


class FakeAlertmanager:
    def __init__(self) -> None:
        self.posts: list[list[dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append(await request.json())
        return web.json_response({})


@pytest.fixture
async def alertmanager() -> AsyncIterator[tuple[FakeAlertmanager, str]]:
    fake = FakeAlertmanager()
    app = web.Application()
    app.router.add_post("/api/v2/alerts", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield fake, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_alerts_are_posted_resolved_and_resent(alertmanager: tuple[FakeAlertmanager, str]) -> None:
    """Firing alerts reach /api/v2/alerts, resolution carries endsAt, firing ones are re-sent."""
    fake, url = alertmanager
    async with aiohttp.ClientSession() as session:
        sink = AlertmanagerSink(ProcessMetrics(), url=url, session=session, resend_interval=0.05)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            sink.offer(ev(EventType.CHANGED, 1, "ACTIVE", "FAILED"))
            await until(lambda: len(fake.posts) >= 3)  # the first post and at least two re-sends
            sink.offer(ev(EventType.CHANGED, 2, "FAILED", "ACTIVE"))
            await until(lambda: any("endsAt" in alert for post in fake.posts for alert in post))
            tg.cancel_scope.cancel()
    first = fake.posts[0][0]
    assert first["labels"]["alertname"] == "FoundryDeploymentFailed"
    assert first["labels"]["rid"] == RID
    assert "endsAt" not in first
    assert all(post[0]["labels"] == first["labels"] for post in fake.posts)
