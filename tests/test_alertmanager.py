"""Tests for monitor.sinks.alertmanager: the firing set from the tracker's records, transitions from events,
and what reaches a receiver on loopback (the end-to-end test against a real Alertmanager is beside this)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from monitor.config import AlertmanagerConfig
from monitor.errors import LiveDeploymentNotFound, RequestTimeout
from monitor.events import Event, EventType
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment, ModelVersion, RuntimeConfiguration
from monitor.rollouts import Lag, Rollouts
from monitor.sinks import AlertmanagerSink
from monitor.sinks.alertmanager import Alert, firing_alerts, transitions
from monitor.state import MemoryState
from monitor.tracker import Target, Tracker

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
FAILED = ("FoundryDeploymentFailed", RID)


def rid(i: int) -> str:
    return f"ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{i:012d}"


def snapshot(state: str, *, of: str = RID) -> LiveDeployment:
    return LiveDeployment(
        rid=of,
        model_rid="ri.models.main.model.1",
        model_version_rid="ri.models.main.model-version.1",
        runtime=RuntimeConfiguration(min_replicas=1, max_replicas=1),
        state=state,
        is_ready=state == "ACTIVE",
    )


def ev(kind: EventType, seq: int, old: str | None = None, new: str | None = None) -> Event:
    return Event(kind, RID, "scorer", (("team", "risk"),), 1000.0 + seq, seq, old_state=old, new_state=new)


def names(alerts: list[Alert]) -> list[str]:
    return [a.name for a in alerts]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def test_a_change_into_failed_fires_and_the_change_back_resolves() -> None:
    """A change into FAILED fires one critical alert with the deployment's labels; a change that stays
    FAILED fires nothing again; the change back resolves it."""
    fired, resolved = transitions(ev(EventType.CHANGED, 1, "ACTIVE", "FAILED"))
    assert (names(fired), resolved) == (["FoundryDeploymentFailed"], [])
    labels = fired[0].payload()["labels"]
    assert (labels["severity"], labels["team"], labels["rid"], labels["deployment"]) == (
        "critical",
        "risk",
        RID,
        "scorer",
    )
    assert transitions(ev(EventType.CHANGED, 2, "FAILED", "FAILED")) == ([], [])
    fired, resolved = transitions(ev(EventType.CHANGED, 3, "FAILED", "DEGRADED"))
    assert (names(fired), names(resolved)) == (["FoundryDeploymentDegraded"], ["FoundryDeploymentFailed"])
    assert "endsAt" in resolved[0].payload(ends_at=1003.0)


def test_unreachable_not_found_returned_and_removed() -> None:
    """Unreachable fires until recovered; not found resolves the state alert and fires until the
    deployment returns (into whatever state it is in); removal resolves every alert of the deployment."""
    assert names(transitions(ev(EventType.UNREACHABLE, 1))[0]) == ["FoundryDeploymentUnreachable"]
    fired, resolved = transitions(ev(EventType.RECOVERED, 2, new="ACTIVE"))
    assert (fired, names(resolved)) == ([], ["FoundryDeploymentUnreachable"])
    fired, resolved = transitions(ev(EventType.NOT_FOUND, 3, old="FAILED"))
    assert (names(fired), names(resolved)) == (["FoundryDeploymentNotFound"], ["FoundryDeploymentFailed"])
    fired, resolved = transitions(ev(EventType.RETURNED, 4, "FAILED", "FAILED"))
    assert (names(fired), names(resolved)) == (["FoundryDeploymentFailed"], ["FoundryDeploymentNotFound"])
    fired, resolved = transitions(ev(EventType.REMOVED, 5))
    assert fired == []
    assert sorted(names(resolved)) == sorted(
        ["FoundryDeploymentFailed", "FoundryDeploymentDegraded", "FoundryDeploymentUnreachable",
         "FoundryDeploymentNotFound", "FoundryDeploymentRolloutStuck"]
    )  # fmt: skip


def test_the_firing_set_is_what_the_records_say_now() -> None:
    """FAILED and DEGRADED records fire their alert, an unreachable one fires (beside its last state's), a
    missing one fires not-found only; healthy and never-answered deployments fire nothing."""
    tracker = Tracker(unreachable_after=1)
    states = ["FAILED", "DEGRADED", "ACTIVE", "FAILED", "DEGRADED"]
    for i, state in enumerate(states):
        tracker.add(Target(rid(i), f"d{i}"))
        tracker.observe(rid(i), snapshot(state, of=rid(i)), 100.0)
    tracker.fail(rid(3), RequestTimeout("read"), 110.0)
    tracker.fail(rid(4), LiveDeploymentNotFound("gone", status=404), 110.0)
    tracker.add(Target(rid(5), "never-answered"))
    assert sorted(firing_alerts(tracker, 120.0)) == [
        ("FoundryDeploymentDegraded", rid(1)),
        ("FoundryDeploymentFailed", rid(0)),
        ("FoundryDeploymentFailed", rid(3)),
        ("FoundryDeploymentNotFound", rid(4)),
        ("FoundryDeploymentUnreachable", rid(3)),
    ]


def test_an_announced_rollout_lag_fires_rollout_stuck_from_the_record_and_the_events() -> None:
    """A record whose version_behind was emitted fires FoundryDeploymentRolloutStuck (dated by the
    announcement); one still in its grace does not; version_behind fires the alert and version_caught_up
    resolves it, under the rule's name and severity."""

    def direct(i: int, version: str = "ri.models.main.model-version.1") -> LiveDeployment:
        return dataclasses.replace(snapshot("ACTIVE", of=rid(i)), branch="master", model_version_rid=version)

    tracker = Tracker()
    for i in range(2):
        tracker.add(Target(rid(i), f"d{i}"))
        tracker.observe(rid(i), direct(i), 100.0)
    model = "ri.models.main.model.1"
    newer = "ri.models.main.model-version.00000000-0000-4000-8000-0000000000ff"
    rollouts = Rollouts(grace=50.0)
    rollouts.listed((model, "master"), [ModelVersion(newer, 40.0)])
    events = rollouts.check(tracker, 100.0)
    assert [e.type for e in events] == [EventType.VERSION_BEHIND] * 2
    tracker.set_lag(rid(1), Lag(model, "master", newer, since=90.0), 100.0)
    firing = firing_alerts(tracker, 120.0)
    assert sorted(firing) == [("FoundryDeploymentRolloutStuck", rid(0))]
    alert = firing[("FoundryDeploymentRolloutStuck", rid(0))]
    assert alert.starts_at == 100.0
    assert alert.payload()["labels"]["severity"] == "warning"
    assert newer in alert.description
    fired, resolved = transitions(events[0])
    assert (names(fired), names(resolved)) == (["FoundryDeploymentRolloutStuck"], [])
    tracker.observe(rid(0), direct(0, newer), 130.0)
    caught_up = rollouts.check(tracker, 130.0)
    assert [e.type for e in caught_up] == [EventType.VERSION_CAUGHT_UP]
    fired, resolved = transitions(caught_up[0])
    assert (names(fired), names(resolved)) == ([], ["FoundryDeploymentRolloutStuck"])
    assert ("FoundryDeploymentRolloutStuck", rid(0)) not in firing_alerts(tracker, 140.0)


class FakeAlertmanager:
    """Alertmanager's POST /api/v2/alerts on loopback, answering 503 to the first ``fail_first`` posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        self.attempts = 0
        self.fail_first = fail_first

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=503)
        self.posts.append(await request.json())
        return web.json_response({})

    def sent(self, key: tuple[str, str], *, resolved: bool) -> list[dict[str, Any]]:
        """Every alert with ``key`` posted so far, firing ones or resolved ones."""
        return [
            alert
            for post in self.posts
            for alert in post
            if (alert["labels"]["alertname"], alert["labels"]["rid"]) == key
            and ("endsAt" in alert) == resolved
        ]


@asynccontextmanager
async def serving(fake: FakeAlertmanager) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/api/v2/alerts", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def tracker() -> Tracker:
    """One deployment, polled once and FAILED: a record that no event given to the sink told it about."""
    tracker = Tracker()
    tracker.add(Target(RID, "scorer", (("team", "risk"),)))
    tracker.observe(RID, snapshot("FAILED"), 100.0)
    return tracker


def sink_for(url: str, session: aiohttp.ClientSession, outbox: MemoryState, tracker: Tracker,
             loaded: anyio.Event, **settings: Any) -> AlertmanagerSink:  # fmt: skip
    config = AlertmanagerConfig(url=url, **{"resend_interval": 0.05, "max_retries": 0, **settings})

    async def records() -> Tracker:
        return tracker

    return AlertmanagerSink(
        ProcessMetrics(),
        outbox,
        config,
        session=session,
        records=records,
        loaded=loaded,
        retry_initial=0.01,
        retry_max=0.05,
    )


async def test_what_the_records_fire_is_sent_once_the_watch_set_is_loaded_and_then_resent(
    tracker: Tracker, outbox: MemoryState
) -> None:
    """A FAILED record fires though no event said so (as after a restart); the firing set is first sent
    only once the watch set is loaded (an event's post comes through before it), then every interval."""
    fake = FakeAlertmanager()
    loaded = anyio.Event()
    async with serving(fake) as url, aiohttp.ClientSession() as session:
        sink = sink_for(url, session, outbox, tracker, loaded)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            other = dataclasses.replace(ev(EventType.UNREACHABLE, 1), rid=rid(9))
            sink.offer(other)
            await until(lambda: len(fake.posts) == 1)
            loaded.set()
            await until(lambda: len(fake.sent(FAILED, resolved=False)) >= 3)
            tg.cancel_scope.cancel()
    assert fake.posts[0][0]["labels"]["rid"] == rid(9)
    first = fake.sent(FAILED, resolved=False)[0]
    assert first["labels"] == {
        "alertname": "FoundryDeploymentFailed",
        "severity": "critical",
        "rid": RID,
        "deployment": "scorer",
        "team": "risk",
        "source": "foundry-monitor",
    }


async def test_an_alert_the_records_no_longer_fire_is_sent_resolved(
    tracker: Tracker, outbox: MemoryState
) -> None:
    """Once the record is ACTIVE again the next send resolves the alert (endsAt), with no event needed;
    the sends after that carry what still fires, and not that alert."""
    other = ("FoundryDeploymentDegraded", rid(2))
    tracker.add(Target(rid(2), "other"))
    tracker.observe(rid(2), snapshot("DEGRADED", of=rid(2)), 100.0)
    fake = FakeAlertmanager()
    loaded = anyio.Event()
    loaded.set()
    async with serving(fake) as url, aiohttp.ClientSession() as session:
        sink = sink_for(url, session, outbox, tracker, loaded)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            await until(lambda: bool(fake.sent(FAILED, resolved=False)))
            tracker.observe(RID, snapshot("ACTIVE"), 200.0)
            await until(lambda: bool(fake.sent(FAILED, resolved=True)))
            posts = len(fake.posts)
            await until(lambda: len(fake.posts) >= posts + 2)
            tg.cancel_scope.cancel()
    assert len(fake.sent(FAILED, resolved=True)) == 1
    for post in fake.posts[posts:]:
        assert [(a["labels"]["alertname"], a["labels"]["rid"], "endsAt" in a) for a in post] == [
            (*other, False)
        ]
    assert list(sink.sent) == [other]


async def test_a_failed_post_is_sent_again_and_its_events_stay_unacknowledged(
    tracker: Tracker, outbox: MemoryState
) -> None:
    """While Alertmanager answers 503, the event batch is not acknowledged and the firing set is not
    forgotten: both are sent again with backoff (well before the resend interval) until they go through."""
    fake = FakeAlertmanager(fail_first=6)
    loaded = anyio.Event()
    loaded.set()
    async with serving(fake) as url, aiohttp.ClientSession() as session:
        sink = sink_for(url, session, outbox, tracker, loaded, resend_interval=60.0)
        seqs = await outbox.append([ev(EventType.CHANGED, 1, "ACTIVE", "DEGRADED").to_json()])
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            sink.offer(
                dataclasses.replace(ev(EventType.CHANGED, 1, "ACTIVE", "DEGRADED"), outbox_seq=seqs[0])
            )
            await until(lambda: fake.attempts >= 3)
            assert [p.seq for p in await outbox.pending("alertmanager")] == seqs
            await until(lambda: bool(fake.sent(FAILED, resolved=False)))
            await until(lambda: bool(fake.sent(("FoundryDeploymentDegraded", RID), resolved=False)))
            with anyio.fail_after(5):
                while await outbox.pending("alertmanager"):
                    await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
    assert fake.attempts > 6


async def test_a_failed_blip_between_resends_still_fires_and_resolves(outbox: MemoryState) -> None:
    """Transitions go out as their events arrive: FAILED and back within one resend interval reaches
    Alertmanager as a firing alert, then the same alert resolved at the time of the recovery."""
    fake = FakeAlertmanager()
    loaded = anyio.Event()
    loaded.set()
    async with serving(fake) as url, aiohttp.ClientSession() as session:
        sink = sink_for(url, session, outbox, Tracker(), loaded, resend_interval=60.0)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            sink.offer(ev(EventType.CHANGED, 1, "ACTIVE", "FAILED"))
            sink.offer(ev(EventType.CHANGED, 2, "FAILED", "ACTIVE"))
            await until(lambda: bool(fake.sent(FAILED, resolved=True)))
            tg.cancel_scope.cancel()
    (fired,) = fake.sent(FAILED, resolved=False)
    (resolved,) = fake.sent(FAILED, resolved=True)
    assert fired["labels"] == resolved["labels"]
    assert resolved["endsAt"] == "1970-01-01T00:16:42.000Z"
