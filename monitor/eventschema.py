"""JSON Schemas of the events, one per type, built from one table of fields.

The shipped copies live in ``docs/schemas/`` (``python -m monitor.eventschema DIR`` writes them); a test
keeps them equal to what this module builds and checks real events against them, so a receiver can validate
what it gets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from monitor.events import EventType

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
STATE: Final = {"type": "string", "description": "status.state as sent (unknown states pass through)"}

#: Every field an event may carry, with its schema.
FIELDS: Final[dict[str, dict[str, Any]]] = {
    "event_id": {
        "type": "string",
        "pattern": "^[0-9a-f]{32}$",
        "description": "Deterministic id: the same observation gives the same id (de-duplicate on it)",
    },
    "type": {"type": "string", "description": "The event type"},
    "time": {"type": "string", "format": "date-time", "description": "When the monitor observed it (UTC)"},
    "rid": {"type": "string", "pattern": "^ri\\.", "description": "The live deployment RID"},
    "deployment": {"type": "string", "description": "The configured name (the RID when none is set)"},
    "labels": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "The static labels from the configuration",
    },
    "sequence": {"type": "integer", "minimum": 1, "description": "Counts this deployment's events"},
    "old_state": STATE,
    "new_state": STATE,
    "ready": {"type": "boolean", "description": "status.isReady after the observation"},
    "changes": {
        "type": "array",
        "description": "One entry per compared field that differs; null means absent",
        "items": {
            "type": "object",
            "required": ["field", "old", "new"],
            "additionalProperties": False,
            "properties": {"field": {"type": "string"}, "old": {}, "new": {}},
        },
    },
    "error": {"type": "string", "description": "The error kind of the last failed poll"},
    "consecutive_failures": {"type": "integer", "minimum": 1, "description": "Failed polls in a row"},
    "model_rid": {"type": "string", "pattern": "^ri\\.", "description": "The model the deployment serves"},
    "branch": {"type": "string", "description": "The model branch the deployment follows"},
    "model_version_rid": {"type": "string", "pattern": "^ri\\.", "description": "The version it runs"},
    "latest_version_rid": {
        "type": "string",
        "pattern": "^ri\\.",
        "description": "The branch's newest version (greatest createdTime) at its last successful listing",
    },
    "behind_seconds": {
        "type": "number",
        "minimum": 0,
        "description": "Seconds behind, counted from the newer version's createdTime",
    },
    "snapshot": {
        "type": "object",
        "required": ["rid"],
        "description": "The deployment as first seen, in the API's shape, environment values as digests",
    },
    "states": {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 1,
        "description": "The states a flap went through, oldest first, consecutive repeats once",
    },
    "first_time": {"type": "string", "format": "date-time", "description": "The flap's first event (UTC)"},
    "last_time": {"type": "string", "format": "date-time", "description": "The flap's last event (UTC)"},
    "count": {"type": "integer", "minimum": 1, "description": "How many events the summary stands for"},
    "event_ids": {
        "type": "array",
        "items": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "minItems": 1,
        "description": "The events the summary stands for, oldest first (its event_id derives from them)",
    },
}

COMMON: Final = ("event_id", "type", "time", "rid", "deployment", "labels", "sequence")
ROLLOUT: Final = ("model_rid", "branch", "model_version_rid", "latest_version_rid", "behind_seconds")

#: Per type: the fields it always carries beyond the common ones, and those it may carry.
SHAPES: Final[dict[EventType, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    EventType.OBSERVED: (("new_state", "ready", "snapshot"), ()),
    EventType.CHANGED: (("old_state", "new_state", "ready", "changes"), ()),
    EventType.NOT_FOUND: ((), ("old_state",)),
    EventType.RETURNED: (("old_state", "new_state", "ready"), ("changes",)),
    EventType.UNREACHABLE: (("error", "consecutive_failures"), ("new_state",)),
    EventType.RECOVERED: ((), ("new_state", "ready")),
    EventType.REMOVED: ((), ("new_state",)),
    EventType.VERSION_BEHIND: (ROLLOUT, ()),
    EventType.VERSION_CAUGHT_UP: (ROLLOUT, ()),
    EventType.FLAPPED: (
        ("new_state", "states", "first_time", "last_time", "count", "event_ids"),
        ("old_state", "ready", "changes"),
    ),
    EventType.HEALTHY: (("new_state", "ready"), ()),
}


def schema_id(kind: EventType) -> str:
    """The schema's ``$id``: a URN naming the event type and the schema's version."""
    return f"urn:foundry-monitor:event:{kind.value}:v1"


def event_schema(kind: EventType) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one event type's JSON body."""
    required, optional = SHAPES[kind]
    names = (*COMMON, *required, *optional)
    properties = {name: FIELDS[name] for name in names}
    properties["type"] = {**FIELDS["type"], "const": kind.value}
    return {
        "$schema": DIALECT,
        "$id": schema_id(kind),
        "title": kind.value,
        "type": "object",
        "required": [*COMMON, *required],
        "additionalProperties": False,
        "properties": properties,
    }


def write_schemas(directory: Path) -> list[Path]:
    """Write ``<type>.schema.json`` for every event type into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in EventType:
        path = directory / f"{kind.value}.schema.json"
        path.write_text(json.dumps(event_schema(kind), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        print(written_path)
