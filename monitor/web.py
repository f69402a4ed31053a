"""The HTTP endpoints: /metrics, /healthz, /readyz and the JSON API, with optional TLS and basic auth."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import bcrypt
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from monitor.metrics import MetricsView
from monitor.model import snapshot_to_json
from monitor.records import watch_state
from monitor.sinks import EventBus
from monitor.tracker import Tracker

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_EVENTS = 10_000


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes, as the Prometheus exporter toolkit does.

    bcrypt is slow on purpose; a successful check is remembered (by a keyed digest, never the password)
    so that a scrape every few seconds does not cost a bcrypt round each time.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self._key = hashlib.sha256(b"".join(self._users.values())).digest()
        self._verified: set[bytes] = set()

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        hashed = self._users.get(user)
        if not sep or hashed is None:
            return False
        memo = hmac.new(self._key, decoded.encode(), hashlib.sha256).digest()
        if memo in self._verified:
            return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            self._verified.add(memo)
        return ok


class Endpoints:
    """Request handlers over the monitor's in-memory state; none of them waits on a poll."""

    def __init__(
        self,
        *,
        view: MetricsView,
        tracker: Tracker,
        bus: EventBus,
        ready: Callable[[], bool],
        auth: BasicAuth | None = None,
    ) -> None:
        self._view = view
        self._tracker = tracker
        self._bus = bus
        self._ready = ready
        self._auth = auth

    def app(self) -> web.Application:
        middlewares = [self._auth_middleware] if self._auth is not None else []
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/api/v1/deployments", self.deployments)
        app.router.add_get("/api/v1/events", self.events)
        return app

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        assert self._auth is not None
        if not self._auth.check(request.headers.get("Authorization")):
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
        # polls go on between the pieces.
        response = web.StreamResponse(headers={"Content-Type": scrape.content_type})
        if scrape.content_encoding is not None:
            response.headers["Content-Encoding"] = scrape.content_encoding
        await response.prepare(request)
        for piece in scrape.body:
            await response.write(piece)
        await response.write_eof()
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="first round of polls not done\n")

    async def deployments(self, request: web.Request) -> web.Response:
        items: list[dict[str, Any]] = []
        for record in self._tracker:
            target = record.target
            items.append(
                {
                    "rid": target.rid,
                    "deployment": target.name,
                    "labels": dict(target.labels),
                    "origin": target.origin,
                    **watch_state(record),
                    "snapshot": None if record.snapshot is None else snapshot_to_json(record.snapshot),
                }
            )
        return web.json_response({"deployments": items})

    async def events(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", "100")
        try:
            limit = int(raw)
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        if not 0 <= limit <= _MAX_EVENTS:
            return web.json_response({"error": f"limit must be between 0 and {_MAX_EVENTS}"}, status=400)
        return web.json_response({"events": [event.to_json() for event in self._bus.recent(limit)]})


def server_ssl_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    if cert_file is None or key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


async def serve_http(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; reports the bound port (``port`` 0 picks one) once listening."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host=host, port=port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        bound = int(runner.addresses[0][1]) if runner.addresses else port
        log.info("http_listening", host=host, port=bound, tls=ssl_context is not None)
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.cleanup()
