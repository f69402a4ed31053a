"""The HTTP endpoints: /metrics, /healthz, /readyz and the JSON API, behind optional basic auth.

/readyz is 200 once the first round of polls is done, whether the state database answers or not: while it
is down the monitor still polls and serves metrics (it holds its events), and an unready pod would drop
out of its Service's endpoints and of endpoint-based scraping, hiding exactly those metrics. Its body tells
the database's state.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import anyio.lowlevel
import anyio.to_thread
import structlog
from aiohttp import web

from monitor.events import Event
from monitor.metrics import MetricsView
from monitor.model import snapshot_to_json
from monitor.records import watch_state
from monitor.sinks import EventBus
from monitor.state import DatabaseHealth, StateUnavailable
from monitor.tracker import Record, Tracker
from monitor.web.access import BasicAuth

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_EVENTS = 10_000
#: Items of a JSON listing encoded between two checkpoints (a few milliseconds of deployments).
_BATCH = 50
_Item = TypeVar("_Item")


class Endpoints:
    """Request handlers over the monitor's in-memory state; none of them waits on a poll."""

    def __init__(
        self,
        *,
        view: MetricsView,
        tracker: Tracker,
        bus: EventBus,
        ready: Callable[[], bool],
        database: DatabaseHealth,
        auth: BasicAuth | None = None,
        after_scrape: Callable[[], object] | None = None,
    ) -> None:
        self._view = view
        #: Run in a worker thread once a scrape is sent (the service gives the allocator its memory back).
        self._after_scrape = after_scrape
        self._tracker = tracker
        self._bus = bus
        self._ready = ready
        self._database = database
        self._auth = auth

    def app(self) -> web.Application:
        middlewares = [self._auth_middleware] if self._auth is not None else []
        app = web.Application(middlewares=[*middlewares, _database_middleware])
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/api/v1/deployments", self.deployments)
        app.router.add_get("/api/v1/events", self.events)
        return app

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        assert self._auth is not None
        verdict = await self._auth.check(request.headers.get("Authorization"), request.remote)
        if verdict.retry_after is not None:
            return web.Response(
                status=429,
                text="too many failed attempts\n",
                headers={"Retry-After": str(verdict.retry_after)},
            )
        if not verdict.allowed:
            return web.Response(
                status=401,
                text="unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="foundry-monitor"'},
            )
        return await handler(request)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        scrape = self._view.scrape(
            accept=request.headers.get("Accept", ""),
            accept_encoding=request.headers.get("Accept-Encoding", ""),
        )
        # Streamed: a large fleet's payload (35 MB of text at 10,000 deployments) is never held whole, and
        # polls go on between the pieces (a write returns without yielding while the socket keeps up, hence
        # the checkpoint).
        response = web.StreamResponse(headers={"Content-Type": scrape.content_type})
        if scrape.content_encoding is not None:
            response.headers["Content-Encoding"] = scrape.content_encoding
        if await _streamed(request, response, scrape.body) and self._after_scrape is not None:
            await anyio.to_thread.run_sync(self._after_scrape)
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self._ready()
        body = {
            "ready": ready,
            "polls": "first round done" if ready else "first round of polls not done",
            "database": self._database.report(),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def deployments(self, request: web.Request) -> web.StreamResponse:
        # A copy: the fleet may change while the listing is written out.
        return await _json_list(request, "deployments", list(self._tracker), _deployment_json)

    async def events(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("limit", "100")
        try:
            limit = int(raw)
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        if not 0 <= limit <= _MAX_EVENTS:
            return web.json_response({"error": f"limit must be between 0 and {_MAX_EVENTS}"}, status=400)
        return await _json_list(request, "events", self._bus.recent(limit), Event.to_json)


@web.middleware
async def _database_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page that reads the database (the status history) while it is down: a 503, not a traceback."""
    try:
        return await handler(request)
    except StateUnavailable:
        return web.Response(status=503, text="the state database is unavailable\n")


def _deployment_json(record: Record) -> dict[str, Any]:
    target = record.target
    return {
        "rid": target.rid,
        "deployment": target.name,
        "labels": dict(target.labels),
        "origin": target.origin,
        **watch_state(record),
        "snapshot": None if record.snapshot is None else snapshot_to_json(record.snapshot),
    }


async def _json_list(
    request: web.Request, key: str, items: Sequence[_Item], encode: Callable[[_Item], dict[str, Any]]
) -> web.StreamResponse:
    """``{key: [items...]}`` as JSON, streamed a batch at a time with a checkpoint between batches: the
    listing of 10,000 deployments takes half a second to encode, which must not stall polls or scrapes."""

    def pieces() -> Iterator[bytes]:
        yield f"{{{json.dumps(key)}: [".encode()
        for start in range(0, len(items), _BATCH):
            batch = ", ".join(json.dumps(encode(item)) for item in items[start : start + _BATCH])
            yield (", " if start else "").encode() + batch.encode()
        yield b"]}"

    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await _streamed(request, response, pieces())
    return response


async def _streamed(request: web.Request, response: web.StreamResponse, pieces: Iterable[bytes]) -> bool:
    """Send ``response`` with ``pieces`` as its body, a checkpoint after each: False when the client went
    away before the end. That is the client's choice (a scraper's timeout, a reader of the first lines), so
    it is one debug line, not a traceback: aiohttp finds the connection closed and lets it be."""
    await response.prepare(request)
    try:
        for piece in pieces:
            await response.write(piece)
            await anyio.lowlevel.checkpoint()
        await response.write_eof()
    except ConnectionResetError:
        log.debug("http_client_gone", path=request.path)
        return False
    return True
