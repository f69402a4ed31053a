"""What the monitor knows of each watched deployment, and the rules that turn poll outcomes into events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from monitor.diff import FieldChange, diff_fields
from monitor.errors import FoundryError, LiveDeploymentNotFound
from monitor.events import Event, EventType
from monitor.model import LiveDeployment, compared_fields
from monitor.rollouts import Lag

K = TypeVar("K", bound=Hashable)


def _read_only() -> NoReturn:
    raise TypeError("the shared empty counts are read-only: count with counted()")


class _NoCounts(Counter[Any]):
    """The counts of a record that has counted nothing yet: one empty, read-only counter shared by every such
    record (three empty counters of its own cost a record ~260 bytes, 2.6 MB at 10,000 deployments)."""

    def __setitem__(self, key: Any, value: int) -> NoReturn:
        _read_only()

    def update(self, iterable: Any = None, /, **kwargs: Any) -> None:
        if iterable or kwargs:  # Counter() itself calls update(None)
            _read_only()

    def setdefault(self, *args: Any, **kwargs: Any) -> NoReturn:
        _read_only()


_NO_COUNTS: Counter[Any] = _NoCounts()


def counts(items: Mapping[K, int] | None = None) -> Counter[K]:
    """A record's counter holding ``items``: the shared empty one when there are none."""
    return Counter(items) if items else _NO_COUNTS


def counted(into: Counter[K], key: K) -> Counter[K]:
    """``into`` with one more ``key``: a counter of the record's own once it counts anything."""
    own: Counter[K] = Counter() if into is _NO_COUNTS else into
    own[key] += 1
    return own


@dataclass(frozen=True, slots=True)
class Target:
    """A deployment to watch: its RID, friendly name, static labels, and who asked for it."""

    rid: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    #: ``config``, or ``discover:<model RID>`` for deployments found through the list endpoint.
    origin: str = "config"


@dataclass(slots=True)
class Record:
    """The watch state of one deployment. Mutated only by ``Tracker``; read by metrics and the API."""

    target: Target
    snapshot: LiveDeployment | None = None
    #: None until the first answer; False after LiveDeploymentNotFound.
    found: bool | None = None
    #: Whether the last poll got an answer (a 404 is an answer).
    up: bool = False
    unreachable: bool = False
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success: float | None = None
    last_change: float | None = None
    #: Whether the last poll saw a change: such deployments are polled on the fast interval.
    changed_last_poll: bool = False
    #: Counts since the deployment was first watched (``counts``; the tracker adds with ``counted``).
    transitions: Counter[tuple[str, str]] = field(default_factory=counts)
    changes: Counter[str] = field(default_factory=counts)
    errors: Counter[str] = field(default_factory=counts)
    sequence: int = 0
    #: How far behind its branch's newest model version the deployment is (None: not behind), as
    #: ``monitor.rollouts`` judged it.
    lag: Lag | None = None
    #: Bumped whenever anything the metrics show (other than timestamps) changes: a render cache key.
    version: int = 0

    @property
    def wants_fast_poll(self) -> bool:
        snapshot = self.snapshot
        return self.changed_last_poll or (
            snapshot is not None and self.found is not False and snapshot.in_transition
        )


