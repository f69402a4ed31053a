"""Tests for monitor.simulator.server over real loopback sockets: Foundry's checks, faults, tokens, control."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import anyio
import pytest
import yarl

from monitor.simulator import FLEET, TOKEN_ENDPOINT, Fault, Rates, SimulatorHandle, SimulatorSettings, serve
from monitor.simulator.fleet import DEFAULT_RATES
from tests.simulator.conftest import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    SETTINGS,
    TOKEN,
    Api,
    wait_for,
    with_settings,
)

UNKNOWN = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-00000000dead"


def full_rid(sim: SimulatorHandle) -> str:
    """A deployment with the newest payload shape, so every field is there to be spoiled."""
    for rid in sim.fleet.rids:
        doc = sim.fleet.get_json(rid)
        if doc is not None and "sources" in doc["runtimeConfiguration"]:
            return rid
    raise AssertionError("the fleet has no full-shape deployment")


def assert_envelope(answer: Any, status: int, code: str, name: str) -> dict[str, Any]:
    assert answer.status == status
    assert answer.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = answer.json()
    assert set(body) == {"errorCode", "errorName", "errorInstanceId", "parameters"}
    assert (body["errorCode"], body["errorName"]) == (code, name)
    return body


# -- the Foundry endpoints ----------------------------------------------------------------------------


async def test_get_serves_the_cached_payload(sim: SimulatorHandle, api: Api) -> None:
    """A healthy GET answers 200 with exactly the fleet's cached JSON bytes, for every deployment."""
    for rid in sim.fleet.rids:
        answer = await api.get(rid)
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.body == sim.fleet.body(rid)
        assert answer.json()["rid"] == rid


async def test_percent_encoded_rid_is_decoded(sim: SimulatorHandle, api: Api) -> None:
    """A RID with percent-encoded dots in the path names the same deployment."""
    rid = sim.fleet.rids[0]
    url = yarl.URL(f"{API}/{rid.replace('.', '%2E')}?preview=true", encoded=True)
    assert "%2E" in str(url)
    answer = await api.request("GET", url, token=TOKEN)
    assert answer.status == 200
    assert answer.json()["rid"] == rid


async def test_missing_credentials(sim: SimulatorHandle, api: Api) -> None:
    """No bearer token (none, empty, or another scheme) is 401 UNAUTHORIZED MissingCredentials."""
    rid = sim.fleet.rids[0]
    assert_envelope(await api.get(rid, token=None), 401, "UNAUTHORIZED", "MissingCredentials")
    basic = {"Authorization": "Basic " + base64.b64encode(b"user:pass").decode()}
    answer = await api.request("GET", f"{API}/{rid}", params={"preview": "true"}, headers=basic)
    assert_envelope(answer, 401, "UNAUTHORIZED", "MissingCredentials")
    assert_envelope(
        await api.list(sim.fleet.models[0], token=None), 401, "UNAUTHORIZED", "MissingCredentials"
    )


async def test_invalid_and_revoked_tokens(sim: SimulatorHandle, api: Api) -> None:
    """An unknown token, and a good token once revoked through the control API, are 401 Unauthorized."""
    rid = sim.fleet.rids[0]
    assert_envelope(await api.get(rid, token="forged"), 401, "UNAUTHORIZED", "Default:Unauthorized")
    assert (await api.get(rid)).status == 200
    revoked = await api.control("POST", "/tokens/revoke", {"token": TOKEN})
    assert revoked.json() == {"revoked": 1}
    assert_envelope(await api.get(rid), 401, "UNAUTHORIZED", "Default:Unauthorized")


async def test_preview_is_required_after_auth(sim: SimulatorHandle, api: Api) -> None:
    """Without preview=true the answer is 400 ApiFeaturePreviewUsageOnly; credentials are checked first."""
    rid = sim.fleet.rids[0]
    for preview in (None, "false", ""):
        answer = await api.get(rid, preview=preview)
        assert_envelope(answer, 400, "INVALID_ARGUMENT", "ApiFeaturePreviewUsageOnly")
    assert (await api.get(rid, preview="TRUE")).status == 200
    assert (await api.get(rid, preview=None, token=None)).status == 401
    list_answer = await api.list(sim.fleet.models[0], preview="no")
    assert_envelope(list_answer, 400, "INVALID_ARGUMENT", "ApiFeaturePreviewUsageOnly")


