"""What the pages show, as plain values built from the tracker's records and the history: the fleet view
(counts, filters, grouping, problems first, pages) and the deployment view. Pure; rendering is elsewhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from monitor.status.availability import WINDOWS, Availability, availability
from monitor.status.bar import DayCell, day_bar
from monitor.status.conditions import LOOKS, Condition, Look, is_problem
from monitor.status.history import ChangePoint, DayDurations, day_of
from monitor.status.store import Transition
from monitor.tracker import Record

PAGE_SIZE = 60
_MAX_TEXT = 200
_MAX_PAGE = 100_000

#: Where the fleet view gets each deployment's condition and since when (the history writer's ``current``).
CurrentOf = Callable[[str], "tuple[Condition, float] | None"]


class BadQuery(ValueError):
    """A query string the pages cannot honour; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class FleetQuery:
    """The fleet page's filters: condition, ``key=value`` label, search text, grouping label key, page."""

    condition: Condition | None = None
    label: tuple[str, str] | None = None
    search: str = ""
    group: str = ""
    page: int = 1

    def link(self, **changes: object) -> str:
        """The query string of this view with ``changes`` applied (a new filter goes back to page 1)."""
        values: dict[str, object] = {
            "state": self.condition.value if self.condition else "",
            "label": "=".join(self.label) if self.label else "",
            "q": self.search,
            "group": self.group,
            "page": self.page if "page" in changes or not changes else 1,
        }
        values.update(changes)
        kept = {k: v for k, v in values.items() if v not in ("", None) and not (k == "page" and v == 1)}
        return "?" + urlencode(kept)


def _text(query: Mapping[str, str], key: str) -> str:
    value = query.get(key, "").strip()
    if len(value) > _MAX_TEXT:
        raise BadQuery(f"{key} is longer than {_MAX_TEXT} characters")
    return value


def parse_fleet_query(query: Mapping[str, str]) -> FleetQuery:
    """The filters in ``query`` (unknown keys ignored); BadQuery for a value that cannot be honoured."""
    state = _text(query, "state")
    try:
        condition = Condition(state) if state else None
    except ValueError:
        raise BadQuery("state must be one of: " + ", ".join(c.value for c in Condition)) from None
    label_text = _text(query, "label")
    label = None
    if label_text:
        key, sep, value = label_text.partition("=")
        if not sep or not key:
            raise BadQuery("label must be key=value")
        label = (key, value)
    raw_page = _text(query, "page") or "1"
    if not raw_page.isdigit() or not 1 <= int(raw_page) <= _MAX_PAGE:
        raise BadQuery(f"page must be a whole number from 1 to {_MAX_PAGE}")
    return FleetQuery(condition, label, _text(query, "q"), _text(query, "group"), int(raw_page))


@dataclass(frozen=True, slots=True)
class Tile:
    """One deployment on the fleet page."""

    rid: str
    name: str
    labels: tuple[tuple[str, str], ...]
    condition: Condition
    state: str | None
    ready: bool | None
    model_version: str | None
    since: float | None

    @property
    def look(self) -> Look:
        return LOOKS[self.condition]

    @property
    def title(self) -> str:
        """The name to show: discovered deployments are named by their RID, which no tile has room for."""
        if self.name != self.rid:
            return self.name
        return "deployment " + self.rid.rsplit(".", 1)[-1][:8]

    @property
    def shown_labels(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in self.labels if v)

    @property
    def problem(self) -> bool:
        return is_problem(self.condition)


@dataclass(frozen=True, slots=True)
class Group:
    """Tiles under one value of the grouping label (all tiles in one unnamed group when not grouping)."""

    value: str
    tiles: tuple[Tile, ...]


@dataclass(frozen=True, slots=True)
class FleetView:
    total: int
    counts: tuple[tuple[Condition, int], ...]
    label_keys: tuple[str, ...]
    matched: int
    groups: tuple[Group, ...]
    page: int
    pages: int


def tile(record: Record, current: CurrentOf) -> Tile:
    target = record.target
    now = current(target.rid)
    snapshot = record.snapshot
    return Tile(
        rid=target.rid,
        name=target.name,
        labels=target.labels,
        condition=now[0] if now else Condition.UNKNOWN,
        state=snapshot.state if snapshot else None,
        ready=snapshot.is_ready if snapshot else None,
        model_version=snapshot.model_version_rid if snapshot else None,
        since=now[1] if now else None,
    )


def group_value(t: Tile, key: str) -> str:
    return dict(t.labels).get(key) or "(none)"


def _matches(t: Tile, query: FleetQuery, needle: str) -> bool:
    if query.condition is not None and t.condition is not query.condition:
        return False
    if query.label is not None and query.label not in t.labels:
        return False
    return not needle or needle in t.name.lower() or needle in t.rid.lower()


def _order(t: Tile) -> tuple[int, int, str, str]:
    # Problems first, the worst of them first; then by name.
    return (0 if t.problem else 1, -t.look.severity, t.name.lower(), t.rid)


def fleet_view(
    records: Iterable[Record], current: CurrentOf, query: FleetQuery, *, page_size: int = PAGE_SIZE
) -> FleetView:
    tiles = [tile(r, current) for r in records]
    counts = Counter(t.condition for t in tiles)
    keys = sorted({key for t in tiles for key, _ in t.labels})
    needle = query.search.lower()
    chosen = sorted((t for t in tiles if _matches(t, query, needle)), key=_order)
    if query.group:
        # Problems first also among groups: a group holding a problem comes before one that does not.
        def value(t: Tile) -> str:
            return group_value(t, query.group)

        worst: dict[str, tuple[int, int]] = {}
        for t in chosen:
            worst.setdefault(value(t), _order(t)[:2])
        chosen.sort(key=lambda t: (worst[value(t)], value(t), _order(t)))
    pages = max(1, -(-len(chosen) // page_size))
    page = min(query.page, pages)
    shown = chosen[(page - 1) * page_size : page * page_size]
    groups: list[Group] = []
    for t in shown:
        name = group_value(t, query.group) if query.group else ""
        if groups and groups[-1].value == name:
            groups[-1] = Group(name, (*groups[-1].tiles, t))
        else:
            groups.append(Group(name, (t,)))
    ordered_counts = tuple(sorted(counts.items(), key=lambda item: -LOOKS[item[0]].severity))
    return FleetView(
        total=len(tiles),
        counts=ordered_counts,
        label_keys=tuple(keys),
        matched=len(chosen),
        groups=tuple(groups),
        page=page,
        pages=pages,
    )


@dataclass(frozen=True, slots=True)
class DeploymentView:
    tile: Tile
    record: Record
    bar: tuple[DayCell, ...]
    windows: tuple[tuple[str, Availability], ...]
    transitions: tuple[Transition, ...]


def deployment_view(
    record: Record,
    current: CurrentOf,
    *,
    days: Sequence[DayDurations],
    points: Sequence[ChangePoint],
    transitions: Sequence[Transition],
    now: float,
) -> DeploymentView:
    """The deployment page; ``points`` must reach back 30 days (led by the point in force then)."""
    return DeploymentView(
        tile=tile(record, current),
        record=record,
        bar=tuple(day_bar(days, today=day_of(now))),
        windows=tuple((name, availability(points, end=now, window=span)) for name, span in WINDOWS),
        transitions=tuple(transitions),
    )