class Tracker:
    """Holds every ``Record`` and applies poll outcomes to them, returning the events they cause.

    ``restore`` (when given) is asked for a stored record whenever a deployment starts being watched, so a
    restart continues where the last run stopped instead of observing everything afresh.
    """

    def __init__(
        self, *, unreachable_after: int = 3, restore: Callable[[Target], Record | None] | None = None
    ) -> None:
        self._records: dict[str, Record] = {}
        self._unreachable_after = max(1, unreachable_after)
        self._restore = restore

    @property
    def records(self) -> Mapping[str, Record]:
        return self._records

    def __contains__(self, rid: object) -> bool:
        return rid in self._records

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def add(self, target: Target) -> Record:
        """Start watching ``target``, or update the name and labels of one already watched."""
        record = self._records.get(target.rid)
        if record is None:
            restored = self._restore(target) if self._restore is not None else None
            record = self._records[target.rid] = restored or Record(target=target)
        elif record.target != target:
            record.target = target
            record.version += 1
        return record

    def remove(self, rid: str, now: float) -> Event | None:
        """Stop watching ``rid``; its series vanish with the record."""
        record = self._records.pop(rid, None)
        if record is None:
            return None
        return self._event(record, EventType.REMOVED, now, new_state=_state(record.snapshot))

    def observe(self, rid: str, snapshot: LiveDeployment, now: float) -> list[Event]:
        """A poll of ``rid`` answered with ``snapshot``."""
        record = self._records[rid]
        previous = record.snapshot
        if snapshot == previous and record.up and record.found:
            # The common case, an unchanged answer: no flat view to build, nothing to compare field by field.
            record.snapshot = snapshot
            record.last_success = now
            if record.changed_last_poll:
                record.changed_last_poll = False
            return []
        events: list[Event] = []
        if record.unreachable:
            events.append(
                self._event(
                    record, EventType.RECOVERED, now, new_state=snapshot.state, ready=snapshot.is_ready
                )
            )
        changes: tuple[FieldChange, ...] = ()
        if previous is None:
            events.append(
                self._event(
                    record,
                    EventType.OBSERVED,
                    now,
                    new_state=snapshot.state,
                    ready=snapshot.is_ready,
                    snapshot=snapshot,
                )
            )
        else:
            # The flat views are built only for an answer that differs: keeping them costs ~1 KB a deployment.
            changes = diff_fields(compared_fields(previous), compared_fields(snapshot))
            kind = EventType.RETURNED if record.found is False else EventType.CHANGED
            if changes or kind is EventType.RETURNED:
                events.append(
                    self._event(
                        record,
                        kind,
                        now,
                        old_state=previous.state,
                        new_state=snapshot.state,
                        ready=snapshot.is_ready,
                        changes=changes,
                    )
                )
            if previous.state != snapshot.state:
                key = transition(previous.state_label, snapshot.state_label)
                record.transitions = counted(record.transitions, key)
            for change in changes:
                record.changes = counted(record.changes, change.metric_field)
        if changes:
            record.last_change = now
        metrics_differ = (
            changes
            or previous is None
            or record.found is not True
            or not record.up
            or record.unreachable
            or record.consecutive_failures
        )
        record.snapshot = snapshot
        record.found = True
        record.up = True
        record.unreachable = False
        record.consecutive_failures = 0
        record.last_error = None
        record.last_success = now
        record.changed_last_poll = bool(changes)
        if metrics_differ:
            record.version += 1
        return events

    def set_lag(
        self,
        rid: str,
        lag: Lag | None,
        now: float,
        announced: Sequence[tuple[EventType, Mapping[str, object]]] = (),
    ) -> list[Event]:
        """Store the rollout lag ``monitor.rollouts`` judged for ``rid``, with the events announcing it."""
        record = self._records[rid]
        record.lag = lag
        record.version += 1
        return [self._event(record, kind, now, **details) for kind, details in announced]

    def fail(self, rid: str, error: FoundryError, now: float) -> list[Event]:
        """A poll of ``rid`` ended in ``error``. A failed poll never reports a change of the deployment."""
        record = self._records[rid]
        record.errors = counted(record.errors, error.kind)
        record.last_error = error.kind
        record.changed_last_poll = False
        record.version += 1
        if isinstance(error, LiveDeploymentNotFound):
            return self._not_found(record, now)
        record.up = False
        record.consecutive_failures += 1
        if record.consecutive_failures >= self._unreachable_after and not record.unreachable:
            record.unreachable = True
            return [
                self._event(
                    record,
                    EventType.UNREACHABLE,
                    now,
                    new_state=_state(record.snapshot),
                    error=error.kind,
                    consecutive_failures=record.consecutive_failures,
                )
            ]
        return []

    def _not_found(self, record: Record, now: float) -> list[Event]:
        events = []
        if record.unreachable:
            events.append(self._event(record, EventType.RECOVERED, now))
        if record.found is not False:
            events.append(self._event(record, EventType.NOT_FOUND, now, old_state=_state(record.snapshot)))
        record.found = False
        record.up = True
        record.last_success = now
        record.unreachable = False
        record.consecutive_failures = 0
        return events

    @staticmethod
    def _event(record: Record, kind: EventType, now: float, **details: object) -> Event:
        record.sequence += 1
        target = record.target
        return Event(
            type=kind,
            rid=target.rid,
            name=target.name,
            labels=target.labels,
            time=now,
            sequence=record.sequence,
            **details,  # type: ignore[arg-type]
        )


#: One tuple per (from, to) pair for the whole fleet: every record's transition counter shares them.
_TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {}


def transition(old_label: str, new_label: str) -> tuple[str, str]:
    """The shared ``(old, new)`` key of a state transition (the labels are a closed set)."""
    key = (old_label, new_label)
    return _TRANSITIONS.setdefault(key, key)


def _state(snapshot: LiveDeployment | None) -> str | None:
    return None if snapshot is None else snapshot.state
