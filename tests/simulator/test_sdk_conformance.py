"""The official Python SDK (``foundry-platform-sdk``) against the simulator: payloads decode, errors map.

Live deployments (``LiveDeployment.get`` and ``.list``) and model versions (``Model.Version.list``, page
after page) are both held to it.

The SDK is Palantir's own client of this API, so whatever it decodes and however it classifies an error is
the reference the simulator is held to. It is synchronous (httpx), so each SDK call runs in a worker thread
(``anyio.to_thread.run_sync``) while the simulator serves from the test's event loop.

Two payload shapes are not decodable by the SDK, on purpose, and are checked as rejections:

- the documentation's shape, without ``runtimeConfiguration.sources`` and ``environmentVariables``: SDK 1.111
  declares both required (``foundry_sdk/v2/models/models.py``, ``LiveDeploymentRuntimeConfiguration``), so
  it raises pydantic's ``ValidationError`` naming exactly those two fields (the monitor must accept the shape;
  the simulator serves it for that reason);
- a state outside the documented five (``LiveDeploymentState`` is a ``Literal``), served by the
  ``unknown_state`` fault.

A list holding one docs-shaped deployment is rejected whole by the SDK for the same reason, so list decoding
is checked on the models whose listed deployments all have the newest shape, and rejection on the others.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import anyio
import pydantic
import pytest
from foundry_sdk import (
    ApiNotFoundError,
    BadRequestError,
    ConfidentialClientAuth,
    Config,
    FoundryClient,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
    SDKInternalError,
    ServiceUnavailable,
    UnauthorizedError,
    UserTokenAuth,
)
from foundry_sdk.v2.core.errors import ApiFeaturePreviewUsageOnly
from foundry_sdk.v2.models import errors as model_errors

from monitor.simulator import Fault, SimulatorHandle, running_simulator
from monitor.simulator.fleet import STATES
from tests.simulator.conftest import CLIENT_ID, CLIENT_SECRET, SETTINGS, TOKEN

T = TypeVar("T")
UNKNOWN = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-00000000dead"
DOCS_SHAPE_MISSING = {("runtimeConfiguration", "sources"), ("runtimeConfiguration", "environmentVariables")}


#: The version listing's default page size here: small, so that a listing without page_size pages too.
PAGE_SIZE = 3


@pytest.fixture
async def sim(anyio_backend: str) -> AsyncIterator[SimulatorHandle]:
    """A static fleet of 200 (every state and shape, checked by the first test), version pages of 3."""
    async with running_simulator(replace(SETTINGS, size=200, seed=21, page_size=PAGE_SIZE)) as handle:
        yield handle


def sdk(sim: SimulatorHandle, *, token: str = TOKEN, **config: Any) -> FoundryClient:
    """An SDK client of the simulator over plain HTTP; retries only as ``config`` says."""
    return FoundryClient(
        auth=UserTokenAuth(token), hostname=f"127.0.0.1:{sim.port}", config=Config(scheme="http", **config)
    )


def no_qos_retry(sim: SimulatorHandle, **kwargs: Any) -> FoundryClient:
    return sdk(sim, propagate_qos="PROPAGATE_429_AND_503_TO_CALLER", **kwargs)


async def in_thread(call: Callable[[], T]) -> T:
    with anyio.fail_after(60):
        return await anyio.to_thread.run_sync(call)


async def raised(call: Callable[[], object]) -> BaseException:
    """The exception ``call`` raises in a worker thread (the test fails if it returns)."""

    def run() -> BaseException:
        try:
            call()
        except Exception as exc:
            return exc
        raise AssertionError("the SDK call succeeded")

    return await in_thread(run)


def is_full_shape(doc: dict[str, Any]) -> bool:
    runtime = doc["runtimeConfiguration"]
    return "sources" in runtime and "environmentVariables" in runtime


def validation_locs(exc: BaseException) -> set[tuple[str, ...]]:
    assert isinstance(exc, pydantic.ValidationError), repr(exc)
    return {tuple(str(part) for part in error["loc"]) for error in exc.errors()}


async def test_fleet_covers_every_state_and_shape(sim: SimulatorHandle) -> None:
    """The conformance fleet holds every state, ready and not, both shapes and every optional field."""
    docs = [doc for rid in sim.fleet.rids if (doc := sim.fleet.get_json(rid)) is not None]
    assert {doc["status"]["state"] for doc in docs} == set(STATES)
    statuses = {(doc["status"]["state"], doc["status"]["isReady"]) for doc in docs}
    assert {("ACTIVE", True), ("ACTIVE", False)} <= statuses
    assert any(not is_full_shape(doc) for doc in docs)
    runtimes = [doc["runtimeConfiguration"] for doc in docs if is_full_shape(doc)]
    for name in ("cpu", "memory", "gpu", "threadCount", "scalingConfiguration"):
        assert any(name in r for r in runtimes), name
        assert any(name not in r for r in runtimes), name
    assert any("branch" not in doc for doc in docs)
    assert any(r["environmentVariables"] for r in runtimes)
    assert any(r["sources"] for r in runtimes)


async def test_sdk_decodes_every_full_shape_deployment(sim: SimulatorHandle) -> None:
    """LiveDeployment.get decodes every newest-shape payload to exactly what the simulator holds."""
    client = sdk(sim)
    full = [rid for rid in sim.fleet.rids if is_full_shape(sim.fleet.get_json(rid) or {})]
    assert len(full) > 150

    def decode_all() -> list[dict[str, Any]]:
        return [
            client.models.LiveDeployment.get(rid, preview=True).model_dump(by_alias=True, exclude_none=True)
            for rid in full
        ]

    decoded = await in_thread(decode_all)
    assert decoded == [sim.fleet.get_json(rid) for rid in full]


async def test_sdk_rejects_the_docs_shape(sim: SimulatorHandle) -> None:
    """The SDK refuses a docs-shaped payload, naming exactly the two fields it lacks (its documented rule)."""
    client = sdk(sim)
    docs_shaped = [rid for rid in sim.fleet.rids if not is_full_shape(sim.fleet.get_json(rid) or {})]
    assert docs_shaped
    for rid in docs_shaped:
        exc = await raised(partial(client.models.LiveDeployment.get, rid, preview=True))
        assert validation_locs(exc) == DOCS_SHAPE_MISSING


async def test_sdk_rejects_an_unknown_state(sim: SimulatorHandle) -> None:
    """The unknown_state fault serves a state the SDK's enum refuses, and nothing else it would refuse."""
    client = sdk(sim)
    rid = next(rid for rid in sim.fleet.rids if is_full_shape(sim.fleet.get_json(rid) or {}))
    sim.faults.set(Fault("unknown_state", state="HIBERNATING", count=1), rid)
    exc = await raised(lambda: client.models.LiveDeployment.get(rid, preview=True))
    assert validation_locs(exc) == {("status", "state")}
    assert (await in_thread(lambda: client.models.LiveDeployment.get(rid, preview=True))).rid == rid


