"""Tests for monitor.simulator.fleet: determinism, the payload mix, life at the configured rates, control,
model versions and their rollouts."""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from monitor.decode import parse_rfc3339
from monitor.model import RID_PATTERN
from monitor.simulator.fleet import DEFAULT_EPOCH, DEFAULT_RATES, MAX_SIZE, STATES, Fleet, Rates, Rollouts

DEPLOYMENT_PREFIX = "ri.foundry-ml-live.main.live-deployment."
MODEL_PREFIX = "ri.models.main.model."
OPTIONAL_RUNTIME = ("cpu", "memory", "gpu", "threadCount", "scalingConfiguration")


def docs(fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {rid: doc for rid in fleet.rids if (doc := fleet.get_json(rid)) is not None}


def states(fleet: Fleet) -> dict[str, tuple[str, bool]]:
    return {rid: (doc["status"]["state"], doc["status"]["isReady"]) for rid, doc in docs(fleet).items()}


def test_same_seed_builds_the_same_fleet() -> None:
    """Two fleets of one seed have the same RIDs, models and payload bytes; another seed differs."""
    first, second = Fleet(300, seed=5), Fleet(300, seed=5)
    assert first.rids == second.rids
    assert first.models == second.models
    assert [first.body(rid) for rid in first.rids] == [second.body(rid) for rid in second.rids]
    assert set(Fleet(300, seed=6).rids).isdisjoint(first.rids)


def test_same_seed_lives_the_same_life() -> None:
    """With the same seed and steps, two fleets log the same changes and end in the same payloads."""
    first, second = (
        Fleet(500, seed=3, rates=DEFAULT_RATES.scaled(20)),
        Fleet(500, seed=3, rates=DEFAULT_RATES.scaled(20)),
    )
    for _ in range(20):
        first.step(1.0)
        second.step(1.0)
    assert first.changes() == second.changes()
    assert len(first.changes()) > 50
    assert docs(first) == docs(second)


def test_life_never_changes_what_the_fleet_was_built_as() -> None:
    """Stepping does not consume the build stream: ``add`` after life gives the RID it gives without."""
    lived = Fleet(100, seed=9, rates=DEFAULT_RATES.scaled(50))
    lived.step(10.0)
    assert lived.add() == Fleet(100, seed=9).add()


def test_rids_are_valid_unique_and_grouped_into_models() -> None:
    """RIDs pass the SDK pattern, carry version-4 UUIDs, are unique, and models hold about ten each."""
    fleet = Fleet(2000, seed=1)
    assert len(set(fleet.rids)) == 2000
    for rid in fleet.rids:
        assert RID_PATTERN.match(rid)
        assert rid.startswith(DEPLOYMENT_PREFIX)
        assert uuid.UUID(rid.removeprefix(DEPLOYMENT_PREFIX)).version == 4
    for model in fleet.models:
        assert RID_PATTERN.match(model)
        assert model.startswith(MODEL_PREFIX)
    assert 5 <= 2000 / len(fleet.models) <= 15
    per_model = Counter(fleet.model_of(rid) for rid in fleet.rids)
    assert sum(per_model.values()) == 2000
    for rid, doc in docs(fleet).items():
        assert doc["rid"] == rid
        assert doc["modelVersion"]["modelRid"] == fleet.model_of(rid)


def test_fleet_mixes_every_shape_and_state() -> None:
    """The payloads mix both API shapes, every state, branches, min 0 replicas and each optional field."""
    everything = list(docs(Fleet(2000, seed=1)).values())
    runtimes = [doc["runtimeConfiguration"] for doc in everything]
    full = [r for r in runtimes if "sources" in r and "environmentVariables" in r]
    docs_shaped = [r for r in runtimes if "sources" not in r and "environmentVariables" not in r]
    assert len(full) + len(docs_shaped) == len(runtimes)
    assert 0.05 < len(docs_shaped) / len(runtimes) < 0.3
    assert {doc["status"]["state"] for doc in everything} == set(STATES)
    assert Counter(doc.get("branch") for doc in everything).keys() == {"master", "staging", None}
    assert any(r["minReplicas"] == 0 for r in runtimes)
    for name in OPTIONAL_RUNTIME:
        present = sum(name in r for r in runtimes)
        assert 0 < present < len(runtimes), name
    assert {type(r["cpu"]) for r in runtimes if "cpu" in r} == {int, float}
    assert any("type" not in r["gpu"] for r in runtimes if "gpu" in r)
    secrets = [
        value for r in full for name, value in r["environmentVariables"].items() if name != "LOG_LEVEL"
    ]
    assert secrets
    assert all(value.startswith("sim-secret-") for value in secrets)
    scaled_to_zero = [
        doc
        for doc in everything
        if doc["runtimeConfiguration"]["minReplicas"] == 0 and doc["status"]["state"] == "ACTIVE"
    ]
    assert {doc["status"]["isReady"] for doc in scaled_to_zero} == {True, False}


def test_static_fleet_never_changes() -> None:
    """With every rate zero, however long it lives, no deployment changes and time still advances."""
    fleet = Fleet(1000, seed=2, rates=Rates())
    before = {rid: fleet.body(rid) for rid in fleet.rids}
    for _ in range(100):
        assert fleet.step(3600.0) == 0
    assert fleet.changes() == []
    assert fleet.now == pytest.approx(360_000.0)
    assert {rid: fleet.body(rid) for rid in fleet.rids} == before
    assert all(fleet.version(rid) == 0 for rid in fleet.rids)


# (rate, eligible (state, ready) -> bool, the status after the transition or None to compute it)
Eligible = Callable[[str, bool, dict[str, Any]], bool]
TRANSITIONS: dict[str, tuple[Eligible, Callable[[str, bool], tuple[str, bool]]]] = {
    "start": (lambda s, r, d: s == "STARTING", lambda s, r: ("ACTIVE", True)),
    "degrade": (lambda s, r, d: s == "ACTIVE", lambda s, r: ("DEGRADED", True)),
    "recover": (lambda s, r, d: s == "DEGRADED", lambda s, r: ("ACTIVE", True)),
    "fail": (lambda s, r, d: s in ("ACTIVE", "DEGRADED"), lambda s, r: ("FAILED", False)),
    "restart": (lambda s, r, d: s == "FAILED", lambda s, r: ("STARTING", False)),
    "disable": (lambda s, r, d: s != "DISABLED", lambda s, r: ("DISABLED", False)),
    "enable": (lambda s, r, d: s == "DISABLED", lambda s, r: ("STARTING", False)),
    "scale": (
        lambda s, r, d: s == "ACTIVE" and d["runtimeConfiguration"]["minReplicas"] == 0,
        lambda s, r: ("ACTIVE", not r),
    ),
}


@pytest.mark.parametrize("rate", sorted(TRANSITIONS))
def test_each_status_transition_happens_at_its_rate(rate: str) -> None:
    """One step moves about rate*dt of the eligible deployments, each to the transition's status, and no other."""
    fleet = Fleet(6000, seed=11, rates=Rates(**{rate: 0.25}))
    eligible_of, after_of = TRANSITIONS[rate]
    before = docs(fleet)
    eligible = {
        rid
        for rid, doc in before.items()
        if eligible_of(doc["status"]["state"], doc["status"]["isReady"], doc)
    }
    applied = fleet.step(1.0)
    changed = {change.rid for change in fleet.changes()}
    assert applied == len(changed)
    assert changed <= eligible
    now = states(fleet)
    for rid in changed:
        old = before[rid]["status"]
        assert now[rid] == after_of(old["state"], old["isReady"])
    # A binomial draw: within five standard deviations of its mean.
    mean, sd = len(eligible) * 0.25, math.sqrt(len(eligible) * 0.25 * 0.75)
    assert len(eligible) > 100
    assert abs(len(changed) - mean) < 5 * sd


def test_large_draws_keep_the_rate() -> None:
    """A draw with thousands of expected events (the normal approximation) still matches the rate."""
    fleet = Fleet(30_000, seed=4, rates=Rates(degrade=0.2))
    active = sum(1 for state, _ in states(fleet).values() if state == "ACTIVE")
    changed = fleet.step(1.0)
    mean = active * 0.2
    assert mean > 1000
    assert abs(changed - mean) < 5 * math.sqrt(mean * 0.8)


def test_rates_are_per_second() -> None:
    """Ten steps of 0.1 s move about as many deployments as one step of 1 s."""
    counts = []
    for dt, steps in ((1.0, 1), (0.1, 10)):
        fleet = Fleet(20_000, seed=8, rates=Rates(disable=0.05))
        counts.append(sum(fleet.step(dt) for _ in range(steps)))
    expected = 20_000 * 0.94 * 0.05
    for count in counts:
        assert abs(count - expected) < 6 * math.sqrt(expected)


def test_reconfigure_delete_and_recreate_in_life() -> None:
    """Life reconfigures replicas, cpu, memory or model version, deletes (404) and brings back as STARTING."""
    fleet = Fleet(3000, seed=12, rates=Rates(reconfigure=0.3))
    before = docs(fleet)
    fleet.step(1.0)
    paths = Counter(path for change in fleet.changes() for path in change.fields)
    assert paths["runtimeConfiguration.minReplicas"] or paths["runtimeConfiguration.maxReplicas"]
    assert paths["runtimeConfiguration.cpu"]
    assert paths["runtimeConfiguration.memory"]
    assert paths["modelVersion.modelVersionRid"]
    changed = {c.rid for c in fleet.changes()}
    assert 0.2 * 3000 < len(changed) < 0.4 * 3000
    assert all(before[rid] != fleet.get_json(rid) for rid in changed)

    fleet.rates = Rates(delete=0.3)
    fleet.step(1.0)
    gone = fleet.deleted_rids
    assert 0.2 * 3000 < len(gone) < 0.4 * 3000
    assert all(fleet.get_json(rid) is None and fleet.body(rid) is None for rid in gone)
    assert fleet.size == 3000 - len(gone)

    fleet.rates = Rates(recreate=1.0)
    fleet.step(1.0)
    assert fleet.deleted_rids == ()
    now = states(fleet)
    assert all(now[rid] == ("STARTING", False) for rid in gone)


def test_scaling_up_from_min_zero_makes_it_ready() -> None:
    """When life raises minReplicas of an ACTIVE deployment that sat at zero replicas, it is ready again."""
    fleet = Fleet(5000, seed=13, rates=Rates(reconfigure=1.0))
    at_zero = [
        rid for rid, doc in docs(fleet).items() if doc["status"] == {"state": "ACTIVE", "isReady": False}
    ]
    fleet.step(1.0)
    for rid in at_zero:
        doc = fleet.get_json(rid)
        assert doc is not None
        if doc["runtimeConfiguration"]["minReplicas"] > 0:
            assert doc["status"]["isReady"] is True


def test_step_costs_in_proportion_to_events_not_size() -> None:
    """On the largest fleet, a step with rare events touches only the drawn deployments."""
    fleet = Fleet(MAX_SIZE, seed=1, rates=Rates(degrade=1e-4))
    applied = fleet.step(1.0)
    assert applied == len(fleet.changes()) < 50
    assert sum(1 for rid in fleet.rids if fleet.version(rid)) == applied
    assert len(set(fleet.rids)) == MAX_SIZE


def test_set_status_records_what_changed() -> None:
    """set_status bumps the version, logs the changed paths and drops the cached bytes; a no-op logs nothing."""
    fleet = Fleet(20, seed=1)
    rid = fleet.rids[0]
    cached = fleet.body(rid)
    assert fleet.body(rid) is cached
    change = fleet.set_status(rid, "HIBERNATING", False)
    assert change is not None
    assert change.rid == rid
    assert change.kind == "updated"
    assert change.version == fleet.version(rid) == 1
    assert "status.state" in change.fields
    assert fleet.body(rid) is not cached
    assert json.loads(fleet.body(rid) or b"")["status"]["state"] == "HIBERNATING"
    assert fleet.set_status(rid, "HIBERNATING", False) is None
    assert fleet.version(rid) == 1
    assert fleet.state_counts()["HIBERNATING"] == 1


def test_reconfigure_sets_and_removes_fields() -> None:
    """reconfigure sets fields by API name, removes optional ones with None, and refuses what it cannot do."""
    fleet = Fleet(20, seed=1)
    rid = fleet.rids[0]
    version_rid = "ri.models.main.model-version.00000000-0000-4000-8000-000000000009"
    change = fleet.reconfigure(
        rid, minReplicas=3, maxReplicas=6, memory="2GiB", modelVersionRid=version_rid, branch=None, cpu=None
    )
    assert change is not None
    assert set(change.fields) >= {
        "runtimeConfiguration.minReplicas",
        "runtimeConfiguration.maxReplicas",
        "modelVersion.modelVersionRid",
    }
    doc = fleet.get_json(rid)
    assert doc is not None
    assert doc["runtimeConfiguration"]["minReplicas"] == 3
    assert doc["runtimeConfiguration"]["memory"] == "2GiB"
    assert doc["modelVersion"]["modelVersionRid"] == version_rid
    assert "branch" not in doc
    assert "cpu" not in doc["runtimeConfiguration"]
    assert fleet.reconfigure(rid, minReplicas=3) is None
    # A change of type alone is a change: 3 -> "3" is what a wrong-typed payload needs.
    typed = fleet.reconfigure(rid, minReplicas="3")
    assert typed is not None
    assert typed.fields == ("runtimeConfiguration.minReplicas",)
    with pytest.raises(ValueError, match="not reconfigurable"):
        fleet.reconfigure(rid, replicas=2)
    with pytest.raises(ValueError, match="cannot be removed"):
        fleet.reconfigure(rid, minReplicas=None)
    with pytest.raises(KeyError):
        fleet.reconfigure("ri.foundry-ml-live.main.live-deployment.unknown", minReplicas=1)


def test_environment_changes_are_logged_per_name() -> None:
    """A changed environment variable shows up as its own path, so a test can tell which one changed."""
    fleet = Fleet(20, seed=1)
    rid = fleet.rids[0]
    fleet.reconfigure(rid, environmentVariables={"API_KEY": "one"})
    change = fleet.reconfigure(rid, environmentVariables={"API_KEY": "two"})
    assert change is not None
    assert change.fields == ("runtimeConfiguration.environmentVariables.API_KEY",)


def test_delete_restore_and_add() -> None:
    """Deleted deployments vanish from reads and lists until restored; added ones join a model's list."""
    fleet = Fleet(50, seed=1)
    model = fleet.models[0]
    listed = fleet.deployments_of(model)
    rid = listed[0]
    deleted = fleet.delete(rid)
    assert deleted is not None
    assert deleted.kind == "deleted"
    assert fleet.delete(rid) is None
    assert fleet.get_json(rid) is None
    assert fleet.body(rid) is None
    assert rid in fleet
    assert fleet.is_deleted(rid)
    assert rid not in fleet.rids
    assert rid not in fleet.deployments_of(model)
    restored = fleet.restore(rid)
    assert restored is not None
    assert restored.kind == "restored"
    assert fleet.restore(rid) is None
    assert fleet.deployments_of(model) == listed

    added = fleet.add(model_rid=model, branch="staging", state="ACTIVE", is_ready=True)
    assert added in fleet.deployments_of(model, "staging")
    assert fleet.get_json(added) is not None
    assert fleet.changes()[-1].kind == "added"
    alone = fleet.add(full=False, branch=None)
    alone_doc = fleet.get_json(alone)
    assert alone_doc is not None
    assert "sources" not in alone_doc["runtimeConfiguration"]
    assert fleet.model_of(alone) in fleet.models
    assert fleet.deployments_of(fleet.model_of(alone)) == ()
    with pytest.raises(KeyError):
        fleet.add(model_rid="ri.models.main.model.unknown")


def test_list_filters_by_branch_and_leaves_out_unbranched() -> None:
    """list_body holds the model's branch-tracking deployments, of one branch when asked; unknown model None."""
    fleet = Fleet(400, seed=1)
    for model in fleet.models:
        body = fleet.list_body(model)
        assert body is not None
        listed = [doc["rid"] for doc in json.loads(body)["data"]]
        own = [rid for rid in fleet.rids if fleet.model_of(rid) == model]
        branched = [rid for rid in own if "branch" in (fleet.get_json(rid) or {})]
        assert listed == branched == list(fleet.deployments_of(model))
        master = json.loads(fleet.list_body(model, "master") or b"")["data"]
        assert all(doc["branch"] == "master" for doc in master)
        assert len(master) == sum(1 for rid in own if (fleet.get_json(rid) or {}).get("branch") == "master")
    assert fleet.list_body("ri.models.main.model.unknown") is None


def test_changes_since_and_bounded_log() -> None:
    """changes(since) returns only newer entries, and the log keeps only the newest ones."""
    fleet = Fleet(10, seed=1, changelog_size=5)
    rid = fleet.rids[0]
    for i in range(8):
        fleet.set_status(rid, f"STATE{i}", False)
    assert [c.seq for c in fleet.changes()] == [4, 5, 6, 7, 8]
    assert [c.seq for c in fleet.changes(since=6)] == [7, 8]
    assert fleet.last_seq == 8


def test_rates_validation_and_helpers() -> None:
    """Rates refuse negatives, unknown names and non-numbers; scaled multiplies; all zero is static."""
    with pytest.raises(ValueError, match="finite"):
        Rates(fail=-1.0)
    with pytest.raises(ValueError, match="unknown rates"):
        Rates.from_mapping({"explode": 1.0})
    with pytest.raises(TypeError):
        Rates.from_mapping({"fail": "often"})
    assert Rates().is_static
    assert not DEFAULT_RATES.is_static
    assert DEFAULT_RATES.scaled(2).degrade == pytest.approx(DEFAULT_RATES.degrade * 2)
    assert DEFAULT_RATES.scaled(0).is_static
    assert Rates.from_mapping({"fail": 1}) == Rates(fail=1.0)


def test_fleet_size_bounds() -> None:
    """A fleet has between 0 and 100,000 deployments; a step needs a finite, non-negative dt."""
    with pytest.raises(ValueError, match="between"):
        Fleet(MAX_SIZE + 1)
    with pytest.raises(ValueError, match="between"):
        Fleet(-1)
    empty = Fleet(0)
    assert empty.rids == ()
    assert empty.models == ()
    with pytest.raises(ValueError, match="dt"):
        empty.step(-1.0)


# -- model versions and rollouts ------------------------------------------------------------------------

VERSION_FIELD = "modelVersion.modelVersionRid"


def version_of(fleet: Fleet, rid: str) -> str:
    doc = fleet.get_json(rid)
    assert doc is not None
    return str(doc["modelVersion"]["modelVersionRid"])


def direct(fleet: Fleet, model: str, branch: str) -> list[str]:
    return [rid for rid in fleet.deployments_of(model, branch)]


def pinned(fleet: Fleet, model: str) -> list[str]:
    return [
        rid
        for rid in fleet.rids
        if fleet.model_of(rid) == model and "branch" not in (fleet.get_json(rid) or {})
    ]


def model_with(fleet: Fleet, *, branch: str = "master", pins: bool = False) -> str:
    """A model with at least two direct deployments of ``branch`` (and a pinned one, with ``pins``)."""
    return next(
        m for m in fleet.models if len(direct(fleet, m, branch)) >= 2 and (not pins or pinned(fleet, m))
    )


def test_direct_deployments_run_their_branch_s_newest_version() -> None:
    """Every tracked branch has a history of valid version RIDs with strictly increasing createdTime (RFC
    3339, before the epoch at build); each direct deployment runs its branch's newest, a pinned one master's."""
    fleet = Fleet(600, seed=4)
    for model in fleet.models:
        for branch in fleet.branches_of(model):
            versions = fleet.versions(model, branch)
            assert versions
            assert fleet.latest_version(model, branch) == versions[-1]
            times = [parse_rfc3339(v.created_time) for v in versions]
            assert all(t is not None and t < DEFAULT_EPOCH for t in times)
            assert times == sorted(set(times))
            assert all(RID_PATTERN.match(v.rid) and v.branch == branch and not v.stuck for v in versions)
            for rid in direct(fleet, model, branch):
                assert version_of(fleet, rid) == versions[-1].rid
        for rid in pinned(fleet, model):
            assert version_of(fleet, rid) == fleet.versions(model, "master")[-1].rid
    assert {len(fleet.versions(m, b)) for m in fleet.models for b in fleet.branches_of(m)} == {1, 2, 3}
    assert fleet.versions(fleet.models[0], "no-such-branch") == ()
    assert fleet.latest_version(fleet.models[0], "no-such-branch") is None
    with pytest.raises(KeyError):
        fleet.versions("ri.models.main.model.unknown", "master")


def test_a_published_version_rolls_out_after_the_delay_to_its_branch_only() -> None:
    """A version published by hand reaches every direct deployment of its branch at the first step at or
    after the delay, as one logged modelVersionRid change each; other branches and pinned ones stay."""
    fleet = Fleet(600, seed=4)
    model = model_with(fleet, pins=True)
    others = {rid: version_of(fleet, rid) for rid in fleet.rids if rid not in direct(fleet, model, "master")}
    version = fleet.publish_version(model, "master", delay=10.0)
    assert fleet.latest_version(model, "master") == version
    assert (version.at, version.stuck, fleet.pending_rollouts) == (0.0, False, 1)
    assert parse_rfc3339(version.created_time) == pytest.approx(DEFAULT_EPOCH)
    assert fleet.step(9.0) == 0
    assert fleet.changes() == []
    applied = fleet.step(1.0)
    rolled = direct(fleet, model, "master")
    assert applied == len(rolled) >= 2
    assert all(version_of(fleet, rid) == version.rid for rid in rolled)
    assert [(c.rid, c.fields, c.at) for c in fleet.changes()] == [
        (rid, (VERSION_FIELD,), 10.0) for rid in rolled
    ]
    assert {rid: version_of(fleet, rid) for rid in others} == others
    assert fleet.pending_rollouts == 0


def test_a_stuck_rollout_never_happens_and_a_later_one_passes_it() -> None:
    """A stuck version stays the branch's newest without ever reaching a deployment; a newer, unstuck one
    is rolled out over it."""
    fleet = Fleet(600, seed=4, rates=Rates())
    model = model_with(fleet)
    before = version_of(fleet, direct(fleet, model, "master")[0])
    stuck = fleet.publish_version(model, "master", stuck=True, delay=0.0)
    assert fleet.pending_rollouts == 0
    for _ in range(10):
        fleet.step(86_400.0)
    assert fleet.latest_version(model, "master") == stuck
    assert {version_of(fleet, rid) for rid in direct(fleet, model, "master")} == {before}
    later = fleet.publish_version(model, "master", delay=0.0)
    assert parse_rfc3339(later.created_time) > parse_rfc3339(stuck.created_time)  # type: ignore[operator]
    fleet.step(0.0)
    assert {version_of(fleet, rid) for rid in direct(fleet, model, "master")} == {later.rid}


def test_an_older_rollout_never_undoes_a_newer_one() -> None:
    """When a newer version rolls out first, the older one's rollout, due later, leaves the deployments on the
    newer; versions published in the same instant still get distinct, increasing createdTime."""
    fleet = Fleet(600, seed=4)
    model = model_with(fleet)
    older = fleet.publish_version(model, "master", delay=100.0)
    newer = fleet.publish_version(model, "master", delay=1.0)
    assert parse_rfc3339(newer.created_time) == pytest.approx(parse_rfc3339(older.created_time) + 0.001)  # type: ignore[operator]
    fleet.step(1.0)
    fleet.step(100.0)
    assert {version_of(fleet, rid) for rid in direct(fleet, model, "master")} == {newer.rid}
    assert len(fleet.changes()) == len(direct(fleet, model, "master"))


def test_life_publishes_at_the_rate_and_rolls_out_unless_stuck() -> None:
    """With the publish rate, a step publishes about rate*dt per tracked branch; with every rollout stuck
    nothing moves, with none stuck every published branch's deployments end on its newest version."""
    fleet = Fleet(6000, seed=14, rates=Rates(publish=0.25), rollouts=Rollouts(delay=5.0, stuck=1.0))
    branches = [(m, b) for m in fleet.models for b in fleet.branches_of(m)]
    before = {key: fleet.latest_version(*key) for key in branches}
    fleet.step(1.0)
    published = [key for key in branches if fleet.latest_version(*key) != before[key]]
    expected = 0.25 * len(branches)
    assert abs(len(published) - expected) < 6 * math.sqrt(expected)
    assert all(v.stuck for key in published if (v := fleet.latest_version(*key)) is not None)
    fleet.rates = Rates()
    fleet.step(100.0)
    assert fleet.changes() == []

    fleet.rollouts = Rollouts(delay=5.0, stuck=0.0)
    fleet.rates = Rates(publish=0.25)
    fleet.step(1.0)
    fleet.rates = Rates()
    fleet.step(5.0)
    moved = {change.rid for change in fleet.changes()}
    assert moved
    for model, branch in branches:
        newest = fleet.latest_version(model, branch)
        assert newest is not None
        for rid in direct(fleet, model, branch):
            assert (version_of(fleet, rid) == newest.rid) is (not newest.stuck)
    assert all(fleet.get_json(rid) is not None and "branch" in (fleet.get_json(rid) or {}) for rid in moved)


def test_same_seed_publishes_the_same_versions() -> None:
    """Two fleets of one seed, rates and steps publish the same versions and roll them out identically."""
    rates = Rates(publish=0.05, degrade=0.01)
    first, second = (
        Fleet(800, seed=6, rates=rates, rollouts=Rollouts(delay=3.0, stuck=0.3)) for _ in range(2)
    )
    for _ in range(30):
        first.step(1.0)
        second.step(1.0)
    assert first.changes() == second.changes()
    for model in first.models:
        for branch in first.branches_of(model):
            assert first.versions(model, branch) == second.versions(model, branch)
    assert any(c.fields == (VERSION_FIELD,) for c in first.changes())


def test_a_zero_publish_rate_leaves_the_life_as_it_was() -> None:
    """Publishing draws come last in a step: the same life with publish 0 logs exactly what it logs without
    the field, and publishing never changes which deployments a seed builds."""
    assert Fleet(300, seed=5, rates=Rates(publish=0.2)).rids == Fleet(300, seed=5).rids
    plain, zero = (
        Fleet(500, seed=3, rates=DEFAULT_RATES.scaled(20)),
        Fleet(500, seed=3, rates=DEFAULT_RATES.scaled(20)),
    )
    zero.rates = Rates(**{**DEFAULT_RATES.scaled(20).as_dict(), "publish": 0.0})
    plain.rates = Rates(**{**DEFAULT_RATES.scaled(20).as_dict(), "publish": 0.0})
    for _ in range(10):
        plain.step(1.0)
        zero.step(1.0)
    assert plain.changes() == zero.changes()


def test_version_pages_and_unsupported_sources() -> None:
    """version_bodies pages the history oldest first with the offset of the rest, refuses an offset past
    the end, is empty for a branch without versions; a model can be marked as an unsupported source."""
    fleet = Fleet(100, seed=2)
    model = fleet.models[0]
    for _ in range(4):
        fleet.publish_version(model, "master")
    versions = fleet.versions(model, "master")
    first = fleet.version_bodies(model, "master", offset=0, limit=3)
    assert first is not None
    parts, rest = first
    assert [json.loads(p)["rid"] for p in parts] == [v.rid for v in versions[:3]]
    assert rest == 3
    tail = fleet.version_bodies(model, "master", offset=3, limit=100)
    assert tail is not None
    assert [json.loads(p)["rid"] for p in tail[0]] == [v.rid for v in versions[3:]]
    assert tail[1] is None
    doc = json.loads(tail[0][-1])
    assert doc["createdTime"] == versions[-1].created_time
    assert doc["source"]["branch"] == "master"
    assert set(doc) >= {"modelApi", "condaRequirements", "backingRepositories"}
    assert fleet.version_bodies(model, "master", offset=len(versions), limit=1) is None
    assert fleet.version_bodies(model, "nothing-here", offset=0, limit=5) == ((), None)
    with pytest.raises(KeyError):
        fleet.version_bodies("ri.models.main.model.unknown", "master", offset=0, limit=1)
    assert fleet.source_supported(model)
    fleet.set_unsupported_source(model)
    assert not fleet.source_supported(model)
    fleet.set_unsupported_source(model, False)
    assert fleet.source_supported(model)
    with pytest.raises(KeyError):
        fleet.publish_version("ri.models.main.model.unknown")
    with pytest.raises(ValueError, match="delay"):
        fleet.publish_version(model, delay=-1.0)


def test_a_new_branch_gets_a_history_when_its_first_deployment_comes() -> None:
    """Adding a deployment on a branch a model did not have gives the branch a history, the deployment its
    newest version; publishing to a branch without deployments rolls out to nobody."""
    fleet = Fleet(50, seed=2)
    model = fleet.models[0]
    rid = fleet.add(model_rid=model, branch="feature")
    newest = fleet.latest_version(model, "feature")
    assert newest is not None
    assert version_of(fleet, rid) == newest.rid
    assert "feature" in fleet.branches_of(model)
    fleet.publish_version(model, "lonely", delay=0.0)
    seq = fleet.last_seq
    fleet.step(0.0)
    assert fleet.last_seq == seq


def test_rollouts_validation() -> None:
    """Rollouts refuse a negative or infinite delay and a stuck share outside 0..1; publish is a rate."""
    with pytest.raises(ValueError, match="delay"):
        Rollouts(delay=-1.0)
    with pytest.raises(ValueError, match="delay"):
        Rollouts(delay=math.inf)
    with pytest.raises(ValueError, match="probability"):
        Rollouts(stuck=1.5)
    assert Rates.from_mapping({"publish": 1}) == Rates(publish=1.0)
    assert not Rates(publish=0.1).is_static
    assert DEFAULT_RATES.publish > 0
    with pytest.raises(ValueError, match="epoch"):
        Fleet(1, epoch=math.nan)
