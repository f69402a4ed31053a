"""Tests for monitor.simulator.faults: fault validation, the registry's choice and counting, and tokens."""

from __future__ import annotations

import json

import pytest

from monitor.simulator.faults import (
    FLEET,
    TOKEN_ENDPOINT,
    Fault,
    FaultRegistry,
    TokenStore,
    default_error,
    error_envelope,
)

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
OTHER = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000002"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "explode"}, "unknown fault kind"),
        ({"kind": "status"}, "needs a status"),
        ({"kind": "status", "status": 200}, "between 400 and 599"),
        ({"kind": "delay", "delay": -1.0}, "delay"),
        ({"kind": "huge", "size": -5}, "size"),
        ({"kind": "wrong_shape", "shape": "square"}, "unknown shape"),
        ({"kind": "reset", "count": 0}, "count"),
        ({"kind": "reset", "probability": 0.0}, "probability"),
    ],
)
def test_fault_refuses_what_it_cannot_do(kwargs: dict[str, object], message: str) -> None:
    """A fault that could not be served as described is refused when it is made."""
    with pytest.raises(ValueError, match=message):
        Fault.from_json(kwargs)


def test_fault_json_round_trip_and_types() -> None:
    """from_json takes the control API's JSON (a number for Retry-After), refuses unknown fields and types."""
    fault = Fault.from_json({"kind": "status", "status": 429, "retry_after": 2, "count": 3})
    assert fault.retry_after == "2"
    assert Fault.from_json(fault.to_json()) == fault
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.from_json({"kind": "reset", "sometimes": True})
    with pytest.raises(TypeError, match="status"):
        Fault.from_json({"kind": "status", "status": "500"})
    with pytest.raises(TypeError, match="count"):
        Fault.from_json({"kind": "reset", "count": True})
    with pytest.raises(ValueError, match="needs a kind"):
        Fault.from_json({"status": 500})


def test_deployment_fault_hides_the_fleet_fault() -> None:
    """A deployment's own fault decides for it; the fleet's applies to every other deployment."""
    registry = FaultRegistry()
    registry.set(Fault("status", status=500))
    registry.set(Fault("status", status=404), RID)
    own = registry.take((RID, FLEET), body=False)
    fleet = registry.take((OTHER, FLEET), body=False)
    assert own is not None
    assert own.status == 404
    assert fleet is not None
    assert fleet.status == 500


def test_count_limits_the_fault_then_clears_it() -> None:
    """A fault with count N strikes the next N requests, shows what is left, then is gone."""
    registry = FaultRegistry()
    registry.set(Fault("reset", count=2))
    assert registry.get(FLEET) == Fault("reset", count=2)
    assert registry.take((FLEET,), body=False) is not None
    assert registry.active() == {FLEET: Fault("reset", count=1)}
    assert registry.take((FLEET,), body=False) is not None
    assert registry.take((FLEET,), body=False) is None
    assert not registry
    assert registry.applied["reset"] == 2


def test_stages_do_not_use_each_others_faults() -> None:
    """A body fault is not handed out (nor used up) before the request is looked at, and the reverse."""
    registry = FaultRegistry()
    registry.set(Fault("truncate", count=1))
    assert registry.take((FLEET,), body=False) is None
    assert registry.take((FLEET,), body=True) is not None
    registry.set(Fault("reset", count=1))
    assert registry.take((FLEET,), body=True) is None
    assert registry.take((FLEET,), body=False) is not None


def test_probability_strikes_that_share_and_is_seeded() -> None:
    """A fault of probability p strikes about p of the requests, the same ones for the same seed."""

    def pattern(seed: int) -> list[bool]:
        registry = FaultRegistry(seed=seed)
        registry.set(Fault("status", status=503, probability=0.3))
        return [registry.take((FLEET,), body=False) is not None for _ in range(2000)]

    first = pattern(1)
    assert 0.25 < sum(first) / len(first) < 0.35
    assert pattern(1) == first
    assert pattern(2) != first


def test_clear_one_or_all() -> None:
    """clear(target) removes one fault, clear() all, each telling whether there was something."""
    registry = FaultRegistry()
    registry.set(Fault("hang"), RID)
    registry.set(Fault("hang"), TOKEN_ENDPOINT)
    assert registry.clear(RID) is True
    assert registry.clear(RID) is False
    assert len(registry) == 1
    assert registry.clear() is True
    assert registry.clear() is False


def test_error_envelope_and_defaults() -> None:
    """The envelope has Foundry's four fields, a fresh instance id each time, and the table's names."""
    body = json.loads(error_envelope("NOT_FOUND", "LiveDeploymentNotFound", {"liveDeploymentRid": RID}))
    assert set(body) == {"errorCode", "errorName", "errorInstanceId", "parameters"}
    assert body["parameters"] == {"liveDeploymentRid": RID}
    assert json.loads(error_envelope("A", "B"))["errorInstanceId"] != body["errorInstanceId"]
    assert default_error(400) == ("INVALID_ARGUMENT", "UnsupportedLiveDeployment")
    assert default_error(403) == ("PERMISSION_DENIED", "ApiUsageDenied")
    assert default_error(404) == ("NOT_FOUND", "LiveDeploymentNotFound")
    assert default_error(500) == ("INTERNAL", "Default:Internal")
    assert default_error(599)[0] == "INTERNAL"
    assert default_error(418)[0] == "INVALID_ARGUMENT"


def test_static_tokens_and_unknown_ones() -> None:
    """Static tokens are accepted; a missing token and an unknown one are told apart."""
    store = TokenStore(["static-1"])
    assert store.check("static-1") == "ok"
    assert store.check(None) == "missing"
    assert store.check("") == "missing"
    assert store.check("nope") == "unknown"


def test_issued_tokens_expire_after_their_lifetime() -> None:
    """An issued token is good for ttl seconds, then expired; bad client credentials get nothing."""
    clock = Clock()
    store = TokenStore(clients={"svc": "right"}, ttl=60.0, clock=clock)
    assert store.issue("svc", "wrong") is None
    assert store.issue("other", "right") is None
    issued = store.issue("svc", "right")
    assert issued is not None
    assert issued.expires_in == 60.0
    assert store.check(issued.access_token) == "ok"
    clock.now += 59.9
    assert store.check(issued.access_token) == "ok"
    clock.now += 0.1
    assert store.check(issued.access_token) == "expired"


def test_revoke_and_expire() -> None:
    """Revoked tokens are refused as revoked; expire() ends issued tokens now; both count what they did."""
    store = TokenStore(["static-1", "static-2"], {"svc": "right"}, clock=Clock())
    issued = [store.issue("svc", "right") for _ in range(3)]
    tokens = [t.access_token for t in issued if t is not None]
    assert store.revoke("static-1") is True
    assert store.revoke("never-issued") is False
    assert store.check("static-1") == "revoked"
    assert store.expire(tokens[0]) == 1
    assert store.check(tokens[0]) == "expired"
    assert store.expire() == 3
    assert {store.check(t) for t in tokens} == {"expired"}
    assert store.revoke_all() == 5
    assert store.check("static-2") == "revoked"
    store.add_static("static-1")
    assert store.check("static-1") == "ok"


def test_no_secret_in_reprs() -> None:
    """Neither the store nor an issued token shows a token or a client secret in its repr."""
    store = TokenStore(["static-secret-token"], {"svc": "client-secret-value"})
    issued = store.issue("svc", "client-secret-value")
    assert issued is not None
    text = repr(store) + repr(issued)
    for secret in ("static-secret-token", "client-secret-value", issued.access_token):
        assert secret not in text
