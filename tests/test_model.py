"""Tests for monitor.model: RID checks, state labels, the flat compared view, the JSON form, latest versions."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from monitor.model import (
    KNOWN_STATES,
    RID_PATTERN,
    Delay,
    Gpu,
    LiveDeployment,
    ModelVersion,
    RuntimeConfiguration,
    ScalingConfiguration,
    compared_fields,
    is_valid_rid,
    latest_version,
    snapshot_to_json,
)

RID = "ri.foundry-ml-live.main.live-deployment.f351c142-0e4c-4b12-adc2-6e1539737ae9"
MODEL = "ri.models.main.model.f351c142-0e4c-4b12-adc2-6e1539737ae9"
VERSION = "ri.models.main.model-version.adf94926-c3ac-41ea-beb2-4946699d08ee"


def snap(*, state: str = "ACTIVE", branch: str | None = "master", **runtime: object) -> LiveDeployment:
    config = RuntimeConfiguration(**{"min_replicas": 1, "max_replicas": 3, **runtime})  # type: ignore[arg-type]
    return LiveDeployment(RID, MODEL, VERSION, config, state, True, branch)


@pytest.mark.parametrize(
    "rid",
    [
        RID,
        MODEL,
        VERSION,
        "ri.magritte..source.6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
        "ri.a.b.c.D_e.f-G",
        "ri.a1-b.main.x9.0",
    ],
)
def test_valid_rids(rid: str) -> None:
    """RIDs of the SDK's shape pass, including an empty instance segment."""
    assert is_valid_rid(rid)


@pytest.mark.parametrize(
    "rid",
    [
        "",
        "ri",
        "ri.a.b.c",
        "ri.a.b.c.",
        "RI.a.b.c.d",
        "ri.A.b.c.d",
        "ri.1a.b.c.d",
        "ri.a.-b.c.d",
        "ri.a.b.1c.d",
        "ri.a.b.c.d/e",
        "ri.a.b.c.d e",
        "ri.a.b.c.d?x=1",
        "ri.a.b.c.d%2F",
        "ri.a.b.c.d\n",
        " ri.a.b.c.d",
        "../../etc/passwd",
    ],
)
def test_invalid_rids(rid: str) -> None:
    """Anything off the SDK's pattern, including path and query characters and a trailing newline, fails."""
    assert not is_valid_rid(rid)


def test_the_pattern_itself_refuses_a_trailing_newline() -> None:
    """Other modules call ``RID_PATTERN.match`` directly; with a ``$`` anchor that would accept ``rid\\n``."""
    assert RID_PATTERN.match(RID) is not None
    assert RID_PATTERN.match(RID + "\n") is None


@pytest.mark.parametrize("state", KNOWN_STATES)
def test_known_states_are_their_own_label(state: str) -> None:
    """A documented state is known and is its own metric label."""
    snapshot = snap(state=state)
    assert snapshot.state_known
    assert snapshot.state_label == state
    assert snapshot.in_transition is (state in ("STARTING", "DEGRADED"))


@pytest.mark.parametrize("state", ["RESTARTING", "active", "", "ACTIVE "])
def test_unknown_states_are_kept_and_labelled_unknown(state: str) -> None:
    """An undocumented state is kept verbatim, labelled UNKNOWN and polled as in transition."""
    snapshot = snap(state=state)
    assert snapshot.state == state
    assert not snapshot.state_known
    assert snapshot.state_label == "UNKNOWN"
    assert snapshot.in_transition


def test_compared_fields_leave_absent_fields_out() -> None:
    """A minimal snapshot flattens to the required fields only, plus the branch when there is one."""
    assert compared_fields(snap(branch=None)) == {
        "status.state": "ACTIVE",
        "status.isReady": True,
        "modelVersion.modelRid": MODEL,
        "modelVersion.modelVersionRid": VERSION,
        "runtimeConfiguration.minReplicas": 1,
        "runtimeConfiguration.maxReplicas": 3,
    }
    assert compared_fields(snap())["branch"] == "master"


def test_cpu_one_and_one_point_zero_compare_equal() -> None:
    """cpu 1 and 1.0 give equal flat views; 1 and 1.5 do not."""
    assert compared_fields(snap(cpu=1)) == compared_fields(snap(cpu=1.0))
    assert compared_fields(snap(cpu=1)) != compared_fields(snap(cpu=1.5))


def test_memory_compares_in_bytes_when_it_parses() -> None:
    """``256MiB`` and ``256Mi`` are the same memory; an unparseable quantity is compared as text."""
    a = snap(memory="256MiB", memory_bytes=256 << 20)
    b = snap(memory="256Mi", memory_bytes=256 << 20)
    assert compared_fields(a) == compared_fields(b)
    assert compared_fields(a)["runtimeConfiguration.memory"] == 256 << 20
    assert compared_fields(snap(memory="lots"))["runtimeConfiguration.memory"] == "lots"