async def test_invalid_unknown_and_deleted_rids(sim: SimulatorHandle, api: Api) -> None:
    """A malformed RID is 400; an unknown or deleted one 404 LiveDeploymentNotFound naming it; restored 200."""
    assert_envelope(await api.get("not-a-rid"), 400, "INVALID_ARGUMENT", "Default:InvalidArgument")
    body = assert_envelope(await api.get(UNKNOWN), 404, "NOT_FOUND", "LiveDeploymentNotFound")
    assert body["parameters"] == {"liveDeploymentRid": UNKNOWN}
    rid = sim.fleet.rids[3]
    sim.fleet.delete(rid)
    body = assert_envelope(await api.get(rid), 404, "NOT_FOUND", "LiveDeploymentNotFound")
    assert body["parameters"] == {"liveDeploymentRid": rid}
    sim.fleet.restore(rid)
    assert (await api.get(rid)).status == 200


async def test_list_filters_by_model_and_branch(sim: SimulatorHandle, api: Api) -> None:
    """The list endpoint returns a model's branch-tracking deployments, of one branch when asked."""
    seen_branches: set[str] = set()
    for model in sim.fleet.models:
        answer = await api.list(model)
        assert answer.status == 200
        data = answer.json()["data"]
        assert [doc["rid"] for doc in data] == list(sim.fleet.deployments_of(model))
        assert all(doc["modelVersion"]["modelRid"] == model and "branch" in doc for doc in data)
        for branch in ("master", "staging"):
            filtered = (await api.list(model, branch=branch)).json()["data"]
            assert [doc["rid"] for doc in filtered] == [doc["rid"] for doc in data if doc["branch"] == branch]
            seen_branches |= {doc["branch"] for doc in filtered}
    assert seen_branches == {"master", "staging"}
    unbranched = [rid for rid in sim.fleet.rids if "branch" not in (sim.fleet.get_json(rid) or {})]
    assert unbranched, "the fleet should hold deployments that no list returns"


async def test_list_errors(sim: SimulatorHandle, api: Api) -> None:
    """A list without modelRid or with a malformed one is 400; an unknown model 404 ModelNotFound."""
    assert_envelope(await api.list(None), 400, "INVALID_ARGUMENT", "Default:InvalidArgument")
    assert_envelope(await api.list("model-1"), 400, "INVALID_ARGUMENT", "Default:InvalidArgument")
    unknown = "ri.models.main.model.00000000-0000-4000-8000-000000000000"
    body = assert_envelope(await api.list(unknown), 404, "NOT_FOUND", "ModelNotFound")
    assert body["parameters"] == {"modelRid": unknown}


async def test_other_paths_are_an_empty_404(api: Api) -> None:
    """Paths the API does not have answer 404 with an empty body, as a host without the API does."""
    for path in ("/api/v1/models/liveDeployments/x", "/", "/multipass/api/other"):
        answer = await api.request("GET", path, token=TOKEN)
        assert (answer.status, answer.body) == (404, b"")


# -- OAuth2 -------------------------------------------------------------------------------------------

GOOD_FORM = {
    "grant_type": "client_credentials",
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "scope": "api:models-read",
}


async def test_token_endpoint_issues_usable_tokens(sim: SimulatorHandle, api: Api) -> None:
    """Good client credentials get a bearer token that the API accepts, with the configured lifetime."""
    answer = await api.token(GOOD_FORM)
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert (await api.get(sim.fleet.rids[0], token=body["access_token"])).status == 200


