"""An event sink that pushes alerts to Alertmanager's v2 API, so alerts work without any alert rules.

A change into FAILED or DEGRADED, an unreachable deployment and a deployment not found each fire one
alert with stable labels; the matching recovery resolves it. Firing alerts are re-sent every
``resend_interval``, since Alertmanager resolves an alert by itself when it stops hearing about it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
import structlog
from anyio.abc import TaskStatus

from monitor import USER_AGENT
from monitor.events import Event, EventType
from monitor.metrics import ProcessMetrics
from monitor.sinks import Delivery, Outcome, QueuedSink

log = structlog.get_logger(__name__)

#: States that fire an alert, with the alert name and severity they fire.
STATE_ALERTS = {
    "FAILED": ("FoundryDeploymentFailed", "critical"),
    "DEGRADED": ("FoundryDeploymentDegraded", "warning"),
}
UNREACHABLE_ALERT = ("FoundryDeploymentUnreachable", "warning")
NOT_FOUND_ALERT = ("FoundryDeploymentNotFound", "warning")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as Alertmanager's v2 API takes it."""

    name: str
    severity: str
    event: Event
    starts_at: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.event.rid)

    def payload(self, *, ends_at: float | None = None) -> dict[str, Any]:
        event = self.event
        labels = {
            **dict(event.labels),
            "alertname": self.name,
            "severity": self.severity,
            "rid": event.rid,
            "deployment": event.name,
            "source": "foundry-monitor",
        }
        body: dict[str, Any] = {
            "labels": labels,
            "annotations": {
                "summary": f"{event.name}: {self.name.removeprefix('FoundryDeployment')}",
                "description": _describe(event),
            },
            "startsAt": _iso(self.starts_at),
        }
        if ends_at is not None:
            body["endsAt"] = _iso(ends_at)
        return body


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(event: Event) -> str:
    if event.type is EventType.UNREACHABLE:
        return f"{event.consecutive_failures} consecutive polls of {event.rid} failed ({event.error})."
    if event.type is EventType.NOT_FOUND:
        return f"Foundry answers LiveDeploymentNotFound for {event.rid}."
    return f"{event.rid} went from {event.old_state} to {event.new_state} (ready: {event.ready})."


class AlertmanagerSink(QueuedSink):
    """Turns events into firing and resolved alerts and posts them to ``{url}/api/v2/alerts``."""

    def __init__(
        self,
        metrics: ProcessMetrics,
        *,
        url: str,
        session: aiohttp.ClientSession,
        resend_interval: float = 60.0,
        timeout: float = 5.0,
        max_retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        super().__init__("alertmanager", metrics, queue_size=10_000)
        endpoint = url.rstrip("/") + "/api/v2/alerts"
        self._delivery = Delivery(session, endpoint, timeout, max_retries, backoff_initial, backoff_max)
        self._resend_interval = resend_interval
        #: Alerts firing now, by (alert name, RID).
        self.firing: dict[tuple[str, str], Alert] = {}

    def updates(self, event: Event) -> tuple[list[Alert], list[Alert]]:
        """Apply ``event`` to the firing set; returns the alerts that start and the ones that resolve."""
        fired: list[Alert] = []
        resolved: list[Alert] = []

        def fire(name: str, severity: str) -> None:
            alert = Alert(name, severity, event, event.time)
            if alert.key not in self.firing:
                self.firing[alert.key] = alert
                fired.append(alert)

        def resolve(name: str) -> None:
            alert = self.firing.pop((name, event.rid), None)
            if alert is not None:
                resolved.append(alert)

        kind = event.type
        if kind in (EventType.OBSERVED, EventType.CHANGED, EventType.RETURNED, EventType.RECOVERED):
            for state, (name, severity) in STATE_ALERTS.items():
                if event.new_state == state:
                    fire(name, severity)
                elif event.new_state is not None:
                    resolve(name)
        if kind is EventType.UNREACHABLE:
            fire(*UNREACHABLE_ALERT)
        elif kind is EventType.RECOVERED:
            resolve(UNREACHABLE_ALERT[0])
        elif kind is EventType.NOT_FOUND:
            fire(*NOT_FOUND_ALERT)
            for name, _ in STATE_ALERTS.values():
                resolve(name)
        elif kind is EventType.RETURNED:
            resolve(NOT_FOUND_ALERT[0])
        elif kind is EventType.REMOVED:
            for key in [key for key in self.firing if key[1] == event.rid]:
                resolved.append(self.firing.pop(key))
        return fired, resolved

    async def deliver(self, batch: Sequence[Event]) -> None:
        payload: list[dict[str, Any]] = []
        for event in batch:
            fired, resolved = self.updates(event)
            payload.extend(alert.payload() for alert in fired)
            payload.extend(alert.payload(ends_at=event.time) for alert in resolved)
        if payload:
            await self._post(payload)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._resend_firing)
            await super().run(task_status=task_status)

    async def _resend_firing(self) -> None:
        while True:
            await anyio.sleep(self._resend_interval)
            if self.firing:
                await self._post([alert.payload() for alert in self.firing.values()])

    async def _post(self, alerts: list[dict[str, Any]]) -> None:
        data = json.dumps(alerts, separators=(",", ":")).encode()
        outcome = await self._delivery.post(
            data, {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        )
        # Not held back for later: the firing set is sent again every resend interval anyway.
        if outcome is not Outcome.DELIVERED:
            self._metrics.sink_failures.labels(self.name).inc(len(alerts))
            log.warning("alertmanager_delivery_failed", alerts=len(alerts))