async def test_sdk_lists_deployments_by_model_and_branch(sim: SimulatorHandle) -> None:
    """LiveDeployment.list decodes every model's list (all-new-shape ones) and filters by branch."""
    client = sdk(sim)
    decodable = rejected = 0
    for model in sim.fleet.models:
        listed = sim.fleet.deployments_of(model)
        if all(is_full_shape(sim.fleet.get_json(rid) or {}) for rid in listed):
            response = await in_thread(
                partial(client.models.LiveDeployment.list, model_rid=model, preview=True)
            )
            assert [d.rid for d in response.data] == list(listed)
            master = await in_thread(
                partial(client.models.LiveDeployment.list, model_rid=model, branch="master", preview=True)
            )
            assert [d.rid for d in master.data] == list(sim.fleet.deployments_of(model, "master"))
            assert all(d.branch == "master" for d in master.data)
            decodable += 1
        else:
            exc = await raised(partial(client.models.LiveDeployment.list, model_rid=model, preview=True))
            locs = validation_locs(exc)
            assert {loc[0] for loc in locs} == {"data"}
            assert {loc[2:] for loc in locs} == DOCS_SHAPE_MISSING
            rejected += 1
    assert decodable
    assert rejected


async def test_not_found_maps_to_live_deployment_not_found(sim: SimulatorHandle) -> None:
    """An unknown or deleted RID is the SDK's LiveDeploymentNotFound with the RID as its parameter."""
    client = sdk(sim)
    deleted = sim.fleet.rids[0]
    sim.fleet.delete(deleted)
    for rid in (UNKNOWN, deleted):
        exc = await raised(partial(client.models.LiveDeployment.get, rid, preview=True))
        assert isinstance(exc, model_errors.LiveDeploymentNotFound)
        assert exc.parameters["liveDeploymentRid"] == rid
        assert exc.error_instance_id


