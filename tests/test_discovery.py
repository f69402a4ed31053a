"""Tests for monitor.discovery with a hand-written fake lister and a recording claims port."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.config import DiscoverConfig
from monitor.discovery import Discovery, discover_origin
from monitor.errors import LiveDeploymentNotFound, ServerError
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.tracker import Target

MODEL = "ri.models.main.model.00000000-0000-4000-8000-00000000000a"


def rid(i: int) -> str:
    return f"ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{i:012d}"


def snap(i: int) -> LiveDeployment:
    return LiveDeployment(
        rid(i), MODEL, "ri.models.main.model-version.1", RuntimeConfiguration(1, 1), "ACTIVE", True
    )


class FakeLister:
    """Answers every list call with ``answer`` (or raises it), remembering the calls."""

    def __init__(self) -> None:
        self.answer: tuple[LiveDeployment, ...] | Exception = ()
        self.calls: list[tuple[str, str | None]] = []

    async def list_live_deployments(
        self, model_rid: str, branch: str | None = None
    ) -> tuple[LiveDeployment, ...]:
        self.calls.append((model_rid, branch))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class RecordingClaims:
    """Keeps every claim made, in order."""

    def __init__(self) -> None:
        self.claims: list[tuple[str, list[Target]]] = []

    def claim(self, origin: str, targets: Sequence[Target]) -> None:
        self.claims.append((origin, list(targets)))


def make() -> tuple[Discovery, FakeLister, RecordingClaims, ProcessMetrics]:
    lister, claims, metrics = FakeLister(), RecordingClaims(), ProcessMetrics()
    entry = DiscoverConfig(model_rid=MODEL, branch="master", labels={"team": "risk"}, interval=60.0)
    return Discovery(lister=lister, claims=claims, metrics=metrics, entry=entry), lister, claims, metrics


async def test_a_listing_claims_exactly_what_it_names_with_the_entrys_labels() -> None:
    """Each successful list claims the listed deployments (sorted by RID), labelled and with their origin."""
    discovery, lister, claims, _ = make()
    lister.answer = (snap(2), snap(1))
    assert await discovery.refresh()
    lister.answer = (snap(3),)
    assert await discovery.refresh()
    origin = f"discover:{MODEL}@master"
    assert discovery.origin == origin == discover_origin(MODEL, "master")
    assert [(o, [t.rid for t in targets]) for o, targets in claims.claims] == [
        (origin, [rid(1), rid(2)]),
        (origin, [rid(3)]),
    ]
    first = claims.claims[0][1][0]
    assert (first.name, first.labels, first.origin) == (rid(1), (("team", "risk"),), origin)
    assert lister.calls == [(MODEL, "master"), (MODEL, "master")]


async def test_a_failed_list_claims_nothing_and_is_counted() -> None:
    """A 5xx or a 404 from the list call makes no claim (so nothing is released) and counts its kind."""
    discovery, lister, claims, metrics = make()
    for error in (ServerError("x", status=500), LiveDeploymentNotFound("x", status=404)):
        lister.answer = error
        assert not await discovery.refresh()
    assert claims.claims == []
    value = metrics.registry.get_sample_value(
        "foundry_monitor_discovery_errors_total", {"error": "server_error"}
    )
    assert value == 1


def test_origins_name_the_model_and_branch() -> None:
    """A model without a branch and one with a branch are different origins."""
    assert discover_origin(MODEL, None) == f"discover:{MODEL}"
    assert discover_origin(MODEL, "dev") == f"discover:{MODEL}@dev"