async def test_token_endpoint_accepts_http_basic(sim: SimulatorHandle, api: Api) -> None:
    """Client credentials in an HTTP Basic header work as the form fields do."""
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    answer = await api.token(
        {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert answer.status == 200
    assert (await api.get(sim.fleet.rids[0], token=answer.json()["access_token"])).status == 200


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({**GOOD_FORM, "client_secret": "wrong"}, 401, "invalid_client"),
        ({**GOOD_FORM, "client_id": "nobody"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        ({**GOOD_FORM, "grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, 400, "invalid_request"),
    ],
)
async def test_token_endpoint_refusals(api: Api, form: dict[str, str], status: int, error: str) -> None:
    """Bad credentials are 401 invalid_client; a wrong or missing grant type 400; never a token."""
    answer = await api.token(form)
    assert answer.status == status
    assert answer.json() == {"error": error}


@with_settings(token_ttl=1.0)
async def test_issued_tokens_expire(sim: SimulatorHandle, api: Api) -> None:
    """An OAuth2 token stops working after its expires_in; expiring through the control API is at once."""
    rid = sim.fleet.rids[0]
    token = (await api.token(GOOD_FORM)).json()["access_token"]
    assert (await api.get(rid, token=token)).status == 200
    with anyio.fail_after(5):
        while (await api.get(rid, token=token)).status != 401:
            await anyio.sleep(0.05)
    fresh = (await api.token(GOOD_FORM)).json()["access_token"]
    assert (await api.get(rid, token=fresh)).status == 200
    assert (await api.control("POST", "/tokens/expire", {"token": fresh})).json() == {"expired": 1}
    assert_envelope(await api.get(rid, token=fresh), 401, "UNAUTHORIZED", "Default:Unauthorized")


# -- faults -------------------------------------------------------------------------------------------

STATUS_FAULTS = [
    (400, "INVALID_ARGUMENT", "UnsupportedLiveDeployment"),
    (401, "UNAUTHORIZED", "Default:Unauthorized"),
    (403, "PERMISSION_DENIED", "ApiUsageDenied"),
    (404, "NOT_FOUND", "LiveDeploymentNotFound"),
    (429, "CUSTOM_CLIENT", "TooManyRequests"),
    (500, "INTERNAL", "Default:Internal"),
    (502, "CUSTOM_SERVER", "BadGateway"),
    (503, "CUSTOM_SERVER", "ServiceUnavailable"),
    (504, "TIMEOUT", "Default:Timeout"),
]


@pytest.mark.parametrize(("status", "code", "name"), STATUS_FAULTS)
async def test_status_faults_send_the_error_envelope(
    sim: SimulatorHandle, api: Api, status: int, code: str, name: str
) -> None:
    """A status fault answers that status with Foundry's envelope; a 404 names the deployment."""
    rid = sim.fleet.rids[0]
    sim.faults.set(Fault("status", status=status))
    body = assert_envelope(await api.get(rid), status, code, name)
    expected = {"liveDeploymentRid": rid} if status == 404 else {}
    assert body["parameters"] == expected
    assert "Retry-After" not in (await api.get(rid)).headers


async def test_status_fault_overrides_and_retry_after(sim: SimulatorHandle, api: Api) -> None:
    """A status fault can name its own error and carry Retry-After."""
    sim.faults.set(
        Fault("status", status=403, error_code="PERMISSION_DENIED", error_name="X:Denied", retry_after="7")
    )
    answer = await api.get(sim.fleet.rids[0])
    assert_envelope(answer, 403, "PERMISSION_DENIED", "X:Denied")
    assert answer.headers["Retry-After"] == "7"


async def test_empty_404_fault(sim: SimulatorHandle, api: Api) -> None:
    """A status fault with ``empty`` answers with no body at all (the API-missing 404)."""
    sim.faults.set(Fault("status", status=404, empty=True))
    answer = await api.get(sim.fleet.rids[0])
    assert (answer.status, answer.body) == (404, b"")


async def test_delay_fault_answers_late(sim: SimulatorHandle, api: Api) -> None:
    """A delay fault answers normally, after at least the delay."""
    rid = sim.fleet.rids[0]
    sim.faults.set(Fault("delay", delay=0.3))
    started = anyio.current_time()
    answer = await api.get(rid)
    assert anyio.current_time() - started >= 0.3
    assert answer.body == sim.fleet.body(rid)


async def test_hang_fault_never_answers(sim: SimulatorHandle) -> None:
    """A hang fault leaves the client waiting until it gives up; the request is counted as unanswered."""
    sim.faults.set(Fault("hang"))
    rid = sim.fleet.rids[0]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        with pytest.raises(TimeoutError):
            await session.get(
                f"{sim.base_url}{API}/{rid}?preview=true", headers={"Authorization": f"Bearer {TOKEN}"}
            )
    await wait_for(lambda: sim.counters.by_status[0] == 1)
    assert sim.counters.statuses_of(rid) == {0: 1}


async def test_reset_fault_resets_the_connection(sim: SimulatorHandle) -> None:
    """A reset fault answers nothing and the peer sees a TCP reset, not an orderly close."""
    sim.faults.set(Fault("reset"))
    rid = sim.fleet.rids[0]
    stream = await anyio.connect_tcp("127.0.0.1", sim.port)
    async with stream:
        request = (
            f"GET {API}/{rid}?preview=true HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
        await stream.send(request.encode())
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as caught:
            await stream.receive()
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert sim.counters.by_status[0] == 1


async def test_reset_fault_through_aiohttp(sim: SimulatorHandle, api: Api) -> None:
    """aiohttp sees the reset as ClientOSError; it retries an idempotent GET once, so two requests arrive."""
    sim.faults.set(Fault("reset"))
    with pytest.raises(aiohttp.ClientOSError):
        await api.get(sim.fleet.rids[0])
    assert sim.counters.total == 2


async def test_html_fault(sim: SimulatorHandle, api: Api) -> None:
    """An html fault answers a proxy's 502 HTML page (or another status), with Retry-After when set."""
    sim.faults.set(Fault("html", retry_after="3"))
    answer = await api.get(sim.fleet.rids[0])
    assert answer.status == 502
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.body.startswith(b"<html>")
    assert answer.headers["Retry-After"] == "3"
    sim.faults.set(Fault("html", status=504))
    assert (await api.get(sim.fleet.rids[0])).status == 504


async def test_cut_fault_closes_mid_body(sim: SimulatorHandle, api: Api) -> None:
    """A cut fault announces the whole body, sends half and closes: the client gets a payload error."""
    sim.faults.set(Fault("cut"))
    with pytest.raises(aiohttp.ClientPayloadError):
        await api.get(sim.fleet.rids[0])


async def test_truncate_fault(sim: SimulatorHandle, api: Api) -> None:
    """A truncate fault sends a well-framed 200 whose JSON body stops halfway."""
    rid = sim.fleet.rids[0]
    sim.faults.set(Fault("truncate"))
    answer = await api.get(rid)
    full = sim.fleet.body(rid) or b""
    assert answer.status == 200
    assert answer.body == full[: len(full) // 2]
    with pytest.raises(json.JSONDecodeError):
        answer.json()


@pytest.mark.parametrize("shape", ["missing_status", "missing_runtime", "wrong_types", "not_object"])
async def test_wrong_shape_fault(sim: SimulatorHandle, api: Api, shape: str) -> None:
    """A wrong_shape fault sends valid JSON that is not a LiveDeployment, in the shape asked for."""
    rid = full_rid(sim)
    sim.faults.set(Fault.from_json({"kind": "wrong_shape", "shape": shape}))
    answer = await api.get(rid)
    assert answer.status == 200
    body = answer.json()
    if shape == "missing_status":
        assert "status" not in body
        assert body["rid"] == rid
    elif shape == "missing_runtime":
        assert "runtimeConfiguration" not in body
        assert "status" in body
    elif shape == "wrong_types":
        assert isinstance(body["runtimeConfiguration"]["minReplicas"], str)
        assert isinstance(body["status"]["isReady"], str)
    else:
        assert isinstance(body, list)


async def test_unknown_state_fault(sim: SimulatorHandle, api: Api) -> None:
    """An unknown_state fault serves the payload with only status.state changed."""
    rid = full_rid(sim)
    sim.faults.set(Fault("unknown_state", state="HIBERNATING"), rid)
    body = (await api.get(rid)).json()
    expected = sim.fleet.get_json(rid)
    assert expected is not None
    assert body["status"]["state"] == "HIBERNATING"
    assert body["status"]["isReady"] == expected["status"]["isReady"]
    body["status"]["state"] = expected["status"]["state"]
    assert body == expected


async def test_huge_fault(sim: SimulatorHandle, api: Api) -> None:
    """A huge fault pads the payload with an unknown field to at least the size asked for; still valid JSON."""
    rid = sim.fleet.rids[0]
    sim.faults.set(Fault("huge", size=2_000_000))
    answer = await api.get(rid)
    assert len(answer.body) >= 2_000_000
    body = answer.json()
    assert len(body.pop("padding")) == 2_000_000
    assert body == sim.fleet.get_json(rid)


async def test_count_limited_fault_then_healthy(sim: SimulatorHandle, api: Api) -> None:
    """A fault with count 2 spoils the next two requests only, then the registry is empty again."""
    rid = sim.fleet.rids[0]
    sim.faults.set(Fault("status", status=500, count=2))
    assert [(await api.get(rid)).status for _ in range(3)] == [500, 500, 200]
    assert not sim.faults


async def test_body_fault_is_not_used_up_by_a_refused_request(sim: SimulatorHandle, api: Api) -> None:
    """A count-limited body fault waits for a successful answer: a 401 in between does not use it up."""
    rid = sim.fleet.rids[0]
    sim.faults.set(Fault("truncate", count=1))
    assert (await api.get(rid, token="forged")).status == 401
    assert (await api.get(rid)).body != sim.fleet.body(rid)
    assert (await api.get(rid)).body == sim.fleet.body(rid)


async def test_fault_targets(sim: SimulatorHandle, api: Api) -> None:
    """A deployment's fault hits it alone, hides the fleet's for it; fleet faults leave the token endpoint be."""
    first, second, third = sim.fleet.rids[:3]
    sim.faults.set(Fault("status", status=503), first)
    assert [(await api.get(rid)).status for rid in (first, second)] == [503, 200]
    sim.faults.set(Fault("status", status=500), FLEET)
    sim.faults.set(Fault("status", status=504), third)
    assert [(await api.get(rid)).status for rid in (first, second, third)] == [503, 500, 504]
    assert (await api.token(GOOD_FORM)).status == 200
    sim.faults.set(Fault("status", status=503), TOKEN_ENDPOINT)
    assert (await api.token(GOOD_FORM)).status == 503


async def test_list_faults(sim: SimulatorHandle, api: Api) -> None:
    """A model's own fault strikes its list; body faults apply to each listed deployment."""
    model = next(m for m in sim.fleet.models if len(sim.fleet.deployments_of(m)) >= 2)
    sim.faults.set(Fault("unknown_state"), model)
    data = (await api.list(model)).json()["data"]
    assert len(data) >= 2
    assert {doc["status"]["state"] for doc in data} == {"HIBERNATING"}
    sim.faults.set(Fault("status", status=404), model)
    body = assert_envelope(await api.list(model), 404, "NOT_FOUND", "ModelNotFound")
    assert body["parameters"] == {"modelRid": model}
    sim.faults.set(Fault("wrong_shape", shape="not_object"), model)
    assert isinstance((await api.list(model)).json(), list)


async def test_token_endpoint_body_faults(sim: SimulatorHandle, api: Api) -> None:
    """On the token endpoint, wrong_shape drops the token and truncate cuts the JSON."""
    sim.faults.set(Fault("wrong_shape", count=1), TOKEN_ENDPOINT)
    assert (await api.token(GOOD_FORM)).json() == {"token_type": "bearer"}
    sim.faults.set(Fault("truncate", count=1), TOKEN_ENDPOINT)
    with pytest.raises(json.JSONDecodeError):
        (await api.token(GOOD_FORM)).json()


async def test_faults_through_the_control_api(sim: SimulatorHandle, api: Api) -> None:
    """Faults are set, listed with what is left of their count, and cleared over the control API."""
    rid = sim.fleet.rids[0]
    answer = await api.control(
        "PUT", f"/faults/{rid}", {"kind": "status", "status": 429, "count": 2, "retry_after": 1}
    )
    assert answer.status == 200
    first = await api.get(rid)
    assert (first.status, first.headers["Retry-After"]) == (429, "1")
    listed = (await api.control("GET", "/faults")).json()
    assert listed["faults"][rid]["count"] == 1
    assert listed["applied"] == {"status": 1}
    assert (await api.control("DELETE", f"/faults/{rid}")).json() == {"cleared": True}
    assert (await api.get(rid)).status == 200
    await api.control("PUT", "/faults/fleet", {"kind": "reset"})
    assert (await api.control("DELETE", "/faults")).json() == {"cleared": True}
    bad = await api.control("PUT", "/faults/fleet", {"kind": "status"})
    assert bad.status == 400
    assert "status" in bad.json()["error"]
    assert (await api.control("PUT", "/faults/fleet", {"kind": "status", "status": "x"})).status == 400


# -- control API, counters, life ----------------------------------------------------------------------


async def test_control_deployments(sim: SimulatorHandle, api: Api) -> None:
    """Status, reconfiguration, delete, restore and add through /_sim change what the API serves."""
    rid = sim.fleet.rids[0]
    described = (await api.control("GET", f"/deployments/{rid}")).json()
    assert described["deployment"] == sim.fleet.get_json(rid)
    assert (described["deleted"], described["version"]) == (False, 0)

    change = (
        await api.control("PUT", f"/deployments/{rid}/status", {"state": "FAILED", "isReady": False})
    ).json()
    assert change["change"]["rid"] == rid
    assert (await api.get(rid)).json()["status"] == {"state": "FAILED", "isReady": False}
    patched = await api.control("PATCH", f"/deployments/{rid}", {"maxReplicas": 9, "gpu": None})
    assert patched.json()["change"]["version"] == 2
    served = (await api.get(rid)).json()["runtimeConfiguration"]
    assert served["maxReplicas"] == 9
    assert "gpu" not in served
    assert (await api.control("PATCH", f"/deployments/{rid}", {"colour": "red"})).status == 400
    assert (await api.control("PUT", f"/deployments/{rid}/status", {"state": 1})).status == 400

    assert (await api.control("DELETE", f"/deployments/{rid}")).json()["change"]["kind"] == "deleted"
    assert (await api.get(rid)).status == 404
    assert (await api.control("POST", f"/deployments/{rid}/restore")).json()["change"]["kind"] == "restored"
    assert (await api.get(rid)).status == 200

    model = sim.fleet.models[0]
    added = await api.control("POST", "/deployments", {"modelRid": model, "state": "ACTIVE", "isReady": True})
    assert added.status == 201
    new_rid = added.json()["rid"]
    assert (await api.get(new_rid)).json()["status"] == {"state": "ACTIVE", "isReady": True}
    assert new_rid in (await api.control("GET", f"/deployments?model={model}")).json()["rids"]
    assert new_rid in [doc["rid"] for doc in (await api.list(model)).json()["data"]]

    assert (await api.control("GET", f"/deployments/{UNKNOWN}")).status == 404
    assert (await api.control("POST", "/deployments", {"modelRid": "ri.models.main.model.x"})).status == 404
    assert (await api.control("POST", "/deployments", [1])).status == 400
    changes = (await api.control("GET", "/changes?since=0")).json()
    assert [c["kind"] for c in changes["changes"]] == ["updated", "updated", "deleted", "restored", "added"]
    assert changes["last"] == 5
    assert (await api.control("GET", "/changes?since=x")).status == 400
    assert (await api.control("GET", "/models")).json() == {"models": list(sim.fleet.models)}


async def test_counters(sim: SimulatorHandle, api: Api) -> None:
    """Counters count Foundry requests by endpoint, target and status, not control requests; reset zeroes."""
    rid = sim.fleet.rids[0]
    await api.get(rid)
    await api.get(rid, token=None)
    await api.list(sim.fleet.models[0])
    await api.token(GOOD_FORM)
    counters = (await api.control("GET", "/counters")).json()
    assert counters["total"] == 4
    assert counters["byEndpoint"] == {"get": 2, "list": 1, "token": 1}
    assert counters["byStatus"] == {"200": 3, "401": 1}
    assert counters["byTarget"][rid] == 2
    assert (await api.control("GET", f"/counters?rid={rid}")).json() == {
        "target": rid,
        "total": 2,
        "byStatus": {"200": 1, "401": 1},
    }
    await api.control("DELETE", "/counters")
    assert sim.counters.total == 0
    assert (await api.control("GET", "/counters")).json()["total"] == 0


@with_settings(rates=DEFAULT_RATES.scaled(500), tick=0.02)
async def test_life_advances_the_fleet_until_paused(sim: SimulatorHandle, api: Api) -> None:
    """With rates set, the background life changes deployments; paused, it changes nothing."""
    await wait_for(lambda: sim.fleet.last_seq > 0)
    assert (await api.control("POST", "/life/pause")).json() == {"paused": True}
    seq, wakeups = sim.fleet.last_seq, sim.life.wakeups
    await wait_for(lambda: sim.life.wakeups >= wakeups + 3)
    assert sim.fleet.last_seq == seq
    health = (await api.control("GET", "/health")).json()
    assert health["paused"] is True
    assert health["now"] > 0
    await api.control("POST", "/life/resume")
    await wait_for(lambda: sim.fleet.last_seq > seq)


@with_settings(tick=0.02)
async def test_static_fleet_has_no_life(sim: SimulatorHandle, api: Api) -> None:
    """With every rate zero the life wakes up but never steps; stepping by hand still works."""
    await wait_for(lambda: sim.life.wakeups >= 3)
    assert sim.life.steps == 0
    assert sim.fleet.last_seq == 0
    await api.control("PUT", "/life/rates", {"fail": 1.0})
    stepped = (await api.control("POST", "/life/step", {"seconds": 1})).json()
    assert stepped["applied"] > 0
    assert sim.fleet.rates == Rates(fail=1.0)
    assert (await api.control("PUT", "/life/rates", {"fail": "x"})).status == 400
    assert (await api.control("POST", "/life/step", {"seconds": -1})).status == 400


async def test_serve_reports_its_url_and_stops_when_cancelled() -> None:
    """serve() binds port 0, reports its base URL through task_status, and frees the port when cancelled."""
    async with anyio.create_task_group() as tg:
        base_url = await tg.start(serve, SimulatorSettings(size=3, rates=Rates()))
        assert base_url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session, session.get(f"{base_url}/_sim/health") as response:
            assert (await response.json())["size"] == 3
        tg.cancel_scope.cancel()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{base_url}/_sim/health")


async def test_stopping_ends_hanging_requests_quickly() -> None:
    """Leaving running_simulator with a request hanging ends it at once instead of waiting it out."""
    from monitor.simulator import running_simulator

    outcome: list[BaseException] = []

    async def hang(session: aiohttp.ClientSession, url: str) -> None:
        try:
            await session.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        except aiohttp.ClientError as exc:
            outcome.append(exc)

    async with aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
        with anyio.fail_after(3):
            async with running_simulator(SETTINGS) as sim:
                sim.faults.set(Fault("hang"))
                tg.start_soon(hang, session, f"{sim.base_url}{API}/{sim.fleet.rids[0]}?preview=true")
                await wait_for(lambda: sim.counters.total == 1)
    assert len(outcome) == 1


def test_settings_hide_credentials() -> None:
    """SimulatorSettings' repr shows neither tokens nor client secrets, and refuses impossible values."""
    text = repr(SimulatorSettings(tokens=("tok-secret",), clients={"id": "client-secret"}))
    assert "tok-secret" not in text
    assert "client-secret" not in text
    for bad in ({"size": -1}, {"size": 100_001}, {"port": 70_000}, {"tick": 0.0}, {"token_ttl": 0.0}):
        with pytest.raises(ValueError, match="must be"):
            SimulatorSettings(**bad)


# -- model versions -----------------------------------------------------------------------------------

UNKNOWN_MODEL = "ri.models.main.model.00000000-0000-4000-8000-000000000000"


def versioned_model(sim: SimulatorHandle, count: int = 7) -> str:
    """A model with direct master deployments, and ``count`` master versions in all."""
    model = next(m for m in sim.fleet.models if sim.fleet.deployments_of(m, "master"))
    while len(sim.fleet.versions(model, "master")) < count:
        sim.fleet.publish_version(model, "master")
    return model


async def all_pages(api: Api, model: str, **query: Any) -> tuple[list[dict[str, Any]], int]:
    """Every version the listing serves, following nextPageToken, and how many pages that took."""
    served: list[dict[str, Any]] = []
    token: str | None = None
    for pages in range(1, 100):
        answer = await api.versions(model, page_token=token, **query)
        assert answer.status == 200, answer.body
        page = answer.json()
        served.extend(page["data"])
        token = page.get("nextPageToken")
        if token is None:
            return served, pages
    raise AssertionError("the listing did not end")


async def test_versions_are_served_in_pages(sim: SimulatorHandle, api: Api) -> None:
    """The listing pages through the branch's versions, oldest first, pageSize at a time, and the last page
    has no nextPageToken; without pageSize a page is the settings' default (1,000 here: one page)."""
    model = versioned_model(sim)
    expected = [v.rid for v in sim.fleet.versions(model, "master")]
    served, pages = await all_pages(api, model, page_size=3, branch="master")
    assert [doc["rid"] for doc in served] == expected
    assert pages == 3
    assert [doc["createdTime"] for doc in served] == [
        v.created_time for v in sim.fleet.versions(model, "master")
    ]
    first = (await api.versions(model, page_size=3)).json()
    assert (len(first["data"]), first["nextPageToken"]) == (3, "v1.3")
    whole = (await api.versions(model)).json()
    assert [doc["rid"] for doc in whole["data"]] == expected
    assert "nextPageToken" not in whole
    assert (await api.versions(model, branch="nothing-here")).json() == {"data": []}
    assert sim.counters.by_endpoint["versions"] == 6
    assert sim.counters.statuses_of(model) == {200: 6}


@with_settings(page_size=2)
async def test_the_default_page_size_is_a_setting(sim: SimulatorHandle, api: Api) -> None:
    """SimulatorSettings.page_size is the page size of a request without pageSize."""
    model = versioned_model(sim, count=5)
    served, pages = await all_pages(api, model)
    assert (len(served), pages) == (5, 3)


async def test_version_listing_checks(sim: SimulatorHandle, api: Api) -> None:
    """Credentials and preview are checked first, then the model RID, then whether the model exists (404
    ModelNotFound naming it), then its source (400 UnsupportedModelSource), then the page size and token."""
    model = versioned_model(sim)
    assert_envelope(await api.versions(model, token=None), 401, "UNAUTHORIZED", "MissingCredentials")
    assert_envelope(await api.versions(model, token="forged"), 401, "UNAUTHORIZED", "Default:Unauthorized")
    assert_envelope(
        await api.versions(model, preview=None), 400, "INVALID_ARGUMENT", "ApiFeaturePreviewUsageOnly"
    )
    assert_envelope(await api.versions("model-1"), 400, "INVALID_ARGUMENT", "Default:InvalidArgument")
    body = assert_envelope(await api.versions(UNKNOWN_MODEL), 404, "NOT_FOUND", "ModelNotFound")
    assert body["parameters"] == {"modelRid": UNKNOWN_MODEL}
    for size in (0, -1, "x", "1e3"):
        body = assert_envelope(
            await api.versions(model, page_size=size), 400, "INVALID_ARGUMENT", "InvalidPageSize"
        )
        assert body["parameters"] == {"pageSize": str(size)}
    for bad in ("v1.0", "v1.7", "v1.999", "v2.3", "3", "v1.-1", ""):
        body = assert_envelope(
            await api.versions(model, page_token=bad), 400, "INVALID_ARGUMENT", "InvalidPageToken"
        )
        assert body["parameters"] == {"pageToken": bad}
    assert (await api.versions(model, page_token="v1.6")).status == 200
    sim.fleet.set_unsupported_source(model)
    body = assert_envelope(await api.versions(model), 400, "INVALID_ARGUMENT", "UnsupportedModelSource")
    assert body["parameters"] == {}
    assert (await api.list(model)).status == 200


async def test_a_page_size_over_the_maximum_is_capped(sim: SimulatorHandle, api: Api) -> None:
    """A page size over 10,000 is taken as 10,000, as Foundry takes a page size as a suggestion."""
    model = versioned_model(sim)
    answer = (await api.versions(model, page_size=10**8)).json()
    assert len(answer["data"]) == len(sim.fleet.versions(model, "master"))


async def test_version_listing_faults(sim: SimulatorHandle, api: Api) -> None:
    """A model's faults strike its version listing too: a 404 is ModelNotFound naming the model, a 400
    UnsupportedModelSource, wrong_shape spoils each version's createdTime, truncate the JSON."""
    model = versioned_model(sim)
    sim.faults.set(Fault("status", status=404, count=1), model)
    body = assert_envelope(await api.versions(model), 404, "NOT_FOUND", "ModelNotFound")
    assert body["parameters"] == {"modelRid": model}
    sim.faults.set(Fault("status", status=400, count=1), model)
    assert_envelope(await api.versions(model), 400, "INVALID_ARGUMENT", "UnsupportedModelSource")
    sim.faults.set(Fault("wrong_shape", count=1), model)
    assert all("createdTime" not in doc for doc in (await api.versions(model)).json()["data"])
    sim.faults.set(Fault("wrong_shape", shape="wrong_types", count=1), model)
    assert {doc["createdTime"] for doc in (await api.versions(model)).json()["data"]} == {1}
    sim.faults.set(Fault("wrong_shape", shape="not_object", count=1), model)
    assert isinstance((await api.versions(model)).json(), list)
    sim.faults.set(Fault("truncate", count=1), model)
    with pytest.raises(json.JSONDecodeError):
        (await api.versions(model)).json()
    sim.faults.set(Fault("status", status=503), FLEET)
    assert (await api.versions(model)).status == 503


async def test_control_versions(sim: SimulatorHandle, api: Api) -> None:
    """/_sim lists a branch's versions and its newest, publishes one (stuck, or rolled out after a delay
    by a step), and marks a model's source unsupported; bad requests are 400, an unknown model 404."""
    model = versioned_model(sim, count=1)
    listed = (await api.control("GET", f"/models/{model}/versions")).json()
    assert "master" in listed["branches"]
    assert listed["latest"] == listed["versions"][-1]
    assert listed["latest"]["rid"] == sim.fleet.versions(model, "master")[-1].rid
    stuck = await api.control("POST", f"/models/{model}/versions", {"stuck": True})
    assert stuck.status == 201
    assert stuck.json()["version"]["stuck"] is True
    published = (
        await api.control("POST", f"/models/{model}/versions", {"branch": "master", "delay": 5})
    ).json()
    version = published["version"]
    assert (await api.control("GET", f"/models/{model}/versions?branch=master")).json()["latest"] == version
    assert (await api.control("GET", "/health")).json()["pendingRollouts"] == 1
    await api.control("POST", "/life/step", {"seconds": 5})
    deployments = sim.fleet.deployments_of(model, "master")
    assert {(await api.get(rid)).json()["modelVersion"]["modelVersionRid"] for rid in deployments} == {
        version["rid"]
    }

    assert (await api.control("PUT", f"/models/{model}/source", {"supported": False})).status == 200
    assert (await api.versions(model)).status == 400
    assert (await api.control("PUT", f"/models/{model}/source", {"supported": True})).status == 200
    assert (await api.versions(model)).status == 200

    for bad in (
        {"branch": 3},
        {"branch": ""},
        {"stuck": "yes"},
        {"delay": "soon"},
        {"delay": -1},
        {"delay": True},
    ):
        assert (await api.control("POST", f"/models/{model}/versions", bad)).status == 400, bad
    assert (await api.control("PUT", f"/models/{model}/source", {"supported": "no"})).status == 400
    for method, path in (("GET", "versions"), ("POST", "versions"), ("PUT", "source")):
        answer = await api.control(method, f"/models/{UNKNOWN_MODEL}/{path}", {"supported": True})
        assert answer.status == 404


@with_settings(tick=0.02)
async def test_life_rolls_out_in_a_static_fleet(sim: SimulatorHandle, api: Api) -> None:
    """A static fleet's life steps while a rollout is pending, so a published version reaches the branch's
    deployments in wall time; afterwards the life rests again."""
    model = versioned_model(sim, count=1)
    version = sim.fleet.publish_version(model, "master", delay=0.05)
    deployments = sim.fleet.deployments_of(model, "master")
    await wait_for(lambda: sim.fleet.pending_rollouts == 0)
    assert {(await api.get(rid)).json()["modelVersion"]["modelVersionRid"] for rid in deployments} == {
        version.rid
    }
    steps = sim.life.steps
    wakeups = sim.life.wakeups
    await wait_for(lambda: sim.life.wakeups >= wakeups + 3)
    assert sim.life.steps == steps
