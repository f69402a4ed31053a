"""Turns the tracker's records and events into condition history: change points, per-day durations and
transitions, handed out in batches for the store. Pure and synchronous: the writer does the I/O."""

from __future__ import annotations

import collections
import heapq
import itertools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from monitor.diff import FieldChange
from monitor.events import Event, EventType
from monitor.model import FieldValue
from monitor.status.conditions import Condition, condition_of_event, condition_of_record
from monitor.status.history import ChangePoint, add_millis, split_by_day
from monitor.status.store import (
    POINTS_KEPT,
    TRANSITIONS_KEPT,
    DayIncrement,
    HistoryBatch,
    OpenInterval,
    Transition,
)
from monitor.tracker import Record

_ENV_PREFIX = "runtimeConfiguration.environmentVariables."
#: Field changes kept per transition: a change of everything at once is summarised, not stored whole.
_CHANGES_KEPT = 20
#: A deployment's milliseconds not yet written, as ``(day, condition, millis)``: one or two triples between
#: flushes, where nested dicts cost ~500 bytes a deployment (5 MB for a fleet of 10,000 whose first tick,
#: before their first answers, started their unknown time).
_Millis = tuple[tuple[int, Condition, int], ...]


@dataclass(frozen=True, slots=True)
class Unwritten:
    """History of one deployment not yet in the store: day milliseconds, change points, transitions
    (newest first)."""

    days: Mapping[int, Mapping[Condition, int]]
    points: tuple[ChangePoint, ...]
    transitions: tuple[Transition, ...]


@dataclass(slots=True)
class _Current:
    condition: Condition
    since: float
    #: Time up to which this condition's time is in the day totals.
    accounted: float
    #: Time up to which the monitor vouched for the condition; counted into the totals at ``take`` (a tick
    #: of an unchanged fleet then costs a comparison per deployment, not a day split).
    vouched: float