def test_gpu_scaling_sources_and_environment_flatten_to_one_path_each() -> None:
    """Nested parts appear under their API paths; env vars as a name list plus one digest per name."""
    snapshot = snap(
        gpu=Gpu(1, "A10G"),
        thread_count=16,
        scaling=ScalingConfiguration(0.75, Delay(30, "SECONDS"), None),
        sources=("ri.a..b.1",),
        environment=(("A", "hmac-sha256:1"), ("B", "hmac-sha256:2")),
    )
    fields = compared_fields(snapshot)
    prefix = "runtimeConfiguration."
    assert fields[prefix + "gpu.count"] == 1
    assert fields[prefix + "gpu.type"] == "A10G"
    assert fields[prefix + "threadCount"] == 16
    assert fields[prefix + "scalingConfiguration.scaleUpLoadThreshold"] == 0.75
    assert fields[prefix + "scalingConfiguration.scaleUpDelay"] == "30 SECONDS"
    assert prefix + "scalingConfiguration.scaleDownDelay" not in fields
    assert fields[prefix + "sources"] == ("ri.a..b.1",)
    assert fields[prefix + "environmentVariables"] == ("A", "B")
    assert fields[prefix + "environmentVariables.A"] == "hmac-sha256:1"
    assert fields[prefix + "environmentVariables.B"] == "hmac-sha256:2"


def test_gpu_without_type_leaves_the_type_out() -> None:
    """A GPU with only a count has no type path."""
    fields = compared_fields(snap(gpu=Gpu(2)))
    assert fields["runtimeConfiguration.gpu.count"] == 2
    assert "runtimeConfiguration.gpu.type" not in fields


def test_snapshot_to_json_keeps_the_api_shape_and_is_serialisable() -> None:
    """The JSON form mirrors the API's field names, adds memoryBytes and known, and json.dumps accepts it."""
    snapshot = snap(
        cpu=2.5,
        memory="1GiB",
        memory_bytes=1 << 30,
        gpu=Gpu(1, "T4"),
        thread_count=8,
        scaling=ScalingConfiguration(None, None, Delay(10, "MINUTES")),
        sources=("ri.a..b.1",),
        environment=(("KEY", "hmac-sha256:abc"),),
    )
    body = snapshot_to_json(snapshot)
    assert body["rid"] == RID
    assert body["branch"] == "master"
    assert body["modelVersion"] == {"modelRid": MODEL, "modelVersionRid": VERSION}
    assert body["status"] == {"state": "ACTIVE", "isReady": True, "known": True}
    config = body["runtimeConfiguration"]
    assert config["cpu"] == 2.5
    assert (config["memory"], config["memoryBytes"]) == ("1GiB", 1 << 30)
    assert config["gpu"] == {"count": 1, "type": "T4"}
    assert config["scalingConfiguration"]["scaleDownDelay"] == "10 MINUTES"
    assert config["sources"] == ["ri.a..b.1"]
    assert config["environmentVariables"] == {"KEY": "hmac-sha256:abc"}
    json.dumps(body)


def test_snapshot_to_json_leaves_absent_parts_out() -> None:
    """Optional parts that were not sent are absent, not null; an unknown state is marked not known."""
    body = snapshot_to_json(snap(branch=None, state="NEW"))
    assert "branch" not in body
    assert body["runtimeConfiguration"] == {"minReplicas": 1, "maxReplicas": 3}
    assert body["status"]["known"] is False


def test_snapshots_are_frozen_and_slotted() -> None:
    """Snapshots are immutable values: no assignment, no stray attributes, equal by content and hashable."""
    snapshot = snap(sources=("a",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.state = "FAILED"  # type: ignore[misc]
    assert not hasattr(snapshot, "__dict__")
    assert snapshot == snap(sources=("a",))
    assert hash(snapshot) == hash(snap(sources=("a",)))


def test_latest_version_is_the_greatest_created_time_whatever_the_order() -> None:
    """The newest version is the one created last, in any listing order; a tie goes to the greater RID, the
    same way in every order; an empty listing has none."""
    base = "ri.models.main.model-version."
    old, new, other = (
        ModelVersion(base + "a", 100.0),
        ModelVersion(base + "b", 300.0),
        ModelVersion(base + "c", 200.0),
    )
    for order in itertools.permutations((old, new, other)):
        assert latest_version(order) is new
    twin = ModelVersion(base + "z", 300.0)
    assert latest_version([new, twin]) is twin
    assert latest_version([twin, new]) is twin
    assert latest_version(iter(())) is None