async def test_unknown_model_maps_to_model_not_found(sim: SimulatorHandle) -> None:
    """Listing an unknown model is the SDK's ModelNotFound."""
    model = "ri.models.main.model.00000000-0000-4000-8000-000000000000"
    exc = await raised(lambda: sdk(sim).models.LiveDeployment.list(model_rid=model, preview=True))
    assert isinstance(exc, model_errors.ModelNotFound)
    assert exc.parameters["modelRid"] == model


async def test_missing_preview_maps_to_bad_request(sim: SimulatorHandle) -> None:
    """Without preview the SDK raises BadRequestError named ApiFeaturePreviewUsageOnly.

    ``get`` does not list ApiFeaturePreviewUsageOnly among its errors, so the SDK raises its generic 400 class
    rather than ``foundry_sdk.v2.core.errors.ApiFeaturePreviewUsageOnly``; the name and code still tell.
    """
    exc = await raised(lambda: sdk(sim).models.LiveDeployment.get(sim.fleet.rids[0]))
    assert isinstance(exc, BadRequestError)
    assert not isinstance(exc, ApiFeaturePreviewUsageOnly)
    assert (exc.name, exc.error_code) == ("ApiFeaturePreviewUsageOnly", "INVALID_ARGUMENT")


async def test_bad_tokens_map_to_unauthorized(sim: SimulatorHandle) -> None:
    """An unknown token, and a revoked one, are the SDK's UnauthorizedError."""
    rid = sim.fleet.rids[0]
    exc = await raised(lambda: sdk(sim, token="forged").models.LiveDeployment.get(rid, preview=True))
    assert isinstance(exc, UnauthorizedError)
    assert exc.name == "Default:Unauthorized"
    sim.tokens.revoke(TOKEN)
    assert isinstance(
        await raised(lambda: sdk(sim).models.LiveDeployment.get(rid, preview=True)), UnauthorizedError
    )


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault("status", status=400), model_errors.UnsupportedLiveDeployment),
        (Fault("status", status=401), UnauthorizedError),
        (Fault("status", status=403), PermissionDeniedError),
        (Fault("status", status=404, empty=True), ApiNotFoundError),
        (Fault("status", status=429), RateLimitError),
        (Fault("status", status=503, retry_after="1"), ServiceUnavailable),
        (Fault("status", status=500), InternalServerError),
        (Fault("status", status=502), InternalServerError),
        (Fault("status", status=504), InternalServerError),
        (Fault("html"), SDKInternalError),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else getattr(value, "kind", str(value)),
)
async def test_faults_map_to_sdk_exceptions(
    sim: SimulatorHandle, fault: Fault, expected: type[Exception]
) -> None:
    """Each injected error answer is raised as the SDK's own class for it, after exactly one request."""
    rid = sim.fleet.rids[0]
    sim.faults.set(replace(fault, count=1), rid)
    exc = await raised(lambda: no_qos_retry(sim).models.LiveDeployment.get(rid, preview=True))
    assert type(exc) is expected, repr(exc)
    assert sim.counters.by_target[rid] == 1
    assert not sim.faults


async def test_sdk_retries_503_then_decodes(sim: SimulatorHandle) -> None:
    """With its default retries the SDK rides out two 503s and decodes the third answer."""
    rid = next(rid for rid in sim.fleet.rids if is_full_shape(sim.fleet.get_json(rid) or {}))
    sim.faults.set(Fault("status", status=503, count=2), rid)
    client = sdk(sim, backoff_slot_size_ms=1)
    decoded = await in_thread(lambda: client.models.LiveDeployment.get(rid, preview=True))
    assert decoded.rid == rid
    assert sim.counters.statuses_of(rid) == {503: 2, 200: 1}


async def test_sdk_oauth2_client_credentials(sim: SimulatorHandle) -> None:
    """The SDK's ConfidentialClientAuth gets a token from the simulator's token endpoint and uses it."""
    rid = next(rid for rid in sim.fleet.rids if is_full_shape(sim.fleet.get_json(rid) or {}))
    auth = ConfidentialClientAuth(CLIENT_ID, CLIENT_SECRET, scopes=["api:models-read"], should_refresh=False)
    client = FoundryClient(auth=auth, hostname=f"127.0.0.1:{sim.port}", config=Config(scheme="http"))
    assert (await in_thread(lambda: client.models.LiveDeployment.get(rid, preview=True))).rid == rid
    assert sim.counters.by_endpoint["token"] == 1

    wrong = ConfidentialClientAuth(CLIENT_ID, "wrong-secret", should_refresh=False)
    refused = FoundryClient(auth=wrong, hostname=f"127.0.0.1:{sim.port}", config=Config(scheme="http"))
    await raised(lambda: refused.models.LiveDeployment.get(rid, preview=True))
    assert sim.counters.statuses_of("token") == {200: 1, 401: 1}


