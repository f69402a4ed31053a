"""Change events: frozen records with deterministic ids, and their JSON form (schema in docs/events.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from monitor.diff import FieldChange
from monitor.model import FieldValue, LiveDeployment, snapshot_to_json


class EventType(StrEnum):
    """Every event the monitor emits."""

    OBSERVED = "deployment.observed"
    CHANGED = "deployment.changed"
    NOT_FOUND = "deployment.not_found"
    RETURNED = "deployment.returned"
    UNREACHABLE = "deployment.unreachable"
    RECOVERED = "deployment.recovered"
    REMOVED = "deployment.removed"
    VERSION_BEHIND = "deployment.version_behind"
    VERSION_CAUGHT_UP = "deployment.version_caught_up"
    #: Sent only by a sink that shapes its events (``monitor.shaping``); never in the outbox.
    FLAPPED = "deployment.flapped"
    HEALTHY = "deployment.healthy"


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the monitor saw happen to one deployment.

    ``sequence`` counts the events of this deployment; with the RID, type and content it makes
    ``event_id``, so the same observation always gets the same id and sinks can de-duplicate.
    """

    type: EventType
    rid: str
    name: str
    labels: tuple[tuple[str, str], ...]
    time: float
    sequence: int
    old_state: str | None = None
    new_state: str | None = None
    ready: bool | None = None
    changes: tuple[FieldChange, ...] = ()
    error: str | None = None
    consecutive_failures: int | None = None
    #: The rollout events' (``version_behind``, ``version_caught_up``): the branch followed, the version the
    #: deployment runs, the branch's newest, and how long the deployment had been behind it.
    model_rid: str | None = None
    branch: str | None = None
    model_version_rid: str | None = None
    latest_version_rid: str | None = None
    behind_seconds: float | None = None
    #: The deployment as first seen (``observed``): the snapshot itself until it is serialised (it is shared
    #: with the tracker's record, so a fleet's worth of queued events costs no copies), a dict once read back.
    snapshot: LiveDeployment | dict[str, Any] | None = field(default=None, compare=False, hash=False)
    event_id: str = field(default="", compare=False)
    #: The event's place in the state file's outbox (0 before it is written there).
    outbox_seq: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not self.event_id:
            object.__setattr__(self, "event_id", self._make_id())

    def _make_id(self) -> str:
        content: list[Any] = [
            self.rid,
            self.sequence,
            self.type.value,
            self.old_state,
            self.new_state,
            [[c.path, _jsonable(c.old), _jsonable(c.new)] for c in self.changes],
            self.error,
        ]
        if self.latest_version_rid is not None:
            # Only rollout events carry versions: every other event keeps the id it always had.
            content.append([self.model_rid, self.branch, self.model_version_rid, self.latest_version_rid])
        text = json.dumps(content, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        """The event as the sinks and ``/api/v1/events`` publish it."""
        body: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type.value,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds"),
            "rid": self.rid,
            "deployment": self.name,
            "labels": dict(self.labels),
            "sequence": self.sequence,
        }
        optional: dict[str, Any] = {
            "old_state": self.old_state,
            "new_state": self.new_state,
            "ready": self.ready,
            "error": self.error,
            "consecutive_failures": self.consecutive_failures,
            "model_rid": self.model_rid,
            "branch": self.branch,
            "model_version_rid": self.model_version_rid,
            "latest_version_rid": self.latest_version_rid,
            "behind_seconds": self.behind_seconds,
            "snapshot": (
                snapshot_to_json(self.snapshot)
                if isinstance(self.snapshot, LiveDeployment)
                else self.snapshot
            ),
        }
        body.update((key, value) for key, value in optional.items() if value is not None)
        if self.changes:
            body["changes"] = [
                {"field": c.path, "old": _jsonable(c.old), "new": _jsonable(c.new)} for c in self.changes
            ]
        return body


def event_from_json(body: dict[str, Any], *, outbox_seq: int = 0) -> Event:
    """The event that ``Event.to_json`` gave, read back from the outbox; ValueError when malformed."""
    try:
        return Event(
            type=EventType(body["type"]),
            rid=str(body["rid"]),
            name=str(body["deployment"]),
            labels=tuple(sorted((str(k), str(v)) for k, v in body["labels"].items())),
            time=datetime.fromisoformat(body["time"]).timestamp(),
            sequence=int(body["sequence"]),
            old_state=body.get("old_state"),
            new_state=body.get("new_state"),
            ready=body.get("ready"),
            changes=tuple(
                FieldChange(str(c["field"]), _from_jsonable(c["old"]), _from_jsonable(c["new"]))
                for c in body.get("changes", ())
            ),
            error=body.get("error"),
            consecutive_failures=body.get("consecutive_failures"),
            model_rid=body.get("model_rid"),
            branch=body.get("branch"),
            model_version_rid=body.get("model_version_rid"),
            latest_version_rid=body.get("latest_version_rid"),
            behind_seconds=body.get("behind_seconds"),
            snapshot=body.get("snapshot"),
            event_id=str(body["event_id"]),
            outbox_seq=outbox_seq,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an event: {type(exc).__name__}") from None


def _from_jsonable(value: Any) -> FieldValue | None:
    return tuple(value) if isinstance(value, list) else value


def _jsonable(value: FieldValue | None) -> Any:
    return list(value) if isinstance(value, tuple) else value
