"""Watch records to and from plain data, for the state file. Pure; a record that cannot be read is dropped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from monitor.events import Event, EventType
from monitor.model import (
    Delay,
    Gpu,
    LiveDeployment,
    RuntimeConfiguration,
    ScalingConfiguration,
)
from monitor.rollouts import Lag
from monitor.tracker import Record, Target, counts, transition

FORMAT = 1


def watch_state(record: Record) -> dict[str, Any]:
    """How the watch of a deployment stands: shared by the state file and ``/api/v1/deployments``."""
    return {
        "found": record.found,
        "up": record.up,
        "unreachable": record.unreachable,
        "consecutive_failures": record.consecutive_failures,
        "last_error": record.last_error,
        "last_success": record.last_success,
        "last_change": record.last_change,
    }


def record_to_data(record: Record) -> dict[str, Any]:
    """Everything of a record that must survive a restart. Environment variables are digests already."""
    target = record.target
    return {
        "format": FORMAT,
        "name": target.name,
        "labels": [list(pair) for pair in target.labels],
        "origin": target.origin,
        "snapshot": None if record.snapshot is None else asdict(record.snapshot),
        **watch_state(record),
        "transitions": [[old, new, n] for (old, new), n in record.transitions.items()],
        "changes": dict(record.changes),
        "errors": dict(record.errors),
        "sequence": record.sequence,
        "lag": None if record.lag is None else asdict(record.lag),
    }


def _delay(data: Any) -> Delay | None:
    return None if data is None else Delay(value=int(data["value"]), unit=str(data["unit"]))


def _snapshot(data: dict[str, Any]) -> LiveDeployment:
    runtime = data["runtime"]
    gpu = runtime.get("gpu")
    scaling = runtime.get("scaling")
    sources = runtime.get("sources")
    environment = runtime.get("environment")
    return LiveDeployment(
        rid=str(data["rid"]),
        model_rid=str(data["model_rid"]),
        model_version_rid=str(data["model_version_rid"]),
        branch=data.get("branch"),
        state=str(data["state"]),
        is_ready=bool(data["is_ready"]),
        runtime=RuntimeConfiguration(
            min_replicas=int(runtime["min_replicas"]),
            max_replicas=int(runtime["max_replicas"]),
            cpu=runtime.get("cpu"),
            memory=runtime.get("memory"),
            memory_bytes=runtime.get("memory_bytes"),
            gpu=None if gpu is None else Gpu(count=int(gpu["count"]), type=gpu.get("type")),
            thread_count=runtime.get("thread_count"),
            scaling=None
            if scaling is None
            else ScalingConfiguration(
                scale_up_load_threshold=scaling.get("scale_up_load_threshold"),
                scale_up_delay=_delay(scaling.get("scale_up_delay")),
                scale_down_delay=_delay(scaling.get("scale_down_delay")),
            ),
            sources=None if sources is None else tuple(str(s) for s in sources),
            environment=None if environment is None else tuple((str(n), str(d)) for n, d in environment),
        ),
    )


def _lag(data: Any) -> Lag | None:
    # Absent in state files written before rollouts were watched.
    if data is None:
        return None
    announced_at = data["announced_at"]
    return Lag(
        model_rid=str(data["model_rid"]),
        branch=str(data["branch"]),
        latest_version_rid=str(data["latest_version_rid"]),
        since=float(data["since"]),
        announced_at=None if announced_at is None else float(announced_at),
    )


def record_from_data(target: Target, data: dict[str, Any]) -> Record | None:
    """The record stored for ``target``, or None when the data is not a record this version can read."""
    try:
        if data.get("format") != FORMAT:
            return None
        snapshot = None if data["snapshot"] is None else _snapshot(data["snapshot"])
        return Record(
            target=target,
            snapshot=snapshot,
            found=data["found"],
            up=bool(data["up"]),
            unreachable=bool(data["unreachable"]),
            consecutive_failures=int(data["consecutive_failures"]),
            last_error=data["last_error"],
            last_success=data["last_success"],
            last_change=data["last_change"],
            transitions=counts({transition(str(o), str(n)): int(c) for o, n, c in data["transitions"]}),
            changes=counts({str(k): int(v) for k, v in data["changes"].items()}),
            errors=counts({str(k): int(v) for k, v in data["errors"].items()}),
            sequence=int(data["sequence"]),
            lag=_lag(data.get("lag")),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _stored_target(rid: str, data: dict[str, Any]) -> Target:
    """The target a record was stored for: its name, labels and origin (raises on data that is not)."""
    labels = tuple((str(k), str(v)) for k, v in data.get("labels", ()))
    return Target(rid, str(data.get("name", rid)), labels, str(data.get("origin", "config")))


def stored_records(stored: Mapping[str, dict[str, Any]]) -> list[Record]:
    """The records of stored data, each under the target it was stored for (unreadable: left out)."""
    records = []
    for rid, data in stored.items():
        try:
            record = record_from_data(_stored_target(rid, data), data)
        except (TypeError, ValueError, AttributeError):
            continue
        if record is not None:
            records.append(record)
    return records


class StoredRecords:
    """The records a previous run left, handed out as deployments are watched again (``Tracker.restore``)."""

    def __init__(self, stored: dict[str, dict[str, Any]]) -> None:
        self._stored = dict(stored)

    def claim(self, target: Target) -> Record | None:
        data = self._stored.pop(target.rid, None)
        return None if data is None else record_from_data(target, data)

    def offer(self, stored: Mapping[str, dict[str, Any]]) -> None:
        """Records read since the start (deployments taken over from another replica): claimed next."""
        self._stored.update(stored)

    def drop_unclaimed(self) -> None:
        """Forget what nobody claimed: with leases, other replicas' records, read again when taken over."""
        self._stored.clear()

    def unclaimed(self) -> dict[str, dict[str, Any]]:
        """Stored deployments nobody has asked for (yet): candidates for ``deployment.removed``."""
        return dict(self._stored)

    def forget(self, rid: str) -> None:
        """Drop a stored deployment without an event: another process watches it now."""
        self._stored.pop(rid, None)

    def release(self, rid: str, now: float) -> Event | None:
        """Forget a stored deployment that is no longer configured or discovered: its removed event."""
        data = self._stored.pop(rid, None)
        if data is None:
            return None
        try:
            target = _stored_target(rid, data)
            snapshot = data.get("snapshot") or {}
            return Event(
                type=EventType.REMOVED,
                rid=rid,
                name=target.name,
                labels=target.labels,
                time=now,
                sequence=int(data.get("sequence", 0)) + 1,
                new_state=snapshot.get("state"),
            )
        except (TypeError, ValueError, AttributeError):
            return None

    def origin(self, rid: str) -> str | None:
        data = self._stored.get(rid)
        origin = None if data is None else data.get("origin")
        return origin if isinstance(origin, str) else None