async def test_sdk_refuses_malformed_rids_before_sending(sim: SimulatorHandle) -> None:
    """The SDK checks the RID pattern itself, so the simulator's 400 for a malformed RID is for raw clients."""
    exc = await raised(lambda: sdk(sim).models.LiveDeployment.get("not-a-rid", preview=True))
    assert isinstance(exc, pydantic.ValidationError)
    assert sim.counters.total == 0


# -- model versions -----------------------------------------------------------------------------------

UNKNOWN_MODEL = "ri.models.main.model.00000000-0000-4000-8000-000000000000"


def sdk_versions(client: FoundryClient, model: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every version Model.Version.list yields (it follows the pages itself), as JSON-ready dicts."""
    listed = client.models.Model.Version.list(model, preview=True, **kwargs)
    return [version.model_dump(by_alias=True, exclude_none=True, mode="json") for version in listed]


async def test_sdk_lists_model_versions_across_pages(sim: SimulatorHandle) -> None:
    """Model.Version.list decodes every branch's versions of every model, page after page (more versions
    than a page), to exactly what the simulator holds, one request per page."""
    client = sdk(sim)
    for model in sim.fleet.models:
        sim.fleet.publish_version(model, "master")
    checked = paged = 0
    for model in sim.fleet.models:
        for branch in sim.fleet.branches_of(model):
            expected = sim.fleet.versions(model, branch)
            before = sim.counters.by_target[model]
            decoded = await in_thread(partial(sdk_versions, client, model, branch=branch))
            assert [v["rid"] for v in decoded] == [v.rid for v in expected]
            assert [pydantic.TypeAdapter(datetime).validate_python(v["createdTime"]) for v in decoded] == [
                datetime.fromisoformat(v.created_time) for v in expected
            ]
            assert all(
                v["source"]
                == {"type": "codeRepository", "repositoryRid": v["backingRepositories"][0], "branch": branch}
                for v in decoded
                if "source" in v
            )
            pages = max(1, math.ceil(len(expected) / PAGE_SIZE))
            assert sim.counters.by_target[model] - before == pages
            checked += 1
            paged += pages > 1
    assert checked > len(sim.fleet.models)
    assert paged
    assert sim.counters.by_status.keys() == {200}


async def test_sdk_follows_pages_of_the_size_it_asks_for(sim: SimulatorHandle) -> None:
    """With page_size, the SDK sends it and follows nextPageToken through pages of that size."""
    model = sim.fleet.models[0]
    for _ in range(4):
        sim.fleet.publish_version(model, "master")
    expected = [v.rid for v in sim.fleet.versions(model, "master")]
    decoded = await in_thread(partial(sdk_versions, sdk(sim), model, page_size=1))
    assert [v["rid"] for v in decoded] == expected
    assert sim.counters.statuses_of(model) == {200: len(expected)}


async def test_unknown_model_versions_map_to_model_not_found(sim: SimulatorHandle) -> None:
    """Listing the versions of an unknown model is the SDK's ModelNotFound naming it."""
    exc = await raised(lambda: sdk_versions(sdk(sim), UNKNOWN_MODEL))
    assert isinstance(exc, model_errors.ModelNotFound)
    assert exc.parameters["modelRid"] == UNKNOWN_MODEL
    assert exc.error_instance_id


async def test_unsupported_model_source_maps_to_the_sdk_class(sim: SimulatorHandle) -> None:
    """A model marked as an unsupported source is the SDK's UnsupportedModelSource; so is the default 400
    fault of the version listing."""
    model, other = sim.fleet.models[:2]
    sim.fleet.set_unsupported_source(model)
    assert isinstance(
        await raised(lambda: sdk_versions(sdk(sim), model)), model_errors.UnsupportedModelSource
    )
    sim.faults.set(Fault("status", status=400, count=1), other)
    assert isinstance(
        await raised(lambda: sdk_versions(sdk(sim), other)), model_errors.UnsupportedModelSource
    )
