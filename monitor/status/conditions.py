"""What a deployment's condition is at a moment, from a snapshot, a watch record or an event, and how each
condition counts for availability and how bad it is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from monitor.events import Event, EventType
from monitor.tracker import Record


class Kind(StrEnum):
    """How a condition counts for availability."""

    UP = "up"
    #: Expected to serve and not serving.
    DOWN = "down"
    #: Not expected to serve (DISABLED, scaled to zero): excluded from availability, shown apart.
    IDLE = "idle"
    #: The monitor does not know (it was down, had no answer yet, or could not reach Foundry).
    UNKNOWN = "unknown"


class Condition(StrEnum):
    """A deployment's condition; the values are stored, so they never change."""

    UP = "up"
    STARTING = "starting"
    DEGRADED = "degraded"
    NOT_READY = "not_ready"
    FAILED = "failed"
    UNRECOGNISED = "unrecognised"
    NOT_FOUND = "not_found"
    UNREACHABLE = "unreachable"
    DISABLED = "disabled"
    SCALED_TO_ZERO = "scaled_to_zero"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Look:
    """How a condition is counted and shown: never by colour alone, so each has a word and a symbol."""

    kind: Kind
    label: str
    symbol: str
    #: Higher is worse; the day bar colours a day by its worst known condition.
    severity: int
    #: A shields.io colour name.
    shield: str


LOOKS: Mapping[Condition, Look] = {
    Condition.FAILED: Look(Kind.DOWN, "Failed", "✕", 100, "red"),
    Condition.NOT_FOUND: Look(Kind.DOWN, "Not found", "∅", 90, "red"),
    Condition.NOT_READY: Look(Kind.DOWN, "Not ready", "!", 80, "orange"),
    Condition.DEGRADED: Look(Kind.DOWN, "Degraded", "▲", 70, "orange"),
    Condition.UNRECOGNISED: Look(Kind.DOWN, "Unrecognised state", "?", 60, "orange"),
    Condition.STARTING: Look(Kind.DOWN, "Starting", "↻", 50, "yellow"),
    Condition.UNREACHABLE: Look(Kind.UNKNOWN, "Unreachable", "⚡", 40, "purple"),
    Condition.UNKNOWN: Look(Kind.UNKNOWN, "No data", "…", 30, "lightgrey"),
    Condition.UP: Look(Kind.UP, "Up", "✓", 20, "brightgreen"),
    Condition.SCALED_TO_ZERO: Look(Kind.IDLE, "Scaled to zero", "○", 10, "blue"),
    Condition.DISABLED: Look(Kind.IDLE, "Disabled", "‖", 5, "inactive"),
}

_FROM_STATE = {
    "STARTING": Condition.STARTING,
    "DEGRADED": Condition.DEGRADED,
    "FAILED": Condition.FAILED,
    "DISABLED": Condition.DISABLED,
}


def look(condition: Condition) -> Look:
    return LOOKS[condition]


def is_problem(condition: Condition) -> bool:
    """Whether the condition is one an operator should look at (down, or unreachable)."""
    return LOOKS[condition].kind is Kind.DOWN or condition is Condition.UNREACHABLE


def condition_of(state: str, ready: bool, min_replicas: int | None) -> Condition:
    """The condition a deployment in ``state`` is in.

    ACTIVE and not ready with ``minReplicas: 0`` is scaled to zero (not expected to serve); with replicas
    asked for, or when the minimum is not known, it is not ready (expected and not serving).
    """
    if state == "ACTIVE":
        if ready:
            return Condition.UP
        return Condition.SCALED_TO_ZERO if min_replicas == 0 else Condition.NOT_READY
    return _FROM_STATE.get(state, Condition.UNRECOGNISED)


def condition_of_record(record: Record, started: float) -> Condition:
    """The condition the tracker's record shows; what the last run saw counts as unknown until this run
    (begun at ``started``) has had an answer."""
    if record.unreachable:
        return Condition.UNREACHABLE
    if record.last_success is None or record.last_success < started:
        return Condition.UNKNOWN
    if record.found is False:
        return Condition.NOT_FOUND
    snapshot = record.snapshot
    if snapshot is None:
        return Condition.UNKNOWN
    return condition_of(snapshot.state, snapshot.is_ready, snapshot.runtime.min_replicas)


def condition_of_event(event: Event, min_replicas: int | None) -> Condition | None:
    """The condition ``event`` puts its deployment in, or None when it does not say (a removal, or a
    recovery that a ``not_found`` event follows)."""
    if event.type is EventType.NOT_FOUND:
        return Condition.NOT_FOUND
    if event.type is EventType.UNREACHABLE:
        return Condition.UNREACHABLE
    if event.type is EventType.REMOVED or event.new_state is None or event.ready is None:
        return None
    return condition_of(event.new_state, event.ready, min_replicas)
