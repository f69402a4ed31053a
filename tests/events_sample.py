"""One real event of every type, made by the tracker from a scripted life of one deployment, and by a shaping
sink's ``Shaper`` from a short and a long failure."""

from __future__ import annotations

import dataclasses

from monitor.errors import LiveDeploymentNotFound, ServerError
from monitor.events import Event, EventType
from monitor.model import LiveDeployment, ModelVersion, RuntimeConfiguration
from monitor.rollouts import Rollouts
from monitor.shaping import Shaper, Shaping
from monitor.tracker import Target, Tracker

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-0000000000e1"
NEWER_VERSION = "ri.models.main.model-version.00000000-0000-4000-8000-000000000002"
BASE = LiveDeployment(
    rid=RID,
    model_rid="ri.models.main.model.00000000-0000-4000-8000-00000000000a",
    model_version_rid="ri.models.main.model-version.00000000-0000-4000-8000-000000000001",
    runtime=RuntimeConfiguration(min_replicas=1, max_replicas=3, environment=(("KEY", "hmac-sha256:aa"),)),
    state="ACTIVE",
    is_ready=True,
    branch="master",
)


FAILED = dataclasses.replace(BASE, state="FAILED", is_ready=False)


def tracker() -> Tracker:
    watching = Tracker(unreachable_after=2)
    watching.add(Target(rid=RID, name="scorer", labels=(("team", "risk"),)))
    return watching


def shaped_events() -> list[Event]:
    """What a sink with ``min_duration: 1m`` and ``recovery`` sends of a 10 s failure and a 100 s one:
    observed, flapped, changed (FAILED, delivered late), changed (ACTIVE) and healthy."""
    watching = tracker()
    shaper = Shaper(Shaping(min_duration=60.0, recovery=True))
    start = 1_700_001_000.0
    events = watching.observe(RID, BASE, start)
    for second, snapshot in ((10.0, FAILED), (20.0, BASE), (100.0, FAILED), (200.0, BASE)):
        events += watching.observe(RID, snapshot, start + second)
    return [out for event in events for out in shaper.push(event)]


def life_events() -> list[Event]:
    """observed, changed, unreachable, recovered, not_found, returned, version_behind, version_caught_up and
    removed, in that order; then flapped and healthy."""
    watching = tracker()
    events = watching.observe(RID, BASE, 1_700_000_000.0)
    failed = FAILED
    events += watching.observe(RID, failed, 1_700_000_010.0)
    for second in (20.0, 30.0):
        events += watching.fail(RID, ServerError("down", status=503), 1_700_000_000.0 + second)
    events += watching.observe(RID, failed, 1_700_000_040.0)
    events += watching.fail(RID, LiveDeploymentNotFound("gone", status=404), 1_700_000_050.0)
    events += watching.observe(RID, BASE, 1_700_000_060.0)
    rollouts = Rollouts(grace=10.0)
    newer = ModelVersion(rid=NEWER_VERSION, created_time=1_700_000_050.0)
    rollouts.listed(
        (BASE.model_rid, "master"), [ModelVersion(BASE.model_version_rid, 1_600_000_000.0), newer]
    )
    events += rollouts.check(watching, 1_700_000_065.0)
    events += watching.observe(
        RID, dataclasses.replace(BASE, model_version_rid=NEWER_VERSION), 1_700_000_066.0
    )
    events += rollouts.check(watching, 1_700_000_066.0)
    removed = watching.remove(RID, 1_700_000_070.0)
    assert removed is not None
    events.append(removed)
    events += [event for event in shaped_events() if event.type in (EventType.FLAPPED, EventType.HEALTHY)]
    assert {event.type for event in events} == set(EventType), [e.type for e in events]
    return events
