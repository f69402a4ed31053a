"""Typed, frozen values: a live deployment, the flat view of it that diffs compare, and model versions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: The SDK's RID pattern; a RID that fails it is never sent. It ends in ``\Z``, not the SDK's ``$``, which
#: would let ``match`` accept a trailing newline.
RID_PATTERN = re.compile(r"^ri\.[a-z][a-z0-9-]*\.([a-z0-9][a-z0-9\-]*)?\.[a-z][a-z0-9-]*\.[a-zA-Z0-9._-]+\Z")

#: The states the API documents. Any other string is kept as sent and reported as unknown.
KNOWN_STATES: tuple[str, ...] = ("ACTIVE", "STARTING", "DEGRADED", "DISABLED", "FAILED")
UNKNOWN_STATE = "UNKNOWN"
#: States in which a deployment is expected to change soon: polled on the fast interval.
TRANSITIONAL_STATES = frozenset({"STARTING", "DEGRADED"})

#: A value in the flat view: scalars, or a sorted tuple of strings for lists such as ``sources``.
FieldValue = str | int | float | bool | tuple[str, ...]


def is_valid_rid(rid: str) -> bool:
    """Whether ``rid`` matches the SDK's RID pattern."""
    return RID_PATTERN.match(rid) is not None


@dataclass(frozen=True, slots=True)
class Delay:
    """A ``{value, unit}`` duration from ``scalingConfiguration``."""

    value: int
    unit: str


@dataclass(frozen=True, slots=True)
class ScalingConfiguration:
    """Autoscaling settings; every part is optional in the API."""

    scale_up_load_threshold: float | None = None
    scale_up_delay: Delay | None = None
    scale_down_delay: Delay | None = None


@dataclass(frozen=True, slots=True)
class Gpu:
    """GPU request: a count, and a type when one is pinned."""

    count: int
    type: str | None = None


@dataclass(frozen=True, slots=True)
class RuntimeConfiguration:
    """The compute configuration. ``environment`` holds (name, keyed digest) pairs, never values."""

    min_replicas: int
    max_replicas: int
    cpu: float | None = None
    memory: str | None = None
    memory_bytes: int | None = None
    gpu: Gpu | None = None
    thread_count: int | None = None
    scaling: ScalingConfiguration | None = None
    sources: tuple[str, ...] | None = None
    environment: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class LiveDeployment:
    """One observation of a live deployment, as decoded from the API."""

    rid: str
    model_rid: str
    model_version_rid: str
    runtime: RuntimeConfiguration
    state: str
    is_ready: bool
    branch: str | None = None

    @property
    def state_known(self) -> bool:
        return self.state in KNOWN_STATES

    @property
    def state_label(self) -> str:
        """The state as a bounded label: one of ``KNOWN_STATES`` or ``UNKNOWN``."""
        return self.state if self.state in KNOWN_STATES else UNKNOWN_STATE

    @property
    def in_transition(self) -> bool:
        return self.state in TRANSITIONAL_STATES or not self.state_known


