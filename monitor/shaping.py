"""What one sink is sent: flaps held back or summarised, and recovery notices, from the exact events.

Pure and synchronous: the sink feeds events in outbox order with ``push`` and asks for what is ``due`` at a
time it passes. A FAILED or DEGRADED deployment is held (its later events with it, other deployments'
never) until it is back to ACTIVE within ``min_duration`` (a flap: one ``deployment.flapped`` summary, or
nothing) or its own event time plus ``min_duration`` has passed (then its events go out as they happened).
Every decision follows from the events' own times, so events read again after a restart are shaped alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from monitor.diff import FieldChange
from monitor.events import Event, EventType

#: The states a flap is made of, and the one it recovers to.
UNWELL_STATES: Final = frozenset({"FAILED", "DEGRADED"})
WELL_STATE: Final = "ACTIVE"
#: Events that say the deployment could not be seen (a recovery notice follows its return to health).
UNSEEN: Final = frozenset({EventType.UNREACHABLE, EventType.NOT_FOUND})
#: Events that always follow one of those.
BACK: Final = frozenset({EventType.RECOVERED, EventType.RETURNED})
#: Events whose state is one just observed (an unreachable or removed one repeats the last known).
FALLS: Final = frozenset({EventType.OBSERVED, EventType.CHANGED, *BACK})


class FlapMode(StrEnum):
    """What a sink gets for a flap: one summary event, or nothing."""

    SUMMARY = "summary"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Shaping:
    """One sink's shaping options; the defaults deliver every event as it is."""

    #: A FAILED/DEGRADED that recovers sooner is a flap (0: off).
    min_duration: float = 0.0
    flaps: FlapMode = FlapMode.SUMMARY
    #: Send ``deployment.healthy`` when a deployment is ACTIVE and ready again after trouble.
    recovery: bool = False


#: Every event delivered as it is.
UNSHAPED: Final = Shaping()