class Recorder:
    """The condition of each watched deployment now, and the history not yet written.

    Time is counted to a condition only up to the last moment the monitor vouched for it (an event, or a
    ``tick``); after a restart, the stretch from where the last run stopped counting is unknown.
    """

    def __init__(self, *, started: float, stored: Mapping[str, OpenInterval] | None = None) -> None:
        self._started = started
        self._stored = dict(stored or {})
        self._current: dict[str, _Current] = {}
        self._days: dict[str, _Millis] = {}
        self._points: dict[str, list[ChangePoint]] = {}
        self._transitions: list[Transition] = []
        self._closed: list[str] = []

    def current(self, rid: str) -> tuple[Condition, float] | None:
        """The condition of ``rid`` and since when, if it is watched."""
        entry = self._current.get(rid)
        return None if entry is None else (entry.condition, entry.since)

    def tick(self, now: float, records: Iterable[Record]) -> None:
        """Vouch for each record's condition up to ``now``; deployments gone from ``records`` are closed."""
        seen = set()
        for record in records:
            rid = record.target.rid
            seen.add(rid)
            condition = condition_of_record(record, self._started)
            entry = self._current.get(rid)
            if entry is not None and condition is not entry.condition and record.last_success is not None:
                # The change came with the answer that showed it, not at this tick.
                self._set(rid, condition, min(now, max(entry.vouched, record.last_success)))
            self._set(rid, condition, now)
        for rid in [rid for rid in self._current if rid not in seen]:
            self._close(rid, now)

    def publish(self, events: Sequence[Event], records: Mapping[str, Record]) -> None:
        """Apply events at their own times (more precise than the next tick) and keep them as transitions."""
        for event in events:
            self._transitions.append(_transition(event))
            if event.type is EventType.REMOVED:
                self._close(event.rid, event.time)
                continue
            record = records.get(event.rid)
            snapshot = record.snapshot if record is not None else None
            condition = condition_of_event(event, snapshot.runtime.min_replicas if snapshot else None)
            if condition is not None:
                self._set(event.rid, condition, event.time)

    def unwritten(self, rid: str | None, now: float) -> Unwritten:
        """What the next ``take`` would hand out for ``rid`` (every deployment's transitions when None),
        with the current condition counted up to ``now``: the pages show it before it is written."""
        if rid is None:
            return Unwritten({}, (), tuple(reversed(self._transitions)))
        days = _by_day(self._days.get(rid, ()))
        entry = self._current.get(rid)
        if entry is not None:
            for day, millis in split_by_day(entry.accounted, now):
                add_millis(days.setdefault(day, {}), {entry.condition: millis})
        transitions = tuple(t for t in reversed(self._transitions) if t.rid == rid)
        return Unwritten(days, tuple(self._points.get(rid, ())), transitions)

    def take(self) -> HistoryBatch:
        """The history gathered since the last ``take``, and the open interval of every deployment."""
        for rid, entry in self._current.items():
            self._count(rid, entry, entry.vouched)
        batch = HistoryBatch(
            days=tuple(
                DayIncrement(rid, day, millis)
                for rid, triples in self._days.items()
                for day, millis in _by_day(triples).items()
            ),
            points=tuple((rid, point) for rid, points in self._points.items() for point in points),
            transitions=tuple(self._transitions),
            open=tuple(
                OpenInterval(rid, c.condition, c.since, c.accounted) for rid, c in self._current.items()
            ),
            closed=tuple(self._closed),
        )
        self._days, self._points, self._transitions, self._closed = {}, {}, [], []
        return batch

    def restore(self, batch: HistoryBatch, *, held: int) -> int:
        """Take back a batch the store could not write, ahead of what was gathered since, keeping at most
        ``held`` change points and transitions together; returns how many were dropped, oldest first."""
        for inc in batch.days:
            triples = self._days.get(inc.rid, ())
            for condition, millis in inc.millis.items():
                triples = _added(triples, inc.day, condition, millis)
            self._days[inc.rid] = triples
        for rid, point in reversed(batch.points):
            self._points.setdefault(rid, []).insert(0, point)
        self._transitions[:0] = batch.transitions
        self._closed[:0] = [rid for rid in batch.closed if rid not in self._current]
        before = self._held()
        # While the store refuses writes, what waits stays within the store's own bounds, and within
        # ``held`` in all, however many deployments come and go meanwhile.
        for points in self._points.values():
            del points[:-POINTS_KEPT]
        del self._transitions[: -TRANSITIONS_KEPT * max(1, len(self._current))]
        self._drop_oldest(self._held() - held)
        return before - self._held()

    def _held(self) -> int:
        return sum(map(len, self._points.values())) + len(self._transitions)

    def _drop_oldest(self, count: int) -> None:
        """Drop the ``count`` oldest change points and transitions (each list is oldest first)."""
        if count <= 0:
            return
        oldest = heapq.nsmallest(
            count,
            itertools.chain(
                ((point.time, rid) for rid, points in self._points.items() for point in points),
                ((transition.time, None) for transition in self._transitions),
            ),
            key=operator.itemgetter(0),
        )
        per_list = collections.Counter(rid for _, rid in oldest)
        for rid, n in per_list.items():
            if rid is None:
                del self._transitions[:n]
            else:
                del self._points[rid][:n]

    def _begin(self, rid: str, at: float) -> _Current:
        stored = self._stored.get(rid)
        # Unknown from where the last run stopped counting (or from now, for a deployment new to history).
        start = min(stored.accounted, at) if stored is not None else at
        entry = self._current[rid] = _Current(Condition.UNKNOWN, start, start, start)
        self._points.setdefault(rid, []).append(ChangePoint(start, Condition.UNKNOWN))
        return entry

    def _set(self, rid: str, condition: Condition, at: float) -> None:
        entry = self._current.get(rid) or self._begin(rid, at)
        at = max(at, entry.vouched)
        entry.vouched = at
        if condition is entry.condition:
            return
        self._count(rid, entry, at)
        stored = self._stored.pop(rid, None)
        # Back in the condition it had before the restart: the time in that condition goes on.
        resumed = (
            stored is not None and stored.condition is condition and entry.condition is Condition.UNKNOWN
        )
        entry.since = stored.since if resumed and stored is not None else at
        entry.condition = condition
        self._points.setdefault(rid, []).append(ChangePoint(at, condition))

    def _count(self, rid: str, entry: _Current, at: float) -> None:
        if at <= entry.accounted:
            return
        triples = self._days.get(rid, ())
        for day, millis in split_by_day(entry.accounted, at):
            triples = _added(triples, day, entry.condition, millis)
        if triples:
            self._days[rid] = triples
        entry.accounted = at

    def _close(self, rid: str, at: float) -> None:
        entry = self._current.pop(rid, None)
        self._stored.pop(rid, None)
        if entry is not None:
            self._count(rid, entry, max(at, entry.vouched))
            self._closed.append(rid)


def _added(triples: _Millis, day: int, condition: Condition, millis: int) -> _Millis:
    for index, (d, c, m) in enumerate(triples):
        if d == day and c is condition:
            return (*triples[:index], (day, condition, m + millis), *triples[index + 1 :])
    return (*triples, (day, condition, millis))


def _by_day(triples: _Millis) -> dict[int, dict[Condition, int]]:
    days: dict[int, dict[Condition, int]] = {}
    for day, condition, millis in triples:
        add_millis(days.setdefault(day, {}), {condition: millis})
    return days


def _shown(path: str, value: FieldValue | None) -> str:
    if value is None:
        return "(none)"
    if path.startswith(_ENV_PREFIX):
        return "(set)"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def _change(change: FieldChange) -> tuple[str, str, str]:
    if change.path.startswith(_ENV_PREFIX) and change.old is not None and change.new is not None:
        return (change.path, "(set)", "(changed)")
    return (change.path, _shown(change.path, change.old), _shown(change.path, change.new))


def _transition(event: Event) -> Transition:
    changes = tuple(_change(c) for c in event.changes[:_CHANGES_KEPT])
    if len(event.changes) > _CHANGES_KEPT:
        changes += (("…", "", f"{len(event.changes) - _CHANGES_KEPT} more fields"),)
    return Transition(
        event_id=event.event_id,
        rid=event.rid,
        name=event.name,
        time=event.time,
        type=event.type.value,
        old_state=event.old_state,
        new_state=event.new_state,
        ready=event.ready,
        changes=changes,
        error=event.error,
    )
