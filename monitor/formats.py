"""How a sink writes events: the monitor's native JSON, or CloudEvents 1.0 in structured mode.

CloudEvents attributes: ``id`` is the deterministic ``event_id`` (so a receiver de-duplicates on either),
``source`` names the monitor and the Foundry host it watches, ``subject`` is the deployment RID, ``type`` is
versioned (``com.palantir.foundry.live-deployment.changed.v1``), and ``data`` is the native event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from monitor.events import Event
from monitor.eventschema import schema_id

TYPE_PREFIX: Final = "com.palantir.foundry.live-deployment."
JSON: Final = "application/json"
CLOUDEVENT: Final = "application/cloudevents+json"
#: The CloudEvents ``source`` when the Foundry host is not known (see ``cloudevents_source``).
DEFAULT_SOURCE: Final = "/foundry-monitor"


class EventFormat(StrEnum):
    """The formats a sink can write."""

    NATIVE = "native"
    CLOUDEVENTS = "cloudevents"


def cloudevents_source(base_url: str) -> str:
    """The ``source`` of the monitor watching the Foundry at ``base_url``: ``/foundry-monitor/<host>``."""
    return f"/foundry-monitor/{urlsplit(base_url).netloc or base_url}"


def cloudevent_type(event: Event) -> str:
    """``com.palantir.foundry.live-deployment.<kind>.v1`` for ``deployment.<kind>``."""
    return f"{TYPE_PREFIX}{event.type.value.removeprefix('deployment.')}.v1"


@dataclass(frozen=True, slots=True)
class Formatter:
    """Turns events into a sink's bodies and lines in one format."""

    format: EventFormat = EventFormat.NATIVE
    #: The CloudEvents ``source`` (see ``cloudevents_source``); unused by the native format.
    source: str = DEFAULT_SOURCE

    def body(self, event: Event) -> dict[str, Any]:
        """The event as one JSON object."""
        native = event.to_json()
        if self.format is EventFormat.NATIVE:
            return native
        return {
            "specversion": "1.0",
            "id": event.event_id,
            "source": self.source,
            "type": cloudevent_type(event),
            "subject": event.rid,
            "time": datetime.fromtimestamp(event.time, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "datacontenttype": JSON,
            "dataschema": schema_id(event.type),
            "data": native,
        }

    def encoded(self, event: Event) -> bytes:
        """One event as a request body."""
        return _dumps(self.body(event)).encode()

    def line(self, event: Event) -> str:
        """One event as a JSON line (stdout and the file sink)."""
        return _dumps(self.body(event)) + "\n"

    def content_type(self) -> str:
        return JSON if self.format is EventFormat.NATIVE else CLOUDEVENT


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


#: The monitor's own JSON, the format of every sink unless configured otherwise.
NATIVE_FORMAT: Final = Formatter()
