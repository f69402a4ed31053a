"""A seeded, deterministic, synchronous model of a fleet of live deployments and their life over time.

A ``Fleet`` of N deployments (0 to 100,000) is built from a seed: the same seed gives the same RIDs, models
and payloads. Deployments are grouped into models (about ten each) so that the list endpoint has something to
return; most follow branch ``master``, some ``staging``, some no branch (not listable, like Foundry's
non-direct deployments). Most payloads have the newest shape (``sources`` and ``environmentVariables``), some
the documentation's shape without them; optional fields (cpu, memory, gpu, threadCount,
scalingConfiguration, branch) are each left out of some.

``Fleet.step(dt)`` advances simulated time. Each transition in ``Rates`` is a per-second probability for
one eligible deployment; a step draws how many deployments make each transition (a binomial draw) and picks
them at random from an index of eligible deployments, so a step costs in proportion to the events, not the
fleet.

Every change bumps the deployment's ``version``, drops its cached JSON bytes and is appended to a bounded
change log (``changes()``), so tests can tell what changed and when.

Each (model, branch) that direct deployments track has a history of model versions, the newest being the
one they run; a pinned deployment (no branch) runs master's newest of when it was made, and never follows.
The ``publish`` rate publishes new versions; ``Rollouts`` says how they reach the branch's direct
deployments: their ``modelVersion.modelVersionRid`` changes at the first step ``delay`` seconds later,
unless the rollout is stuck (probability ``stuck``), and then never. ``publish_version`` does the same on
demand. Version RIDs and the build-time histories come from a stream of their own, so the deployments a
seed builds do not depend on them; ``createdTime`` is ``epoch`` plus simulated seconds, in whole
milliseconds, increasing per branch.
"""

from __future__ import annotations

import copy
import heapq
import json
import math
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_EPOCH",
    "DEFAULT_RATES",
    "GPU_TYPES",
    "MAX_SIZE",
    "RECONFIGURABLE_FIELDS",
    "STATES",
    "Change",
    "ChangeKind",
    "Fleet",
    "PublishedVersion",
    "Rates",
    "Rollouts",
]

MAX_SIZE: Final = 100_000
STATES: Final = ("ACTIVE", "STARTING", "DEGRADED", "DISABLED", "FAILED")
GPU_TYPES: Final = ("A100", "A10G", "A16", "H100", "H200", "L4", "L40S", "T4", "V100")
#: Keys ``Fleet.reconfigure`` accepts: the runtimeConfiguration fields, plus the model version and branch.
RECONFIGURABLE_FIELDS: Final = frozenset(
    {
        "minReplicas",
        "maxReplicas",
        "cpu",
        "memory",
        "gpu",
        "threadCount",
        "scalingConfiguration",
        "sources",
        "environmentVariables",
        "modelVersionRid",
        "branch",
    }
)
_REQUIRED_FIELDS: Final = frozenset({"minReplicas", "maxReplicas", "modelVersionRid"})
#: What simulated time 0 is as a Unix timestamp, unless the fleet is given another: 2026-01-01T00:00:00Z.
DEFAULT_EPOCH: Final = 1_767_225_600.0

_DEPLOYMENT_PREFIX: Final = "ri.foundry-ml-live.main.live-deployment."
_MODEL_PREFIX: Final = "ri.models.main.model."
_VERSION_PREFIX: Final = "ri.models.main.model-version."
_SOURCE_PREFIX: Final = "ri.magritte..source."
_REPOSITORY_PREFIX: Final = "ri.stemma.main.repository."
#: The model API and environment of every simulated version (the shape the SDK requires, as in the example).
_MODEL_API: Final = {
    "inputs": [{"type": "parameter", "name": "features", "required": True, "dataType": {"type": "string"}}],
    "outputs": [{"type": "parameter", "name": "score", "dataType": {"type": "double"}}],
}
_CONDA: Final = ("scikit-learn=1.5.2", "pandas=2.2.3")
_CPUS: Final[tuple[int | float, ...]] = (1, 1.0, 0.5, 2, 2.5, 4)
_MEMORIES: Final = ("256MiB", "512MiB", "1GiB", "1.5GiB", "2GiB", "4GiB", "8GiB")
_THREADS: Final = (8, 16, 32, 64)
_ENV_SECRETS: Final = ("API_KEY", "DB_PASSWORD", "UPSTREAM_TOKEN")

