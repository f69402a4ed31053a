"""The simulator's aiohttp server: Foundry's live-deployment, model-version and OAuth2 endpoints, and control.

Foundry endpoints, with Foundry's paths, checks and error envelopes:

``GET /api/v2/models/liveDeployments/{rid}?preview=true``
    One deployment. Without ``Authorization: Bearer`` 401 ``MissingCredentials``; an unknown, expired or
    revoked token 401 ``Default:Unauthorized``; without ``preview=true`` 400 ``ApiFeaturePreviewUsageOnly``
    (checked in that order); a malformed RID 400 ``Default:InvalidArgument``; an unknown or deleted one 404
    ``LiveDeploymentNotFound`` with parameter ``liveDeploymentRid``.
``GET /api/v2/models/liveDeployments?modelRid=...&branch=...&preview=true``
    ``{"data": [...]}``: the model's deployments that track a branch (``branch`` when given). Same checks;
    an unknown model 404 ``ModelNotFound``.
``GET /api/v2/models/{modelRid}/versions?branch=...&pageSize=...&pageToken=...&preview=true``
    ``{"data": [ModelVersion, ...], "nextPageToken"?}``: one page of the branch's versions (``master`` when
    no branch is given; a branch without versions is an empty list), oldest first, ``pageSize`` of them
    (``SimulatorSettings.page_size`` by default, at most 10,000); ``nextPageToken`` while more follow. Same
    checks; then an unknown model 404 ``ModelNotFound``, a model marked so 400 ``UnsupportedModelSource``, a
    page size below 1 or not a number 400 ``InvalidPageSize``, a token this listing did not hand out 400
    ``InvalidPageToken``.
``POST /multipass/api/oauth2/token``
    OAuth2 client credentials (form fields, or HTTP Basic): ``{"access_token", "token_type": "bearer",
    "expires_in"}``; bad credentials 401 ``{"error": "invalid_client"}``.
Any other path
    404 with an empty body, as from a host without the API.

Control API under ``/_sim`` (JSON in and out; no authentication, the simulator listens on loopback). A bad
request gets 400 ``{"error": "..."}``, an unknown deployment or model 404:

- ``GET /_sim/health``: size, models, simulated time, whether life is paused, rates, rollouts (and how many
  are pending), states.
- ``GET /_sim/deployments[?model=RID]``: ``{"rids": [...]}``, existing deployments (of one model).
- ``POST /_sim/deployments`` ``{"modelRid"?, "branch"?, "full"?, "state"?, "isReady"?}``: add one;
  201 ``{"rid"}``.
- ``GET /_sim/deployments/{rid}``: ``{"rid", "modelRid", "deleted", "version", "deployment"}``.
- ``PUT /_sim/deployments/{rid}/status`` ``{"state", "isReady"}``: any state string.
- ``PATCH /_sim/deployments/{rid}`` ``{"minReplicas": 2, "memory": "1GiB", ...}``: reconfigure
  (``Fleet.reconfigure``'s field names; null removes a field).
- ``DELETE /_sim/deployments/{rid}``: delete (404 from then on);
  ``POST /_sim/deployments/{rid}/restore``: bring it back.
  These four answer ``{"change": Change or null}``.
- ``GET /_sim/models``: ``{"models": [...]}``.
- ``GET /_sim/models/{rid}/versions[?branch=B]``: ``{"branches": [...], "versions": [...], "latest"}``, the
  versions of branch B (``master`` by default), oldest first, each ``{"rid", "modelRid", "branch", "at",
  "createdTime", "stuck"}``, and the newest one (or null).
- ``POST /_sim/models/{rid}/versions`` ``{"branch"?, "stuck"?, "delay"?}``: publish a version of the branch
  (``master`` by default) now; it rolls out to the branch's direct deployments ``delay`` seconds later (the
  rollout delay by default), or never when ``stuck``. 201 ``{"version"}``.
- ``PUT /_sim/models/{rid}/source`` ``{"supported": false}``: listing the model's versions answers 400
  ``UnsupportedModelSource`` (``true`` undoes it).
- ``GET /_sim/changes?since=N``: ``{"changes": [...], "last": N}``.
- ``GET /_sim/faults``: ``{"faults": {target: fault}, "applied": {kind: n}}``.
- ``PUT /_sim/faults/{target}`` (``Fault`` fields as JSON): set a fault; the target is a deployment RID, a
  model RID, ``fleet`` or ``token``. ``DELETE /_sim/faults/{target}`` clears one, ``DELETE /_sim/faults``
  all.
- ``POST /_sim/tokens/revoke`` ``{"token": "..."}`` or ``{"all": true}``;
  ``POST /_sim/tokens/expire`` ``{"token": "..."}``, or ``{}`` for every issued token.
- ``GET /_sim/counters[?rid=TARGET]``: request counters; ``DELETE /_sim/counters`` resets them.
- ``POST /_sim/life/pause``, ``POST /_sim/life/resume``: stop or restart the automatic life.
- ``POST /_sim/life/step`` ``{"seconds": 10}``: advance the fleet now, paused or not.
- ``PUT /_sim/life/rates`` (``Rates`` field names; missing ones are 0): replace the rates.

Life steps the fleet while its rates are not all zero, or while a rollout is pending.

Healthy answers are the fleet's cached JSON bytes, so that a GET costs a dict lookup; nothing is logged per
request.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import unquote

import anyio
import anyio.abc
from aiohttp import web

from monitor.model import RID_PATTERN
from monitor.simulator.faults import (
    FLEET,
    TOKEN_ENDPOINT,
    Fault,
    FaultRegistry,
    TokenStore,
    default_error,
    error_envelope,
)
from monitor.simulator.fleet import DEFAULT_RATES, MAX_SIZE, Change, Fleet, PublishedVersion, Rates, Rollouts

__all__ = [
    "DEFAULT_TOKEN",
    "Life",
    "RequestCounters",
    "SimulatorHandle",
    "SimulatorSettings",
    "running_simulator",
    "serve",
]

DEFAULT_TOKEN: Final = "demo-token"  # noqa: S105 - the simulator's well-known demo credential
API_PATH: Final = "/api/v2/models/liveDeployments"
VERSIONS_PATH: Final = "/api/v2/models/{model}/versions"
#: The most versions one page holds, whatever pageSize asks for (a page size is a suggestion in Foundry).
MAX_PAGE_SIZE: Final = 10_000
_PAGE_TOKEN_PREFIX: Final = "v1."  # noqa: S105 - a page token's format, not a credential
TOKEN_PATH: Final = "/multipass/api/oauth2/token"  # noqa: S105 - a path
_JSON: Final = "application/json"
_HTML_PAGE: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
#: The longest a life tick may cover, in ticks: after a stall the fleet does not jump far ahead.
_MAX_TICK_CATCH_UP: Final = 10.0


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """How to run the simulator. ``port`` 0 lets the OS choose; tokens and client secrets never print.

    ``page_size`` is the version listing's page size when the request names none (1,000, the default that
    Foundry documents for its list endpoints; the versions endpoint documents none); ``epoch`` is the Unix
    time of simulated time 0 (None: the wall clock at start, so that ``createdTime`` reads as now).
    """

    host: str = "127.0.0.1"
    port: int = 0
    size: int = 50
    seed: int = 1
    rates: Rates = DEFAULT_RATES
    rollouts: Rollouts = field(default_factory=Rollouts)
    page_size: int = 1000
    epoch: float | None = None
    tokens: tuple[str, ...] = field(default=(DEFAULT_TOKEN,), repr=False)
    clients: Mapping[str, str] = field(default_factory=dict, repr=False)
    token_ttl: float = 3600.0
    tick: float = 0.5
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be between 0 and {MAX_SIZE}")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if self.tick <= 0 or self.token_ttl <= 0 or self.shutdown_timeout <= 0:
            raise ValueError("tick, token_ttl and shutdown_timeout must be positive")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")


class RequestCounters:
    """Counts of Foundry-endpoint requests (the control API is not counted).

    ``total`` and ``by_target`` count requests as they arrive; ``by_status`` and ``by_target_status``
    when they end, with status 0 for a request that got no answer (reset, hang, client gone). A target is
    the deployment RID of a GET, the model RID of a list or version listing, or ``token``.
    """

    def __init__(self) -> None:
        self.reset()

    def arrived(self, endpoint: str, target: str) -> None:
        self.total += 1
        self.by_endpoint[endpoint] += 1
        self.by_target[target] += 1

    def answered(self, target: str, status: int) -> None:
        self.by_status[status] += 1
        self.by_target_status[target, status] += 1

    def statuses_of(self, target: str) -> dict[int, int]:
        return {status: n for (key, status), n in self.by_target_status.items() if key == target}

    def reset(self) -> None:
        self.total = 0
        self.by_endpoint: Counter[str] = Counter()
        self.by_target: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_target_status: Counter[tuple[str, int]] = Counter()

    def to_json(self, target: str | None = None) -> dict[str, Any]:
        if target is not None:
            return {
                "target": target,
                "total": self.by_target.get(target, 0),
                "byStatus": {str(k): v for k, v in sorted(self.statuses_of(target).items())},
            }
        return {
            "total": self.total,
            "byEndpoint": dict(self.by_endpoint),
            "byStatus": {str(k): v for k, v in sorted(self.by_status.items())},
            "byTarget": dict(self.by_target),
        }


class Life:
    """The fleet's automatic life: a step every ``tick`` seconds of wall time unless paused, or static with
    no rollout pending."""

    def __init__(self, fleet: Fleet, tick: float) -> None:
        self.fleet = fleet
        self.tick = tick
        self.paused = False
        #: Loop iterations, and the steps among them that advanced the fleet.
        self.wakeups = 0
        self.steps = 0

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    async def run(self) -> None:
        last = anyio.current_time()
        while True:
            await anyio.sleep(self.tick)
            now = anyio.current_time()
            elapsed = min(now - last, self.tick * _MAX_TICK_CATCH_UP)
            last = now
            self.wakeups += 1
            if not self.paused and (not self.fleet.rates.is_static or self.fleet.pending_rollouts):
                self.fleet.step(elapsed)
                self.steps += 1


@dataclass(frozen=True, slots=True)
class SimulatorHandle:
    """A running simulator, for in-process tests: where it listens and its live state."""

    base_url: str
    settings: SimulatorSettings
    fleet: Fleet
    faults: FaultRegistry
    tokens: TokenStore
    counters: RequestCounters
    life: Life

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])


def _json_response(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _error(
    status: int, error_code: str, error_name: str, parameters: Mapping[str, Any] | None = None
) -> web.Response:
    return _json_response(status, error_envelope(error_code, error_name, parameters))


def _abort(request: web.BaseRequest) -> None:
    """Reset the connection: SO_LINGER 0 makes close send an RST, as a crashed peer or a middlebox does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _bearer(request: web.BaseRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _mangle(fault: Fault, doc: dict[str, Any]) -> Any:
    """The payload as a ``wrong_shape`` or ``unknown_state`` fault serves it."""
    if fault.kind == "unknown_state":
        doc["status"] = {**doc.get("status", {}), "state": fault.state}
        return doc
    if fault.shape == "missing_status":
        doc.pop("status", None)
    elif fault.shape == "missing_runtime":
        doc.pop("runtimeConfiguration", None)
    elif fault.shape == "wrong_types":
        runtime = doc.get("runtimeConfiguration", {})
        runtime["minReplicas"] = str(runtime.get("minReplicas"))
        status = doc.get("status", {})
        status["isReady"] = "true" if status.get("isReady") else "false"
    return doc


class _Gone:
    """The connection was dropped on purpose: there is no answer to send or count."""


_GONE: Final = _Gone()


class _Api:
    """The request handlers, over the simulator's state."""

    def __init__(
        self,
        fleet: Fleet,
        faults: FaultRegistry,
        tokens: TokenStore,
        counters: RequestCounters,
        life: Life,
        stopping: anyio.Event,
        page_size: int,
    ) -> None:
        self.page_size = page_size
        self.fleet = fleet
        self.faults = faults
        self.tokens = tokens
        self.counters = counters
        self.life = life
        self.stopping = stopping

    # -- the Foundry endpoints ------------------------------------------------------------------------

    async def get_deployment(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["rid"]
        return await self._counted(request, "get", rid, (rid, FLEET), self._answer_get)

    async def list_deployments(self, request: web.Request) -> web.StreamResponse:
        model_rid = request.query.get("modelRid", "")
        return await self._counted(request, "list", model_rid, (model_rid, FLEET), self._answer_list)

    async def list_versions(self, request: web.Request) -> web.StreamResponse:
        model_rid = request.match_info["model"]
        return await self._counted(request, "versions", model_rid, (model_rid, FLEET), self._answer_versions)

    async def token(self, request: web.Request) -> web.StreamResponse:
        return await self._counted(request, "token", TOKEN_ENDPOINT, (TOKEN_ENDPOINT,), self._answer_token)

    async def missing(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=404)

    async def _counted(
        self,
        request: web.Request,
        endpoint: str,
        target: str,
        fault_targets: tuple[str, ...],
        answer: Callable[[web.Request, str, tuple[str, ...]], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        self.counters.arrived(endpoint, target)
        status = 0
        try:
            response = await self._before(request, endpoint, target, fault_targets)
            if response is None:
                response = await answer(request, target, fault_targets)
            if isinstance(response, _Gone):
                # Nothing reaches the client: aiohttp drops what is returned on a closed transport.
                return web.Response(status=204)
            status = response.status
            return response
        finally:
            self.counters.answered(target, status)

    async def _before(
        self, request: web.Request, endpoint: str, target: str, fault_targets: tuple[str, ...]
    ) -> web.StreamResponse | _Gone | None:
        """Apply a fault that strikes before the request is looked at; None to carry on."""
        if not self.faults:
            return None
        fault = self.faults.take(fault_targets, body=False)
        if fault is None:
            return None
        await self._pause(fault.delay)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.kind == "status":
            return self._status_fault(fault, endpoint, target, headers)
        if fault.kind == "html":
            return web.Response(
                status=fault.status or 502, body=_HTML_PAGE, content_type="text/html", headers=headers
            )
        if fault.kind == "reset":
            _abort(request)
            return _GONE
        if fault.kind == "hang":
            await self.stopping.wait()
            _abort(request)
            return _GONE
        return None  # "delay": the normal answer, late

    @staticmethod
    def _status_fault(
        fault: Fault, endpoint: str, target: str, headers: Mapping[str, str] | None
    ) -> web.Response:
        status = fault.status or 500
        if fault.empty:
            return web.Response(status=status, headers=headers)
        code, name = default_error(status)
        if status == 404 and endpoint in ("list", "versions"):
            name = "ModelNotFound"
        elif status == 400 and endpoint == "versions":
            name = "UnsupportedModelSource"
        code, name = fault.error_code or code, fault.error_name or name
        parameters: dict[str, str] = {}
        if name == "LiveDeploymentNotFound" and endpoint == "get":
            parameters = {"liveDeploymentRid": target}
        elif name == "ModelNotFound" and endpoint in ("list", "versions"):
            parameters = {"modelRid": target}
        return _json_response(status, error_envelope(code, name, parameters), headers)

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self.stopping.wait()

    async def _success(
        self,
        request: web.Request,
        fault_targets: tuple[str, ...],
        body: bytes,
        spoil: Callable[[Fault], Any],
    ) -> web.StreamResponse:
        """Serve ``body``, or what a body fault makes of it (``spoil``: the JSON of the JSON-level ones)."""
        fault = self.faults.take(fault_targets, body=True) if self.faults else None
        if fault is None:
            return _json_response(200, body)
        await self._pause(fault.delay)
        if fault.kind == "truncate":
            return _json_response(200, body[: len(body) // 2])
        if fault.kind == "huge":
            return _json_response(200, b'{"padding":"' + b"x" * fault.size + b'",' + body[1:])
        if fault.kind == "cut":
            response = web.StreamResponse(status=200)
            response.content_type = _JSON
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            transport = request.transport
            if transport is not None:
                transport.close()
            return response
        return _json_response(200, json.dumps(spoil(fault)).encode())

    def _refuse(self, request: web.Request) -> web.Response | None:
        """Foundry's checks before the request itself: credentials, then the preview flag."""
        token = _bearer(request)
        if token is None:
            return _error(401, "UNAUTHORIZED", "MissingCredentials")
        if self.tokens.check(token) != "ok":
            return _error(401, "UNAUTHORIZED", "Default:Unauthorized")
        if request.query.get("preview", "").lower() != "true":
            return _error(400, "INVALID_ARGUMENT", "ApiFeaturePreviewUsageOnly")
        return None

    async def _answer_get(
        self, request: web.Request, rid: str, fault_targets: tuple[str, ...]
    ) -> web.StreamResponse:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if RID_PATTERN.match(rid) is None:
            return _error(400, "INVALID_ARGUMENT", "Default:InvalidArgument")
        body = self.fleet.body(rid)
        if body is None:
            return _error(404, "NOT_FOUND", "LiveDeploymentNotFound", {"liveDeploymentRid": rid})

        def spoil(fault: Fault) -> Any:
            doc = self.fleet.get_json(rid) or {}
            return (
                [doc] if fault.shape == "not_object" and fault.kind == "wrong_shape" else _mangle(fault, doc)
            )

        return await self._success(request, fault_targets, body, spoil)

    async def _answer_list(
        self, request: web.Request, model_rid: str, fault_targets: tuple[str, ...]
    ) -> web.StreamResponse:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if not model_rid or RID_PATTERN.match(model_rid) is None:
            return _error(400, "INVALID_ARGUMENT", "Default:InvalidArgument")
        branch = request.query.get("branch") or None
        body = self.fleet.list_body(model_rid, branch)
        if body is None:
            return _error(404, "NOT_FOUND", "ModelNotFound", {"modelRid": model_rid})

        def spoil(fault: Fault) -> Any:
            docs = [self.fleet.get_json(rid) or {} for rid in self.fleet.deployments_of(model_rid, branch)]
            if fault.kind == "wrong_shape" and fault.shape == "not_object":
                return docs
            return {"data": [_mangle(fault, doc) for doc in docs]}

        return await self._success(request, fault_targets, body, spoil)

    async def _answer_versions(
        self, request: web.Request, model_rid: str, fault_targets: tuple[str, ...]
    ) -> web.StreamResponse:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if RID_PATTERN.match(model_rid) is None:
            return _error(400, "INVALID_ARGUMENT", "Default:InvalidArgument")
        try:
            supported = self.fleet.source_supported(model_rid)
        except KeyError:
            return _error(404, "NOT_FOUND", "ModelNotFound", {"modelRid": model_rid})
        if not supported:
            return _error(400, "INVALID_ARGUMENT", "UnsupportedModelSource")
        size_text = request.query.get("pageSize")
        size = self.page_size if size_text is None else _page_number(size_text)
        if size is None or size < 1:
            return _error(400, "INVALID_ARGUMENT", "InvalidPageSize", {"pageSize": size_text})
        token = request.query.get("pageToken")
        offset = 0 if token is None else _token_offset(token)
        branch = request.query.get("branch") or "master"
        page = None
        if offset is not None:
            limit = min(size, MAX_PAGE_SIZE)
            page = self.fleet.version_bodies(model_rid, branch, offset=offset, limit=limit)
        if page is None:
            return _error(400, "INVALID_ARGUMENT", "InvalidPageToken", {"pageToken": token})
        parts, rest = page
        more = b"" if rest is None else f',"nextPageToken":"{_PAGE_TOKEN_PREFIX}{rest}"'.encode()
        body = b'{"data":[' + b",".join(parts) + b"]" + more + b"}"

        def spoil(fault: Fault) -> Any:
            served = json.loads(body)
            if fault.kind == "wrong_shape" and fault.shape == "not_object":
                return served["data"]
            if fault.kind == "wrong_shape":
                for doc in served["data"]:
                    # A timestamp as a number, or none at all: what a version's shape can get wrong.
                    if fault.shape == "wrong_types":
                        doc["createdTime"] = 1
                    else:
                        doc.pop("createdTime", None)
            return served

        return await self._success(request, fault_targets, body, spoil)

    async def _answer_token(
        self, request: web.Request, target: str, fault_targets: tuple[str, ...]
    ) -> web.StreamResponse:
        form = await request.post()
        grant_type = form.get("grant_type")
        if grant_type is None:
            return self._oauth_error(400, "invalid_request")
        if grant_type != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = _basic_credentials(request)
        if basic is not None:
            client_id, client_secret = basic
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return self._oauth_error(401, "invalid_client")
        issued = self.tokens.issue(client_id, client_secret)
        if issued is None:
            return self._oauth_error(401, "invalid_client")
        payload = {
            "access_token": issued.access_token,
            "token_type": "bearer",
            # Whole seconds, as OAuth2 says and the SDK insists; a sub-second lifetime still says 1.
            "expires_in": max(1, round(issued.expires_in)),
        }
        body = json.dumps(payload).encode()

        def spoil(fault: Fault) -> Any:
            # A token answer without a token; an unknown state means nothing here.
            return {"token_type": "bearer"} if fault.kind == "wrong_shape" else payload

        response = await self._success(request, fault_targets, body, spoil)
        if not response.prepared:
            response.headers["Cache-Control"] = "no-store"
        return response

    @staticmethod
    def _oauth_error(status: int, error: str) -> web.Response:
        return web.json_response({"error": error}, status=status)

    # -- the control API ------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "size": self.fleet.size,
                "models": len(self.fleet.models),
                "now": self.fleet.now,
                "paused": self.life.paused,
                "rates": self.fleet.rates.as_dict(),
                "rollouts": asdict(self.fleet.rollouts),
                "pendingRollouts": self.fleet.pending_rollouts,
                "states": self.fleet.state_counts(),
            }
        )

    async def list_rids(self, request: web.Request) -> web.Response:
        model = request.query.get("model")
        if model is None:
            return web.json_response({"rids": list(self.fleet.rids)})
        if model not in self.fleet.models:
            return _control_error(404, "unknown model")
        rids = [rid for rid in self.fleet.rids if self.fleet.model_of(rid) == model]
        return web.json_response({"rids": rids})

    async def add(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        model_rid, branch = body.get("modelRid"), body.get("branch", "master")
        full, state, is_ready = (
            body.get("full", True),
            body.get("state", "STARTING"),
            body.get("isReady", False),
        )
        if not (
            (model_rid is None or isinstance(model_rid, str))
            and (branch is None or isinstance(branch, str))
            and isinstance(full, bool)
            and isinstance(state, str)
            and isinstance(is_ready, bool)
        ):
            raise _BadRequest("modelRid, branch, full, state or isReady has the wrong type")
        try:
            rid = self.fleet.add(
                model_rid=model_rid, branch=branch, full=full, state=state, is_ready=is_ready
            )
        except KeyError:
            return _control_error(404, "unknown model")
        return web.json_response({"rid": rid}, status=201)

    async def describe(self, request: web.Request) -> web.Response:
        rid = self._known_rid(request)
        return web.json_response(
            {
                "rid": rid,
                "modelRid": self.fleet.model_of(rid),
                "deleted": self.fleet.is_deleted(rid),
                "version": self.fleet.version(rid),
                "deployment": self.fleet.get_json(rid),
            }
        )

    async def set_status(self, request: web.Request) -> web.Response:
        rid = self._known_rid(request)
        body = await _json_object(request)
        state, is_ready = body.get("state"), body.get("isReady")
        if not isinstance(state, str) or not isinstance(is_ready, bool):
            raise _BadRequest("state must be a string and isReady a boolean")
        return _change_response(self.fleet.set_status(rid, state, is_ready))

    async def reconfigure(self, request: web.Request) -> web.Response:
        rid = self._known_rid(request)
        body = await _json_object(request)
        try:
            change = self.fleet.reconfigure(rid, **body)
        except (ValueError, TypeError) as exc:
            raise _BadRequest(str(exc)) from None
        return _change_response(change)

    async def delete(self, request: web.Request) -> web.Response:
        return _change_response(self.fleet.delete(self._known_rid(request)))

    async def restore(self, request: web.Request) -> web.Response:
        return _change_response(self.fleet.restore(self._known_rid(request)))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": list(self.fleet.models)})

    async def model_versions(self, request: web.Request) -> web.Response:
        model = self._known_model(request)
        branch = request.query.get("branch") or "master"
        latest = self.fleet.latest_version(model, branch)
        return web.json_response(
            {
                "branches": list(self.fleet.branches_of(model)),
                "versions": [_version_json(v) for v in self.fleet.versions(model, branch)],
                "latest": None if latest is None else _version_json(latest),
            }
        )

    async def publish(self, request: web.Request) -> web.Response:
        model = self._known_model(request)
        body = await _json_object(request)
        branch, stuck, delay = body.get("branch", "master"), body.get("stuck", False), body.get("delay")
        if not (
            isinstance(branch, str)
            and branch
            and isinstance(stuck, bool)
            and (delay is None or (isinstance(delay, int | float) and not isinstance(delay, bool)))
        ):
            raise _BadRequest("branch must be a non-empty string, stuck a boolean and delay a number")
        try:
            version = self.fleet.publish_version(model, branch, stuck=stuck, delay=delay)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        return web.json_response({"version": _version_json(version)}, status=201)

    async def set_source(self, request: web.Request) -> web.Response:
        model = self._known_model(request)
        supported = (await _json_object(request)).get("supported")
        if not isinstance(supported, bool):
            raise _BadRequest("supported must be a boolean")
        self.fleet.set_unsupported_source(model, not supported)
        return web.json_response({"modelRid": model, "supported": supported})

    async def changes(self, request: web.Request) -> web.Response:
        since = _int_query(request, "since", 0)
        return web.json_response(
            {"changes": [asdict(c) for c in self.fleet.changes(since)], "last": self.fleet.last_seq}
        )

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "faults": {target: fault.to_json() for target, fault in self.faults.active().items()},
                "applied": dict(self.faults.applied),
            }
        )

    async def set_fault(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        try:
            fault = Fault.from_json(await _json_object(request))
        except (ValueError, TypeError) as exc:
            raise _BadRequest(str(exc)) from None
        self.faults.set(fault, target)
        return web.json_response({"target": target, "fault": fault.to_json()})

    async def clear_fault(self, request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.faults.clear(request.match_info["target"])})

    async def clear_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.faults.clear()})

    async def revoke(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body.get("all") is True:
            return web.json_response({"revoked": self.tokens.revoke_all()})
        token = body.get("token")
        if not isinstance(token, str):
            raise _BadRequest('give "token" or "all": true')
        return web.json_response({"revoked": int(self.tokens.revoke(token))})

    async def expire(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        token = body.get("token")
        if token is not None and not isinstance(token, str):
            raise _BadRequest("token must be a string")
        return web.json_response({"expired": self.tokens.expire(token)})

    async def get_counters(self, request: web.Request) -> web.Response:
        return web.json_response(self.counters.to_json(request.query.get("rid")))

    async def reset_counters(self, request: web.Request) -> web.Response:
        self.counters.reset()
        return web.json_response({"reset": True})

    async def pause(self, request: web.Request) -> web.Response:
        self.life.pause()
        return web.json_response({"paused": True})

    async def resume(self, request: web.Request) -> web.Response:
        self.life.resume()
        return web.json_response({"paused": False})

    async def step(self, request: web.Request) -> web.Response:
        seconds = (await _json_object(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 86_400:
            raise _BadRequest("seconds must be a number between 0 and 86400")
        applied = self.fleet.step(float(seconds))
        return web.json_response({"applied": applied, "now": self.fleet.now})

    async def set_rates(self, request: web.Request) -> web.Response:
        try:
            self.fleet.rates = Rates.from_mapping(await _json_object(request))
        except (ValueError, TypeError) as exc:
            raise _BadRequest(str(exc)) from None
        return web.json_response({"rates": self.fleet.rates.as_dict()})

    def _known_model(self, request: web.Request) -> str:
        model = request.match_info["model"]
        if model not in self.fleet.models:
            raise _NotFound("unknown model")
        return model

    def _known_rid(self, request: web.Request) -> str:
        rid = request.match_info["rid"]
        if rid not in self.fleet:
            raise _NotFound("unknown deployment")
        return rid


class _BadRequest(Exception):
    """A control request that cannot be carried out as sent (400)."""


class _NotFound(Exception):
    """A control request about something the simulator does not have (404)."""


def _control_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _version_json(version: PublishedVersion) -> dict[str, Any]:
    return {
        "rid": version.rid,
        "modelRid": version.model_rid,
        "branch": version.branch,
        "at": version.at,
        "createdTime": version.created_time,
        "stuck": version.stuck,
    }


def _change_response(change: Change | None) -> web.Response:
    return web.json_response({"change": None if change is None else asdict(change)})


async def _json_object(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise _BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def _int_query(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None


def _page_number(text: str) -> int | None:
    """A page size or token offset as sent: plain decimal digits, or None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def _token_offset(token: str) -> int | None:
    """Where a page token says the page starts; None for anything the listing never hands out ("v1.0" is
    never one: tokens point past the first page)."""
    if not token.startswith(_PAGE_TOKEN_PREFIX):
        return None
    offset = _page_number(token.removeprefix(_PAGE_TOKEN_PREFIX))
    return offset if offset is not None and offset >= 1 else None


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (unquote(client_id), unquote(secret)) if sep else None


@web.middleware
async def _control_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except _BadRequest as exc:
        return _control_error(400, str(exc))
    except _NotFound as exc:
        return _control_error(404, str(exc))


def _build_app(api: _Api) -> web.Application:
    """The application: Foundry's routes at the top level, the control API as a sub-application."""
    app = web.Application()
    app.router.add_get(API_PATH + "/{rid}", api.get_deployment, allow_head=False)
    app.router.add_get(API_PATH, api.list_deployments, allow_head=False)
    app.router.add_get(VERSIONS_PATH, api.list_versions, allow_head=False)
    app.router.add_post(TOKEN_PATH, api.token)

    control = web.Application(middlewares=[_control_errors])
    routes: Iterable[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = (
        ("GET", "/health", api.health),
        ("GET", "/deployments", api.list_rids),
        ("POST", "/deployments", api.add),
        ("GET", "/deployments/{rid}", api.describe),
        ("PATCH", "/deployments/{rid}", api.reconfigure),
        ("DELETE", "/deployments/{rid}", api.delete),
        ("PUT", "/deployments/{rid}/status", api.set_status),
        ("POST", "/deployments/{rid}/restore", api.restore),
        ("GET", "/models", api.models),
        ("GET", "/models/{model}/versions", api.model_versions),
        ("POST", "/models/{model}/versions", api.publish),
        ("PUT", "/models/{model}/source", api.set_source),
        ("GET", "/changes", api.changes),
        ("GET", "/faults", api.get_faults),
        ("DELETE", "/faults", api.clear_faults),
        ("PUT", "/faults/{target}", api.set_fault),
        ("DELETE", "/faults/{target}", api.clear_fault),
        ("POST", "/tokens/revoke", api.revoke),
        ("POST", "/tokens/expire", api.expire),
        ("GET", "/counters", api.get_counters),
        ("DELETE", "/counters", api.reset_counters),
        ("POST", "/life/pause", api.pause),
        ("POST", "/life/resume", api.resume),
        ("POST", "/life/step", api.step),
        ("PUT", "/life/rates", api.set_rates),
    )
    for method, path, handler in routes:
        control.router.add_route(method, path, handler)
    app.add_subapp("/_sim", control)
    # Last, so that it only catches what nothing else does: a host without the API answers an empty 404.
    app.router.add_route("*", "/{tail:.*}", api.missing)
    return app


def _base_url(address: Any) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def running_simulator(settings: SimulatorSettings) -> AsyncIterator[SimulatorHandle]:
    """Run the simulator while the block runs, and yield its handle; for in-process tests.

    Must be entered and left in one task (as ``async with`` does): it holds a task group for the life.
    """
    fleet = Fleet(
        settings.size,
        seed=settings.seed,
        rates=settings.rates,
        rollouts=settings.rollouts,
        epoch=time.time() if settings.epoch is None else settings.epoch,
    )
    faults = FaultRegistry(seed=settings.seed)
    tokens = TokenStore(settings.tokens, settings.clients, ttl=settings.token_ttl)
    counters = RequestCounters()
    life = Life(fleet, settings.tick)
    stopping = anyio.Event()
    api = _Api(fleet, faults, tokens, counters, life, stopping, settings.page_size)
    runner = web.AppRunner(
        _build_app(api),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        handle = SimulatorHandle(
            base_url=_base_url(runner.addresses[0]),
            settings=settings,
            fleet=fleet,
            faults=faults,
            tokens=tokens,
            counters=counters,
            life=life,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(life.run)
            try:
                yield handle
            finally:
                tg.cancel_scope.cancel()
    finally:
        # Hanging and delayed answers end now, so that the runner's graceful shutdown is quick.
        stopping.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(settings.shutdown_timeout + 1.0):
            await runner.cleanup()


async def serve(
    settings: SimulatorSettings,
    *,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the bound base URL (``http://127.0.0.1:PORT``)."""
    async with running_simulator(settings) as handle:
        task_status.started(handle.base_url)
        await anyio.sleep_forever()
