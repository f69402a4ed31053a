"""The status page's HTTP routes on the monitor's own aiohttp app (so its TLS and basic auth cover them).

Every handler reads in-memory state or runs one bounded history query in the store's worker thread; a
malformed RID, number or query gets a 4xx with a short message, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.model import is_valid_rid
from monitor.status.availability import WINDOWS, percent, span_text
from monitor.status.badges import deployment_badge, group_badge
from monitor.status.conditions import LOOKS, Condition
from monitor.status.feeds import atom_feed, headline
from monitor.status.history import DAY, ChangePoint, DayDurations, day_of, merged_days
from monitor.status.store import TRANSITIONS_KEPT, Transition
from monitor.status.views import PAGE_SIZE, BadQuery, deployment_view, fleet_view, parse_fleet_query
from monitor.status.writer import HistoryWriter
from monitor.tracker import Record, Tracker

if TYPE_CHECKING:
    import jinja2

MAX_HISTORY_DAYS = 400
_FEED_ENTRIES = 100
#: Transitions the fleet page lists under its tiles.
_LATEST = 8
_STATIC = {"status.css": "text/css", "status.js": "text/javascript", "favicon.svg": "image/svg+xml"}
_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self';"
    " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_ATOM = "application/atom+xml"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _utc_text(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> jinja2.Environment:
    # Imported with the first page: a monitor nobody looks at does not carry jinja2 (~2 MB).
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("monitor.status", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(iso=_iso, utc=_utc_text, percent=percent, span=span_text, headline=headline)
    env.globals.update(looks=LOOKS, Condition=Condition)
    return env


class StatusPages:
    """The handlers, over the tracker's records and the history (the store and what is not written yet)."""

    def __init__(
        self,
        *,
        tracker: Tracker,
        history: HistoryWriter,
        clock: Callable[[], float] = time.time,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._tracker = tracker
        self._history = history
        self._store = history.store
        self._current = history.current
        self._clock = clock
        self._page_size = page_size
        self._static = {
            name: resources.files("monitor.status").joinpath("static", name).read_bytes() for name in _STATIC
        }

    @cached_property
    def _env(self) -> jinja2.Environment:
        return _environment()

    def _html(self, template: str, status: int = 200, **context: Any) -> web.Response:
        body = self._env.get_template(template).render(now=self._clock(), **context)
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"},
        )

    def _error(self, status: int, message: str) -> web.Response:
        return self._html(
            "error.html", status=status, status_code=status, message=message, feed="/feeds/fleet.atom"
        )

    def _record(self, request: web.Request) -> Record | web.Response:
        rid = request.match_info["rid"]
        if not is_valid_rid(rid):
            return self._error(400, "That is not a live deployment RID.")
        record = self._tracker.records.get(rid)
        if record is None:
            return self._error(404, "This monitor does not watch that deployment.")
        return record

    async def fleet(self, request: web.Request) -> web.Response:
        try:
            query = parse_fleet_query(request.query)
        except BadQuery as exc:
            return self._error(400, str(exc))
        view = fleet_view(self._tracker, self._current, query, page_size=self._page_size)
        latest = await self._latest(None, _LATEST)
        return self._html("fleet.html", view=view, query=query, latest=latest, feed="/feeds/fleet.atom")

    async def deployment(self, request: web.Request) -> web.Response:
        record = self._record(request)
        if isinstance(record, web.Response):
            return record
        rid = record.target.rid
        now = self._clock()
        longest = max(span for _, span in WINDOWS)

        async def stored() -> tuple[list[DayDurations], list[ChangePoint], list[Transition]]:
            return (
                await self._store.days(rid, day_of(now) - 89, day_of(now)),
                await self._store.points(rid, now - longest),
                await self._store.transitions(rid, TRANSITIONS_KEPT),
            )

        (days, points, transitions), unwritten = await self._history.read(rid, stored)
        view = deployment_view(
            record,
            self._current,
            days=merged_days(days, unwritten.days),
            points=[*points, *unwritten.points],
            transitions=[*unwritten.transitions, *transitions][:TRANSITIONS_KEPT],
            now=now,
        )
        origin = f"{request.scheme}://{request.host}"
        return self._html("deployment.html", view=view, origin=origin, feed=f"/feeds/deployments/{rid}.atom")

    async def history(self, request: web.Request) -> web.Response:
        record = self._record(request)
        if isinstance(record, web.Response):
            return web.json_response({"error": record.text}, status=record.status)
        raw = request.query.get("days", "90")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_HISTORY_DAYS:
            return web.json_response(
                {"error": f"days must be a whole number from 1 to {MAX_HISTORY_DAYS}"}, status=400
            )
        days = int(raw)
        rid = record.target.rid
        today = day_of(self._clock())
        stored, unwritten = await self._history.read(
            rid, lambda: self._store.days(rid, today - days + 1, today)
        )
        rows = {d.day: d for d in merged_days(stored, unwritten.days)}
        return web.json_response(
            {
                "rid": record.target.rid,
                "deployment": record.target.name,
                "days": [
                    {
                        "date": _iso(day * DAY)[:10],
                        "seconds": {c.value: ms / 1000 for c, ms in rows[day].millis.items()}
                        if day in rows
                        else {},
                    }
                    for day in range(today - days + 1, today + 1)
                ],
            }
        )

    def _condition(self, rid: str) -> Condition:
        current = self._current(rid)
        return current[0] if current else Condition.UNKNOWN

    async def badge(self, request: web.Request) -> web.Response:
        record = self._record(request)
        if isinstance(record, web.Response):
            return web.Response(status=record.status, text="no such deployment\n")
        svg = deployment_badge(record.target.name, self._condition(record.target.rid)).svg()
        return web.Response(text=svg, content_type="image/svg+xml", headers={"Cache-Control": "no-cache"})

    async def shields(self, request: web.Request) -> web.Response:
        record = self._record(request)
        if isinstance(record, web.Response):
            return web.json_response({"error": "no such deployment"}, status=record.status)
        return web.json_response(
            deployment_badge(record.target.name, self._condition(record.target.rid)).shields()
        )

    def _group(self, request: web.Request) -> tuple[str, list[Condition]]:
        pair = (request.match_info["key"], request.match_info["value"])
        conditions = [self._condition(r.target.rid) for r in self._tracker if pair in r.target.labels]
        return f"{pair[0]}={pair[1]}", conditions

    async def group_badge(self, request: web.Request) -> web.Response:
        label, conditions = self._group(request)
        return web.Response(
            text=group_badge(label, conditions).svg(),
            content_type="image/svg+xml",
            headers={"Cache-Control": "no-cache"},
        )

    async def group_shields(self, request: web.Request) -> web.Response:
        label, conditions = self._group(request)
        return web.json_response(group_badge(label, conditions).shields())

    async def _latest(self, rid: str | None, limit: int) -> list[Transition]:
        """The last ``limit`` transitions, written or not, newest first."""
        stored, unwritten = await self._history.read(rid, lambda: self._store.transitions(rid, limit))
        return [*unwritten.transitions, *stored][:limit]

    async def _feed(
        self, request: web.Request, rid: str | None, title: str, feed: str, page: str
    ) -> web.Response:
        entries = await self._latest(rid, _FEED_ENTRIES)
        origin = f"{request.scheme}://{request.host}"
        body = atom_feed(
            title=title,
            feed_id=origin + feed,
            self_url=origin + feed,
            page_url=origin + page,
            base=origin,
            entries=entries,
            now=self._clock(),
        )
        return web.Response(body=body, content_type=_ATOM)

    async def fleet_feed(self, request: web.Request) -> web.Response:
        return await self._feed(request, None, "foundry-monitor: fleet transitions", "/feeds/fleet.atom", "/")

    async def deployment_feed(self, request: web.Request) -> web.Response:
        record = self._record(request)
        if isinstance(record, web.Response):
            return web.Response(status=record.status, text="no such deployment\n")
        rid = record.target.rid
        title = f"foundry-monitor: {record.target.name}"
        return await self._feed(request, rid, title, f"/feeds/deployments/{rid}.atom", f"/deployments/{rid}")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._static:
            return web.Response(status=404, text="not found\n")
        return web.Response(
            body=self._static[name],
            content_type=_STATIC[name],
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )


def add_status_routes(
    app: web.Application,
    *,
    tracker: Tracker,
    history: HistoryWriter,
    clock: Callable[[], float] = time.time,
    page_size: int = PAGE_SIZE,
) -> StatusPages:
    """Mount the status page on ``app``: ``/``, ``/deployments/{rid}``, the history API, badges, shields
    endpoints, Atom feeds and the page's static files."""
    pages = StatusPages(tracker=tracker, history=history, clock=clock, page_size=page_size)
    routes: Mapping[str, Callable[[web.Request], Any]] = {
        "/": pages.fleet,
        "/deployments/{rid}": pages.deployment,
        "/api/v1/deployments/{rid}/history": pages.history,
        "/badges/deployments/{rid}.svg": pages.badge,
        "/badges/groups/{key}/{value}.svg": pages.group_badge,
        "/api/v1/shields/deployments/{rid}": pages.shields,
        "/api/v1/shields/groups/{key}/{value}": pages.group_shields,
        "/feeds/fleet.atom": pages.fleet_feed,
        "/feeds/deployments/{rid}.atom": pages.deployment_feed,
        "/static/status/{name}": pages.static,
    }
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    return pages
