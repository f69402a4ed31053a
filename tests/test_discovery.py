"""Tests for monitor.discovery with a hand-written fake lister and follower."""

from __future__ import annotations

from monitor.discovery import Discovery
from monitor.errors import LiveDeploymentNotFound, ServerError
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.tracker import Target

MODEL = "ri.models.main.model.00000000-0000-4000-8000-000000000000"


def rid(i: int) -> str:
    return f"ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{i:012d}"


def snap(i: int) -> LiveDeployment:
    return LiveDeployment(
        rid(i), MODEL, "ri.models.main.model-version.1", RuntimeConfiguration(1, 1), "ACTIVE", True
    )


class FakeLister:
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


class FakeFollower:
    def __init__(self) -> None:
        self.added: list[Target] = []
        self.removed: list[str] = []

    def add(self, target: Target) -> None:
        self.added.append(target)

    def remove(self, rid: str) -> None:
        self.removed.append(rid)


def make(pinned: set[str] | None = None) -> tuple[Discovery, FakeLister, FakeFollower, ProcessMetrics]:
    lister, follower, metrics = FakeLister(), FakeFollower(), ProcessMetrics()
    discovery = Discovery(
        lister=lister,
        follower=follower,
        metrics=metrics,
        model_rid=MODEL,
        branch="master",
        labels=(("team", "risk"),),
        interval=60.0,
        pinned=(pinned or set()).__contains__,
    )
    return discovery, lister, follower, metrics


async def test_new_deployments_are_added_and_vanished_ones_removed() -> None:
    """Deployments appearing in the list are followed with the entry's labels; gone ones are removed."""
    discovery, lister, follower, _ = make()
    lister.answer = (snap(1), snap(2))
    assert await discovery.refresh()
    assert [t.rid for t in follower.added] == [rid(1), rid(2)]
    assert follower.added[0].labels == (("team", "risk"),)
    assert follower.added[0].origin == f"discover:{MODEL}@master"
    lister.answer = (snap(2), snap(3))
    assert await discovery.refresh()
    assert [t.rid for t in follower.added] == [rid(1), rid(2), rid(3)]
    assert follower.removed == [rid(1)]
    assert lister.calls[-1] == (MODEL, "master")


async def test_a_failed_list_changes_nothing() -> None:
    """A 5xx or a 404 from the list call neither adds nor removes, and is counted."""
    discovery, lister, follower, metrics = make()
    lister.answer = (snap(1),)
    await discovery.refresh()
    for error in (ServerError("x", status=500), LiveDeploymentNotFound("x", status=404)):
        lister.answer = error
        assert not await discovery.refresh()
    assert follower.removed == []
    assert discovery.followed == {rid(1)}
    value = metrics.registry.get_sample_value(
        "foundry_monitor_discovery_errors_total", {"error": "server_error"}
    )
    assert value == 1


async def test_statically_configured_deployments_are_left_alone() -> None:
    """A RID also named in the configuration is neither re-added nor removed by discovery."""
    discovery, lister, follower, _ = make(pinned={rid(1)})
    lister.answer = (snap(1), snap(2))
    await discovery.refresh()
    lister.answer = ()
    await discovery.refresh()
    assert [t.rid for t in follower.added] == [rid(2)]
    assert follower.removed == [rid(2)]