@dataclass(frozen=True, slots=True)
class ModelVersionSource:
    """Where a model version was made: its ``type`` as sent, and the branch and repository when it says."""

    type: str
    branch: str | None = None
    repository_rid: str | None = None


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One version of a model, as a version listing describes it; ``created_time`` is a Unix timestamp."""

    rid: str
    created_time: float
    source: ModelVersionSource | None = None


def latest_version(versions: Iterable[ModelVersion]) -> ModelVersion | None:
    """The newest version: the greatest ``created_time`` (listings are in no documented order); None if empty.

    Versions created in the same instant are told apart by RID, so the answer never depends on the order.
    """
    return max(versions, key=lambda version: (version.created_time, version.rid), default=None)


def _delay_text(delay: Delay | None) -> str | None:
    return None if delay is None else f"{delay.value} {delay.unit}"


def compared_fields(snapshot: LiveDeployment) -> dict[str, FieldValue]:
    """The flat view of ``snapshot`` that diffs compare: API field path to value, absent fields left out.

    ``cpu`` is a float so that ``1`` and ``1.0`` compare equal; ``memory`` is compared in bytes when it
    parses; environment variables appear one path per name, valued by their keyed digest.
    """
    runtime = snapshot.runtime
    fields: dict[str, FieldValue] = {
        "status.state": snapshot.state,
        "status.isReady": snapshot.is_ready,
        "modelVersion.modelRid": snapshot.model_rid,
        "modelVersion.modelVersionRid": snapshot.model_version_rid,
        "runtimeConfiguration.minReplicas": runtime.min_replicas,
        "runtimeConfiguration.maxReplicas": runtime.max_replicas,
    }
    optional: dict[str, FieldValue | None] = {
        "branch": snapshot.branch,
        "runtimeConfiguration.cpu": runtime.cpu,
        "runtimeConfiguration.memory": (
            runtime.memory_bytes if runtime.memory_bytes is not None else runtime.memory
        ),
        "runtimeConfiguration.threadCount": runtime.thread_count,
        "runtimeConfiguration.sources": runtime.sources,
    }
    if runtime.gpu is not None:
        optional["runtimeConfiguration.gpu.count"] = runtime.gpu.count
        optional["runtimeConfiguration.gpu.type"] = runtime.gpu.type
    scaling = runtime.scaling
    if scaling is not None:
        prefix = "runtimeConfiguration.scalingConfiguration."
        optional[prefix + "scaleUpLoadThreshold"] = scaling.scale_up_load_threshold
        optional[prefix + "scaleUpDelay"] = _delay_text(scaling.scale_up_delay)
        optional[prefix + "scaleDownDelay"] = _delay_text(scaling.scale_down_delay)
    for path, value in optional.items():
        if value is not None:
            fields[path] = value
    if runtime.environment is not None:
        fields["runtimeConfiguration.environmentVariables"] = tuple(name for name, _ in runtime.environment)
        for name, digest in runtime.environment:
            fields[f"runtimeConfiguration.environmentVariables.{name}"] = digest
    return fields


def snapshot_to_json(snapshot: LiveDeployment) -> dict[str, Any]:
    """The snapshot in the API's own shape, with environment variable values replaced by digests."""
    runtime = snapshot.runtime
    config: dict[str, Any] = {"minReplicas": runtime.min_replicas, "maxReplicas": runtime.max_replicas}
    if runtime.cpu is not None:
        config["cpu"] = runtime.cpu
    if runtime.memory is not None:
        config["memory"] = runtime.memory
        config["memoryBytes"] = runtime.memory_bytes
    if runtime.gpu is not None:
        config["gpu"] = {"count": runtime.gpu.count, "type": runtime.gpu.type}
    if runtime.thread_count is not None:
        config["threadCount"] = runtime.thread_count
    if runtime.scaling is not None:
        config["scalingConfiguration"] = {
            "scaleUpLoadThreshold": runtime.scaling.scale_up_load_threshold,
            "scaleUpDelay": _delay_text(runtime.scaling.scale_up_delay),
            "scaleDownDelay": _delay_text(runtime.scaling.scale_down_delay),
        }
    if runtime.sources is not None:
        config["sources"] = list(runtime.sources)
    if runtime.environment is not None:
        config["environmentVariables"] = {name: digest for name, digest in runtime.environment}
    body: dict[str, Any] = {
        "rid": snapshot.rid,
        "modelVersion": {"modelRid": snapshot.model_rid, "modelVersionRid": snapshot.model_version_rid},
        "runtimeConfiguration": config,
        "status": {"state": snapshot.state, "isReady": snapshot.is_ready, "known": snapshot.state_known},
    }
    if snapshot.branch is not None:
        body["branch"] = snapshot.branch
    return body