# Membership keys of the eligibility indexes; the states themselves are keys too.
_LIVE: Final = "live"
_ENABLED: Final = "enabled"
_RUNNING: Final = "running"
_SCALABLE: Final = "scalable"
_DELETED: Final = "deleted"

ChangeKind = Literal["added", "updated", "deleted", "restored"]


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second probabilities that one eligible deployment makes a transition; all zero is a static fleet.

    ``start`` STARTING→ACTIVE (ready); ``degrade`` ACTIVE→DEGRADED; ``recover`` DEGRADED→ACTIVE; ``fail``
    ACTIVE or DEGRADED→FAILED; ``restart`` FAILED→STARTING; ``scale`` an ACTIVE deployment with
    ``minReplicas`` 0 scales to zero (not ready) or back up (ready); ``disable`` any other state→DISABLED;
    ``enable`` DISABLED→STARTING; ``reconfigure`` replicas, cpu, memory or model version change; ``delete``
    the deployment disappears (404); ``recreate`` a deleted deployment comes back, STARTING; ``publish`` a
    branch that direct deployments track gets a new model version (per branch, not per deployment).
    """

    start: float = 0.0
    degrade: float = 0.0
    recover: float = 0.0
    fail: float = 0.0
    restart: float = 0.0
    scale: float = 0.0
    disable: float = 0.0
    enable: float = 0.0
    reconfigure: float = 0.0
    delete: float = 0.0
    recreate: float = 0.0
    publish: float = 0.0

    def __post_init__(self) -> None:
        for name, value in self.as_dict().items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"rate {name} must be a finite number >= 0")

    @property
    def is_static(self) -> bool:
        return not any(self.as_dict().values())

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}

    def scaled(self, factor: float) -> Rates:
        """Every rate multiplied by ``factor`` (the CLI's ``--churn``)."""
        return Rates(**{name: value * factor for name, value in self.as_dict().items()})

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Rates:
        """Rates from a JSON object: ``TypeError`` for a non-number, ``ValueError`` for an unknown name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown rates: {', '.join(unknown)}")
        parsed: dict[str, float] = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"rate {name} must be a number")
            parsed[name] = float(value)
        return cls(**parsed)


#: The demo's life: on 50 deployments, something visible happens every few seconds.
DEFAULT_RATES: Final = Rates(
    start=0.1,
    degrade=0.002,
    recover=0.05,
    fail=0.0005,
    restart=0.05,
    scale=0.005,
    disable=0.0002,
    enable=0.02,
    reconfigure=0.001,
    delete=0.0001,
    recreate=0.02,
    publish=0.002,
)


@dataclass(frozen=True, slots=True)
class Rollouts:
    """How a published version reaches its branch's direct deployments: ``delay`` seconds later, or, with
    probability ``stuck``, never (a rollout that did not happen)."""

    delay: float = 30.0
    stuck: float = 0.1

    def __post_init__(self) -> None:
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError("rollout delay must be a finite number >= 0")
        if not 0.0 <= self.stuck <= 1.0:
            raise ValueError("stuck must be a probability between 0 and 1")


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    """One model version of a branch: ``at`` in simulated seconds (negative: before the fleet was built),
    ``created_time`` as the API sends it; a ``stuck`` one is never rolled out."""

    rid: str
    model_rid: str
    branch: str
    at: float
    created_time: str
    stuck: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded change: ``seq`` orders the log, ``at`` is simulated seconds, ``fields`` the API paths."""

    seq: int
    at: float
    rid: str
    kind: ChangeKind
    fields: tuple[str, ...]
    version: int


@dataclass(slots=True)
class _Deployment:
    rid: str
    model_rid: str
    doc: dict[str, Any]
    deleted: bool = False
    version: int = 0
    body: bytes | None = None
    keys: tuple[str, ...] = ()


@dataclass(slots=True)
class _Branch:
    """The version history of one (model, branch), oldest first, with each version's JSON bytes once listed
    (a large fleet holds many versions that are never asked for)."""

    model_rid: str
    name: str
    versions: list[PublishedVersion] = field(default_factory=list)
    with_source: list[bool] = field(default_factory=list)
    bodies: list[bytes | None] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    last_ms: int | None = None


class _Index:
    """An insertion-ordered set of deployments with O(1) add, remove and random sampling."""

    __slots__ = ("_items", "_position")

    def __init__(self) -> None:
        self._items: list[_Deployment] = []
        self._position: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: _Deployment) -> None:
        if item.rid not in self._position:
            self._position[item.rid] = len(self._items)
            self._items.append(item)

    def remove(self, item: _Deployment) -> None:
        position = self._position.pop(item.rid, None)
        if position is None:
            return
        last = self._items.pop()
        if last is not item:
            self._items[position] = last
            self._position[last.rid] = position

    def sample(self, rng: random.Random, count: int) -> list[_Deployment]:
        return rng.sample(self._items, min(count, len(self._items)))


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """How many of ``n`` independent trials of probability ``p`` succeed, in O(successes)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    mean = n * p
    if mean > 1000.0:
        # The normal approximation is exact enough here, and keeps a huge step O(1).
        drawn = round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))
        return min(n, max(0, drawn))
    log_q = math.log1p(-p)
    count = 0
    position = -1
    while True:
        # The gap to the next success is geometric: skip the failures in one draw.
        position += 1 + int(math.log(1.0 - rng.random()) / log_q)
        if position >= n:
            return count
        count += 1


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_MISSING: Final = object()


def _flatten(value: object, prefix: str, out: dict[str, tuple[type, object]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
        if not value and prefix:
            out[prefix] = (dict, ())
    elif isinstance(value, list):
        out[prefix] = (list, json.dumps(value, sort_keys=True))
    else:
        # The type is compared too, so that 1 -> True or 1 -> "1" counts as a change.
        out[prefix] = (type(value), value)


def _flat(doc: dict[str, Any]) -> dict[str, tuple[type, object]]:
    out: dict[str, tuple[type, object]] = {}
    _flatten(doc, "", out)
    return out


def _keys_of(dep: _Deployment) -> tuple[str, ...]:
    if dep.deleted:
        return (_DELETED,)
    status = dep.doc.get("status")
    state = status.get("state") if isinstance(status, dict) else None
    keys = [_LIVE]
    if state in STATES:
        keys.append(str(state))
    if state != "DISABLED":
        keys.append(_ENABLED)
    if state in ("ACTIVE", "DEGRADED"):
        keys.append(_RUNNING)
    runtime = dep.doc.get("runtimeConfiguration")
    min_replicas = runtime.get("minReplicas") if isinstance(runtime, dict) else None
    if state == "ACTIVE" and type(min_replicas) is int and min_replicas == 0:
        keys.append(_SCALABLE)
    return tuple(keys)


class Fleet:
    """The simulated fleet: deployments, their models, their life, and a log of every change."""

    def __init__(
        self,
        size: int,
        *,
        seed: int = 1,
        rates: Rates | None = None,
        rollouts: Rollouts | None = None,
        epoch: float = DEFAULT_EPOCH,
        changelog_size: int = 100_000,
    ) -> None:
        if not 0 <= size <= MAX_SIZE:
            raise ValueError(f"fleet size must be between 0 and {MAX_SIZE}")
        if not math.isfinite(epoch):
            raise ValueError("epoch must be a finite Unix timestamp")
        self.seed = seed
        self.rates = rates if rates is not None else Rates()
        self.rollouts = rollouts if rollouts is not None else Rollouts()
        self.epoch = epoch
        # Separate streams, so that how long the fleet has lived never changes what it was built as, and
        # model versions never change which deployments a seed builds.
        self._gen = random.Random(f"fleet-{seed}")
        self._life = random.Random(f"life-{seed}")
        self._versions = random.Random(f"versions-{seed}")
        self._branches: dict[tuple[str, str], _Branch] = {}
        #: Every branch with a history, in creation order: what the ``publish`` rate draws from.
        self._branch_list: list[_Branch] = []
        self._repositories: dict[str, str] = {}
        self._unsupported: set[str] = set()
        #: Rollouts to come: (due, publish order, version), earliest first.
        self._pending: list[tuple[float, int, PublishedVersion]] = []
        self._published = 0
        self._now = 0.0
        self._seq = 0
        self._log: deque[Change] = deque(maxlen=changelog_size)
        self._by_rid: dict[str, _Deployment] = {}
        self._by_model: dict[str, list[_Deployment]] = {}
        self._model_versions: dict[str, str] = {}
        self._indexes: dict[str, _Index] = {}
        self._transitions: tuple[tuple[str, str, Callable[[_Deployment], None]], ...] = (
            ("start", "STARTING", self._become_ready_active),
            ("degrade", "ACTIVE", self._degrade),
            ("recover", "DEGRADED", self._become_ready_active),
            ("fail", _RUNNING, self._fail),
            ("restart", "FAILED", self._restart),
            ("scale", _SCALABLE, self._scale),
            ("disable", _ENABLED, self._disable),
            ("enable", "DISABLED", self._restart),
            ("reconfigure", _LIVE, self._life_reconfigure),
            ("delete", _LIVE, self._life_delete),
            ("recreate", _DELETED, self._life_recreate),
        )
        self._build(size)

    # -- building -------------------------------------------------------------------------------------

    def _build(self, size: int) -> None:
        rng = self._gen
        remaining = size
        while remaining > 0:
            group = min(remaining, rng.randint(1, 19))
            model_rid = self._new_model()
            for _ in range(group):
                roll = rng.random()
                branch = "master" if roll < 0.75 else "staging" if roll < 0.85 else None
                state, ready = self._initial_status(rng)
                self._insert(model_rid, branch=branch, full=rng.random() < 0.85, state=state, is_ready=ready)
            remaining -= group

    def _new_model(self) -> str:
        model_rid = _MODEL_PREFIX + _uuid(self._gen)
        self._by_model[model_rid] = []
        self._model_versions[model_rid] = _VERSION_PREFIX + _uuid(self._gen)
        return model_rid

    @staticmethod
    def _initial_status(rng: random.Random) -> tuple[str, bool]:
        roll = rng.random()
        if roll < 0.78:
            return "ACTIVE", True
        if roll < 0.84:
            return "STARTING", False
        if roll < 0.90:
            return "DEGRADED", True
        if roll < 0.94:
            return "FAILED", False
        return "DISABLED", False

    def _insert(self, model_rid: str, *, branch: str | None, full: bool, state: str, is_ready: bool) -> str:
        rng = self._gen
        rid = _DEPLOYMENT_PREFIX + _uuid(rng)
        min_replicas = rng.choice((0, 0, 1, 1, 1, 2, 3))
        runtime: dict[str, Any] = {
            "minReplicas": min_replicas,
            "maxReplicas": max(1, min_replicas) + rng.choice((0, 1, 2, 3)),
        }
        if rng.random() < 0.9:
            runtime["cpu"] = rng.choice(_CPUS)
        if rng.random() < 0.9:
            runtime["memory"] = rng.choice(_MEMORIES)
        if rng.random() < 0.2:
            gpu: dict[str, Any] = {"count": rng.randint(1, 2)}
            if rng.random() < 0.75:
                gpu["type"] = rng.choice(GPU_TYPES)
            runtime["gpu"] = gpu
        if rng.random() < 0.7:
            runtime["threadCount"] = rng.choice(_THREADS)
        if rng.random() < 0.4:
            runtime["scalingConfiguration"] = {
                "scaleUpLoadThreshold": rng.choice((0.5, 0.75, 0.9)),
                "scaleUpDelay": {"value": rng.choice((15, 30, 60)), "unit": "SECONDS"},
                "scaleDownDelay": {"value": rng.choice((5, 10, 30)), "unit": "MINUTES"},
            }
        if full:
            runtime["sources"] = [_SOURCE_PREFIX + _uuid(rng) for _ in range(rng.randint(0, 2))]
            env: dict[str, str] = {}
            if rng.random() < 0.8:
                env["LOG_LEVEL"] = rng.choice(("INFO", "DEBUG"))
                for name in rng.sample(_ENV_SECRETS, rng.randint(0, len(_ENV_SECRETS))):
                    env[name] = f"sim-secret-{rng.getrandbits(64):016x}"
            runtime["environmentVariables"] = env
        if state == "ACTIVE" and min_replicas == 0:
            is_ready = rng.random() < 0.5
        # A direct deployment runs its branch's newest version; a pinned one master's newest when it came.
        version_rid = self._branch(model_rid, branch or "master").versions[-1].rid
        doc: dict[str, Any] = {
            "rid": rid,
            "modelVersion": {"modelRid": model_rid, "modelVersionRid": version_rid},
        }
        if branch is not None:
            doc["branch"] = branch
        doc["runtimeConfiguration"] = runtime
        doc["status"] = {"state": state, "isReady": is_ready}
        dep = _Deployment(rid=rid, model_rid=model_rid, doc=doc)
        self._by_rid[rid] = dep
        self._by_model[model_rid].append(dep)
        self._reindex(dep)
        return rid

    # -- reading --------------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Simulated seconds since the fleet was built."""
        return self._now

    @property
    def size(self) -> int:
        """How many deployments exist now (deleted ones left out)."""
        return len(self._by_rid) - len(self._index(_DELETED))

    @property
    def rids(self) -> tuple[str, ...]:
        """Every existing deployment's RID, in creation order."""
        return tuple(rid for rid, dep in self._by_rid.items() if not dep.deleted)

    @property
    def deleted_rids(self) -> tuple[str, ...]:
        return tuple(rid for rid, dep in self._by_rid.items() if dep.deleted)

    @property
    def models(self) -> tuple[str, ...]:
        """Every model RID, in creation order."""
        return tuple(self._by_model)

    def __contains__(self, rid: object) -> bool:
        """Whether ``rid`` was ever part of the fleet (deleted ones included)."""
        return rid in self._by_rid

    def __iter__(self) -> Iterator[str]:
        return iter(self.rids)

    def get_json(self, rid: str) -> dict[str, Any] | None:
        """A copy of the deployment's API payload, or None when it does not exist (or was deleted)."""
        dep = self._by_rid.get(rid)
        if dep is None or dep.deleted:
            return None
        return copy.deepcopy(dep.doc)

    def body(self, rid: str) -> bytes | None:
        """The payload as encoded JSON bytes, cached until the deployment changes; None when absent."""
        dep = self._by_rid.get(rid)
        if dep is None or dep.deleted:
            return None
        if dep.body is None:
            dep.body = json.dumps(dep.doc, separators=(",", ":")).encode()
        return dep.body

    def deployments_of(self, model_rid: str, branch: str | None = None) -> tuple[str, ...]:
        """The model's listable (branch-tracking, existing) deployments, of ``branch`` when given."""
        return tuple(dep.rid for dep in self._listed(model_rid, branch))

    def list_body(self, model_rid: str, branch: str | None = None) -> bytes | None:
        """The list endpoint's ``{"data": [...]}`` bytes for a model, or None for an unknown model."""
        if model_rid not in self._by_model:
            return None
        parts = [self.body(dep.rid) or b"" for dep in self._listed(model_rid, branch)]
        return b'{"data":[' + b",".join(parts) + b"]}"

    def _listed(self, model_rid: str, branch: str | None) -> list[_Deployment]:
        listed = []
        for dep in self._by_model.get(model_rid, ()):
            have = dep.doc.get("branch")
            if not dep.deleted and have is not None and (branch is None or have == branch):
                listed.append(dep)
        return listed

    def versions(self, model_rid: str, branch: str) -> tuple[PublishedVersion, ...]:
        """The branch's versions, oldest first; empty for a branch without any; ``KeyError``: no model."""
        self._model(model_rid)
        found = self._branches.get((model_rid, branch))
        return tuple(found.versions) if found is not None else ()

    def latest_version(self, model_rid: str, branch: str) -> PublishedVersion | None:
        """The branch's newest version (the greatest ``createdTime``), or None when it has none."""
        versions = self.versions(model_rid, branch)
        return versions[-1] if versions else None

    def branches_of(self, model_rid: str) -> tuple[str, ...]:
        """The branches of a model that have versions, in the order they got them."""
        self._model(model_rid)
        return tuple(b.name for b in self._branch_list if b.model_rid == model_rid)

    def version_bodies(
        self, model_rid: str, branch: str, *, offset: int, limit: int
    ) -> tuple[tuple[bytes, ...], int | None] | None:
        """The JSON bytes of up to ``limit`` of the branch's versions from ``offset`` on, and the offset of
        the rest (None: no more); None for an offset past the last version (0 is always one).
        ``KeyError`` for an unknown model."""
        self._model(model_rid)
        found = self._branches.get((model_rid, branch))
        count = len(found.versions) if found is not None else 0
        if offset < 0 or (offset and offset >= count):
            return None
        end = min(offset + limit, count)
        parts = tuple(self._version_body(found, index) for index in range(offset, end)) if found else ()
        return parts, end if end < count else None

    def source_supported(self, model_rid: str) -> bool:
        """False when listing the model's versions answers 400 UnsupportedModelSource."""
        return self._model(model_rid) not in self._unsupported

    @property
    def pending_rollouts(self) -> int:
        """How many published versions are still to roll out (stuck ones never do, and are not counted)."""
        return len(self._pending)

    def model_of(self, rid: str) -> str:
        return self._get(rid).model_rid

    def version(self, rid: str) -> int:
        """How many changes the deployment has seen since it was built."""
        return self._get(rid).version

    def is_deleted(self, rid: str) -> bool:
        return self._get(rid).deleted

    def state_counts(self) -> dict[str, int]:
        """Existing deployments per state; states set through ``set_status`` count under their own name."""
        counts: dict[str, int] = {}
        for dep in self._by_rid.values():
            if not dep.deleted:
                state = str(dep.doc["status"]["state"])
                counts[state] = counts.get(state, 0) + 1
        return counts

    def changes(self, since: int = 0) -> list[Change]:
        """Logged changes with ``seq`` greater than ``since``, oldest first (the log keeps the newest)."""
        return [change for change in self._log if change.seq > since]

    @property
    def last_seq(self) -> int:
        return self._seq

    # -- control --------------------------------------------------------------------------------------

    def set_status(self, rid: str, state: str, is_ready: bool) -> Change | None:
        """Set the status as sent (any string, so unknown states can be served); None if nothing changed."""

        def change(doc: dict[str, Any]) -> None:
            doc["status"] = {"state": state, "isReady": is_ready}

        return self._update(self._get(rid), change)

    def reconfigure(self, rid: str, **changes: object) -> Change | None:
        """Set fields of ``RECONFIGURABLE_FIELDS`` to the JSON values given; None removes an optional one."""
        unknown = sorted(set(changes) - RECONFIGURABLE_FIELDS)
        if unknown:
            raise ValueError(f"not reconfigurable: {', '.join(unknown)}")
        for name, value in changes.items():
            if value is None and name in _REQUIRED_FIELDS:
                raise ValueError(f"{name} cannot be removed")
            json.dumps(value)  # refuse what could not be served, before anything changes

        def change(doc: dict[str, Any]) -> None:
            runtime = doc["runtimeConfiguration"]
            for name, value in changes.items():
                if name == "modelVersionRid":
                    doc["modelVersion"]["modelVersionRid"] = value
                elif name == "branch":
                    self._set_or_remove(doc, "branch", value)
                else:
                    self._set_or_remove(runtime, name, value)

        return self._update(self._get(rid), change)

    @staticmethod
    def _set_or_remove(target: dict[str, Any], key: str, value: object) -> None:
        if value is None:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)

    def delete(self, rid: str) -> Change | None:
        """Delete the deployment: it answers 404 until restored. None if it was deleted already."""
        dep = self._get(rid)
        if dep.deleted:
            return None
        dep.deleted = True
        return self._record(dep, "deleted", ())

    def restore(self, rid: str) -> Change | None:
        """Bring a deleted deployment back as it was. None if it was not deleted."""
        dep = self._get(rid)
        if not dep.deleted:
            return None
        dep.deleted = False
        return self._record(dep, "restored", ())

    def add(
        self,
        *,
        model_rid: str | None = None,
        branch: str | None = "master",
        full: bool = True,
        state: str = "STARTING",
        is_ready: bool = False,
    ) -> str:
        """Add a deployment (to a new model unless ``model_rid`` names one) and return its RID."""
        if model_rid is None:
            model_rid = self._new_model()
        elif model_rid not in self._by_model:
            raise KeyError(model_rid)
        rid = self._insert(model_rid, branch=branch, full=full, state=state, is_ready=is_ready)
        dep = self._by_rid[rid]
        # An ACTIVE deployment at minReplicas 0 gets a drawn readiness at build time; here the caller decides.
        dep.doc["status"]["isReady"] = is_ready
        self._record(dep, "added", ())
        return rid

    def publish_version(
        self, model_rid: str, branch: str = "master", *, stuck: bool = False, delay: float | None = None
    ) -> PublishedVersion:
        """Publish a new version of ``branch`` now; it rolls out ``delay`` seconds later (the fleet's
        ``rollouts.delay`` when None), or never when ``stuck``. ``KeyError`` for an unknown model."""
        self._model(model_rid)
        if delay is not None and (not math.isfinite(delay) or delay < 0):
            raise ValueError("delay must be a finite number >= 0")
        return self._publish(
            self._branch(model_rid, branch),
            stuck=stuck,
            delay=self.rollouts.delay if delay is None else delay,
        )

    def set_unsupported_source(self, model_rid: str, unsupported: bool = True) -> None:
        """Make listing the model's versions answer 400 UnsupportedModelSource (or stop it doing so)."""
        if unsupported:
            self._unsupported.add(self._model(model_rid))
        else:
            self._unsupported.discard(self._model(model_rid))

    # -- life -----------------------------------------------------------------------------------------

    def step(self, dt: float) -> int:
        """Advance simulated time by ``dt`` seconds and apply the transitions drawn; return how many."""
        if not math.isfinite(dt) or dt < 0:
            raise ValueError("dt must be a finite number >= 0")
        self._now += dt
        touched: set[str] = set()
        # Rollouts fall due with time whatever the rates: a version published by hand rolls out in a static
        # fleet too. A deployment rolled out in this step makes no other transition in it.
        applied = self._roll_out_due(touched)
        if dt == 0 or self.rates.is_static:
            return applied
        rng = self._life
        rates = self.rates
        for rate_name, source, action in self._transitions:
            rate = getattr(rates, rate_name)
            index = self._index(source)
            count = _binomial(rng, len(index), min(1.0, rate * dt))
            if count == 0:
                continue
            for dep in index.sample(rng, count):
                # One transition per deployment per step: a step is one observation interval.
                if dep.rid in touched:
                    continue
                touched.add(dep.rid)
                action(dep)
                applied += 1
        # Last, so that a zero publish rate leaves every other draw of the life as it was.
        published = _binomial(rng, len(self._branch_list), min(1.0, rates.publish * dt))
        for branch in rng.sample(self._branch_list, min(published, len(self._branch_list))):
            self._publish(branch, stuck=rng.random() < self.rollouts.stuck, delay=self.rollouts.delay)
        return applied

    def _become_ready_active(self, dep: _Deployment) -> None:
        self._set_status(dep, "ACTIVE", True)

    def _degrade(self, dep: _Deployment) -> None:
        self._set_status(dep, "DEGRADED", True)

    def _fail(self, dep: _Deployment) -> None:
        self._set_status(dep, "FAILED", False)

    def _restart(self, dep: _Deployment) -> None:
        self._set_status(dep, "STARTING", False)

    def _disable(self, dep: _Deployment) -> None:
        self._set_status(dep, "DISABLED", False)

    def _scale(self, dep: _Deployment) -> None:
        self._set_status(dep, "ACTIVE", not dep.doc["status"]["isReady"])

    def _set_status(self, dep: _Deployment, state: str, is_ready: bool) -> None:
        def change(doc: dict[str, Any]) -> None:
            doc["status"] = {"state": state, "isReady": is_ready}

        self._update(dep, change)

    def _life_reconfigure(self, dep: _Deployment) -> None:
        rng = self._life

        def change(doc: dict[str, Any]) -> None:
            runtime = doc["runtimeConfiguration"]
            kind = rng.randrange(4)
            if kind == 0:
                low = rng.choice((0, 1, 1, 2, 3))
                runtime["minReplicas"] = low
                runtime["maxReplicas"] = max(1, low) + rng.choice((0, 1, 2, 4))
                status = doc["status"]
                if low > 0 and status["state"] == "ACTIVE" and not status["isReady"]:
                    # No longer allowed to sit at zero replicas: it scales back up.
                    status["isReady"] = True
            elif kind == 1:
                runtime["cpu"] = rng.choice([cpu for cpu in _CPUS if cpu != runtime.get("cpu")])
            elif kind == 2:
                runtime["memory"] = rng.choice([mem for mem in _MEMORIES if mem != runtime.get("memory")])
            else:
                doc["modelVersion"]["modelVersionRid"] = _VERSION_PREFIX + _uuid(rng)

        self._update(dep, change)

    def _life_delete(self, dep: _Deployment) -> None:
        self.delete(dep.rid)

    def _life_recreate(self, dep: _Deployment) -> None:
        self.restore(dep.rid)
        self._set_status(dep, "STARTING", False)

    # -- model versions -------------------------------------------------------------------------------

    def _branch(self, model_rid: str, name: str) -> _Branch:
        """The branch's history, made on first use: master's newest version is the model's first one (what
        pinned deployments run), other branches get their own; a few older versions come before it."""
        key = (model_rid, name)
        found = self._branches.get(key)
        if found is not None:
            return found
        rng = self._versions
        branch = self._branches[key] = _Branch(model_rid=model_rid, name=name)
        self._branch_list.append(branch)
        newest = self._model_versions[model_rid] if name == "master" else _VERSION_PREFIX + _uuid(rng)
        older = rng.randint(0, 2)
        ages = sorted((rng.uniform(3600.0, 30 * 86_400.0) for _ in range(older + 1)), reverse=True)
        for index, age in enumerate(ages):
            rid = newest if index == older else _VERSION_PREFIX + _uuid(rng)
            self._append_version(branch, rid, at=-age, stuck=False, with_source=rng.random() < 0.9)
        return branch

    def _publish(self, branch: _Branch, *, stuck: bool, delay: float) -> PublishedVersion:
        rid = _VERSION_PREFIX + _uuid(self._versions)
        version = self._append_version(branch, rid, at=self._now, stuck=stuck, with_source=True)
        if not stuck:
            self._published += 1
            heapq.heappush(self._pending, (self._now + delay, self._published, version))
        return version

    def _append_version(
        self, branch: _Branch, rid: str, *, at: float, stuck: bool, with_source: bool
    ) -> PublishedVersion:
        # Whole milliseconds, strictly increasing per branch: the newest is the greatest createdTime.
        millis = round((self.epoch + at) * 1000)
        if branch.last_ms is not None:
            millis = max(millis, branch.last_ms + 1)
        branch.last_ms = millis
        stamp = datetime.fromtimestamp(millis // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        version = PublishedVersion(
            rid=rid,
            model_rid=branch.model_rid,
            branch=branch.name,
            at=at,
            created_time=f"{stamp}.{millis % 1000:03d}Z",
            stuck=stuck,
        )
        self._repository(branch.model_rid)
        branch.position[rid] = len(branch.versions)
        branch.versions.append(version)
        branch.with_source.append(with_source)
        branch.bodies.append(None)
        return version

    def _version_body(self, branch: _Branch, index: int) -> bytes:
        body = branch.bodies[index]
        if body is None:
            version = branch.versions[index]
            repository = self._repository(branch.model_rid)
            doc: dict[str, Any] = {
                "rid": version.rid,
                "modelApi": _MODEL_API,
                "condaRequirements": list(_CONDA),
                "backingRepositories": [repository],
                "createdTime": version.created_time,
            }
            if branch.with_source[index]:
                doc["source"] = {"type": "codeRepository", "repositoryRid": repository, "branch": branch.name}
            body = branch.bodies[index] = json.dumps(doc, separators=(",", ":")).encode()
        return body

    def _repository(self, model_rid: str) -> str:
        found = self._repositories.get(model_rid)
        if found is None:
            found = self._repositories[model_rid] = _REPOSITORY_PREFIX + _uuid(self._versions)
        return found

    def _roll_out_due(self, touched: set[str]) -> int:
        """Move the direct deployments of each branch whose rollout is due onto its version; return how many
        changed. A deployment already on a newer version of the branch stays there."""
        applied = 0
        while self._pending and self._pending[0][0] <= self._now:
            version = heapq.heappop(self._pending)[2]
            branch = self._branches[version.model_rid, version.branch]
            target = branch.position[version.rid]

            def roll(doc: dict[str, Any], rid: str = version.rid) -> None:
                doc["modelVersion"]["modelVersionRid"] = rid

            for dep in self._by_model[version.model_rid]:
                if dep.deleted or dep.doc.get("branch") != version.branch:
                    continue
                running = branch.position.get(dep.doc["modelVersion"]["modelVersionRid"], -1)
                if running < target and self._update(dep, roll) is not None:
                    touched.add(dep.rid)
                    applied += 1
        return applied

    # -- bookkeeping ----------------------------------------------------------------------------------

    def _model(self, model_rid: str) -> str:
        if model_rid not in self._by_model:
            raise KeyError(model_rid)
        return model_rid

    def _get(self, rid: str) -> _Deployment:
        dep = self._by_rid.get(rid)
        if dep is None:
            raise KeyError(rid)
        return dep

    def _index(self, key: str) -> _Index:
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = _Index()
        return index

    def _reindex(self, dep: _Deployment) -> None:
        keys = _keys_of(dep)
        if keys == dep.keys:
            return
        for key in dep.keys:
            if key not in keys:
                self._index(key).remove(dep)
        for key in keys:
            self._index(key).add(dep)
        dep.keys = keys

    def _update(self, dep: _Deployment, change: Callable[[dict[str, Any]], None]) -> Change | None:
        before = _flat(dep.doc)
        change(dep.doc)
        after = _flat(dep.doc)
        changed = tuple(
            sorted(
                path
                for path in before.keys() | after.keys()
                if before.get(path, _MISSING) != after.get(path, _MISSING)
            )
        )
        if not changed:
            return None
        return self._record(dep, "updated", changed)

    def _record(self, dep: _Deployment, kind: ChangeKind, changed: tuple[str, ...]) -> Change:
        dep.version += 1
        dep.body = None
        self._reindex(dep)
        self._seq += 1
        entry = Change(
            seq=self._seq, at=self._now, rid=dep.rid, kind=kind, fields=changed, version=dep.version
        )
        self._log.append(entry)
        return entry
