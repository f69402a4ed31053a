"""Builders shared by the status tests: snapshots, records and events with only what a test sets."""

from __future__ import annotations

from monitor.events import Event, EventType
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.tracker import Record, Target

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
#: 2026-12-01T00:00:00Z: a UTC midnight, so tests can place changes around day boundaries.
MIDNIGHT = 1_796_083_200.0


def snapshot(
    state: str = "ACTIVE", ready: bool = True, min_replicas: int = 1, rid: str = RID
) -> LiveDeployment:
    return LiveDeployment(
        rid=rid,
        model_rid="ri.models.main.model.m",
        model_version_rid="ri.models.main.model-version.v1",
        runtime=RuntimeConfiguration(min_replicas=min_replicas, max_replicas=3),
        state=state,
        is_ready=ready,
    )


def record(
    state: str = "ACTIVE",
    ready: bool = True,
    *,
    min_replicas: int = 1,
    rid: str = RID,
    last_success: float | None = MIDNIGHT,
    **fields: object,
) -> Record:
    rec = Record(
        target=Target(rid=rid, name="scorer", labels=(("team", "risk"),)),
        snapshot=snapshot(state, ready, min_replicas, rid),
        found=True,
        up=True,
        last_success=last_success,
    )
    for key, value in fields.items():
        setattr(rec, key, value)
    return rec


def event(kind: EventType, time: float, rid: str = RID, **details: object) -> Event:
    return Event(
        type=kind,
        rid=rid,
        name="scorer",
        labels=(("team", "risk"),),
        time=time,
        sequence=int(time),
        **details,  # type: ignore[arg-type]
    )