@dataclass(frozen=True, slots=True)
class FlapEvent(Event):
    """``deployment.flapped``: the events of one flap, summarised (the last one's state, time, sequence),
    with the net ``changes`` from before its first event to after its last."""

    #: The states gone through, consecutive repeats once.
    states: tuple[str, ...] = ()
    first_time: float = 0.0
    #: The events it stands for, oldest first: its ``event_id`` is derived from them.
    event_ids: tuple[str, ...] = ()

    def _make_id(self) -> str:
        content = json.dumps([self.type.value, self.rid, list(self.event_ids)], separators=(",", ":"))
        return hashlib.sha256(content.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        body = Event.to_json(self)
        body.update(
            states=list(self.states),
            first_time=_iso(self.first_time),
            last_time=_iso(self.time),
            count=len(self.event_ids),
            event_ids=list(self.event_ids),
        )
        return body


@dataclass(slots=True)
class _Hold:
    """A deployment's events held since it became FAILED/DEGRADED, until its first event's time plus
    ``min_duration``."""

    deadline: float
    events: list[Event]


class Shaper:
    """Shapes one sink's events; holds state only for deployments it is holding or owes a notice."""

    def __init__(self, shaping: Shaping) -> None:
        self._shaping = shaping
        self._holds: dict[str, _Hold] = {}
        #: Deployments the sink last heard were unwell or unseen: a notice is owed when they are well.
        self._unwell: set[str] = set()

    def push(self, event: Event) -> list[Event]:
        """What to deliver now that ``event`` comes next (it may be held, and held events released)."""
        hold = self._holds.get(event.rid)
        if hold is not None:
            if event.time > hold.deadline:
                return [*self._release(event.rid), *self.push(event)]
            hold.events.append(event)
            if event.type in FALLS and event.new_state == WELL_STATE:
                return self._flapped(self._holds.pop(event.rid).events)
            return self._release(event.rid) if event.type is EventType.REMOVED else []
        if self._shaping.min_duration > 0 and self._falls_unwell(event):
            self._holds[event.rid] = _Hold(event.time + self._shaping.min_duration, [event])
            return []
        return list(self._passed(event))

    def due(self, now: float) -> list[Event]:
        """The held events of deployments that stayed unwell past their deadline, as they happened."""
        expired = [rid for rid, hold in self._holds.items() if hold.deadline <= now]
        return [out for rid in expired for out in self._release(rid)]

    def next_deadline(self) -> float | None:
        """When ``due`` next has something to release."""
        return min((hold.deadline for hold in self._holds.values()), default=None)

    def held_from(self) -> int | None:
        """The lowest outbox seq among held events: the sink's cursor must stay before it."""
        seqs = [e.outbox_seq for hold in self._holds.values() for e in hold.events if e.outbox_seq]
        return min(seqs, default=None)

    def _falls_unwell(self, event: Event) -> bool:
        """Whether ``event`` takes a deployment the sink knows as well to FAILED/DEGRADED."""
        return (
            event.type in FALLS
            and event.new_state in UNWELL_STATES
            and event.old_state not in UNWELL_STATES
            and event.rid not in self._unwell
        )

    def _release(self, rid: str) -> list[Event]:
        return [out for event in self._holds.pop(rid).events for out in self._passed(event)]

    def _passed(self, event: Event) -> Iterator[Event]:
        """``event`` as it is, then the recovery notice it may call for."""
        yield event
        if event.type is EventType.REMOVED:
            self._unwell.discard(event.rid)
        elif event.new_state in UNWELL_STATES or event.type in UNSEEN:
            self._unwell.add(event.rid)
        elif _well(event):
            # Without what the last run knew, the event itself says it follows trouble.
            owed = event.rid in self._unwell or event.old_state in UNWELL_STATES or event.type in BACK
            self._unwell.discard(event.rid)
            if owed and self._shaping.recovery:
                yield _notice(event)

    def _flapped(self, events: list[Event]) -> list[Event]:
        last = events[-1]
        out: list[Event] = []
        if self._shaping.flaps is FlapMode.SUMMARY:
            out.append(flap_summary(events))
        # The flap itself owes no notice; trouble the sink heard of before it does.
        if _well(last) and last.rid in self._unwell:
            self._unwell.discard(last.rid)
            if self._shaping.recovery:
                out.append(_notice(last))
        return out


def flap_summary(events: list[Event]) -> FlapEvent:
    """The ``deployment.flapped`` event standing for ``events`` (one deployment's, oldest first)."""
    first, last = events[0], events[-1]
    # What differs between before and after the flap (a new model version, say) is not lost in it.
    net: dict[str, FieldChange] = {}
    for change in (change for event in events for change in event.changes):
        before = net.get(change.path, change)
        net[change.path] = FieldChange(change.path, before.old, change.new)
    states: list[str] = []
    for state in (first.old_state, *(e.new_state for e in events)):
        if state is not None and (not states or states[-1] != state):
            states.append(state)
    return FlapEvent(
        EventType.FLAPPED,
        last.rid,
        last.name,
        last.labels,
        last.time,
        last.sequence,
        old_state=first.old_state,
        new_state=last.new_state,
        ready=last.ready,
        changes=tuple(change for change in net.values() if change.old != change.new),
        # Its first event's place: until the summary is delivered, the cursor stays before the flap.
        outbox_seq=events[0].outbox_seq,
        states=tuple(states),
        first_time=first.time,
        event_ids=tuple(e.event_id for e in events),
    )


def _notice(event: Event) -> Event:
    """``deployment.healthy`` after ``event``: its id follows from the deployment and the event's sequence."""
    return Event(
        EventType.HEALTHY,
        event.rid,
        event.name,
        event.labels,
        event.time,
        event.sequence,
        new_state=event.new_state,
        ready=True,
        outbox_seq=event.outbox_seq,
    )


def _well(event: Event) -> bool:
    return event.new_state == WELL_STATE and event.ready is True


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
