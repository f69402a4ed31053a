"""The Alertmanager sink: alerts pushed to Alertmanager's v2 API, so alerting works without alert rules.

What fires is derived from the tracker's records as they stand (a deployment FAILED or DEGRADED, unreachable,
not found, or announced as stuck behind its branch's newest model version), never from the events seen since
start: it is sent once the watch set is loaded and again every ``resend_interval`` (Alertmanager resolves an
alert by itself when it stops hearing about it), and an alert that stopped firing is sent resolved.
Transitions are also sent as their events arrive, so a FAILED shorter than a resend interval still fires and
resolves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
import structlog
from anyio.abc import TaskStatus

from monitor import USER_AGENT
from monitor.config import AlertmanagerConfig
from monitor.events import Event, EventType
from monitor.metrics import ProcessMetrics
from monitor.retry import Backoff
from monitor.sinks.queued import QueuedSink, SinkUnavailable
from monitor.sinks.webhook import Delivery, Outcome
from monitor.state import Outbox
from monitor.tracker import Record

log = structlog.get_logger(__name__)

#: States that fire an alert, with the alert name and severity they fire.
STATE_ALERTS = {
    "FAILED": ("FoundryDeploymentFailed", "critical"),
    "DEGRADED": ("FoundryDeploymentDegraded", "warning"),
}
UNREACHABLE_ALERT = ("FoundryDeploymentUnreachable", "warning")
NOT_FOUND_ALERT = ("FoundryDeploymentNotFound", "warning")
#: The name of the shipped rule on the same signal, so that Alertmanager groups the two.
ROLLOUT_ALERT = ("FoundryDeploymentRolloutStuck", "warning")
ALERT_NAMES = (
    *(name for name, _ in STATE_ALERTS.values()),
    UNREACHABLE_ALERT[0],
    NOT_FOUND_ALERT[0],
    ROLLOUT_ALERT[0],
)
SEVERITIES = dict((*STATE_ALERTS.values(), UNREACHABLE_ALERT, NOT_FOUND_ALERT, ROLLOUT_ALERT))

#: The port the sink reads the firing set from: the records as they stand now (this process's tracker, or,
#: in a replica set, the whole fleet's in the shared state).
CurrentRecords = Callable[[], Awaitable[Iterable[Record]]]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert about one deployment, as Alertmanager's v2 API takes it."""

    name: str
    rid: str
    deployment: str
    labels: tuple[tuple[str, str], ...]
    description: str
    starts_at: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.rid)

    def payload(self, *, ends_at: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "labels": {
                **dict(self.labels),
                "alertname": self.name,
                "severity": SEVERITIES[self.name],
                "rid": self.rid,
                "deployment": self.deployment,
                "source": "foundry-monitor",
            },
            "annotations": {
                "summary": f"{self.deployment}: {self.name.removeprefix('FoundryDeployment')}",
                "description": self.description,
            },
            "startsAt": _iso(self.starts_at),
        }
        if ends_at is not None:
            body["endsAt"] = _iso(ends_at)
        return body


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _state_text(rid: str, state: str | None, ready: bool | None) -> str:
    return f"{rid} is {state} (ready: {ready})."


def _unreachable_text(rid: str, failures: int | None, error: str | None) -> str:
    return f"{failures} consecutive polls of {rid} failed ({error})."


def _not_found_text(rid: str) -> str:
    return f"Foundry answers LiveDeploymentNotFound for {rid}."


def _rollout_text(rid: str, running: str | None, latest: str | None) -> str:
    return f"{rid} runs {running}, not its branch's newest model version {latest}."


def record_alerts(record: Record, now: float) -> list[Alert]:
    """The alerts ``record`` fires as it stands; ``now`` dates those the record cannot date."""
    target = record.target

    def alert(name: str, description: str, since: float) -> Alert:
        return Alert(name, target.rid, target.name, target.labels, description, since)

    alerts = []
    snapshot = record.snapshot
    if record.found is False:
        alerts.append(alert(NOT_FOUND_ALERT[0], _not_found_text(target.rid), now))
    elif snapshot is not None and snapshot.state in STATE_ALERTS:
        text = _state_text(target.rid, snapshot.state, snapshot.is_ready)
        alerts.append(alert(STATE_ALERTS[snapshot.state][0], text, record.last_change or now))
    if record.unreachable:
        text = _unreachable_text(target.rid, record.consecutive_failures, record.last_error)
        # Unreachable since the polls after the last answer began to fail.
        alerts.append(alert(UNREACHABLE_ALERT[0], text, record.last_success or now))
    lag = record.lag
    if lag is not None and lag.announced_at is not None and record.found is not False:
        running = None if snapshot is None else snapshot.model_version_rid
        text = _rollout_text(target.rid, running, lag.latest_version_rid)
        alerts.append(alert(ROLLOUT_ALERT[0], text, lag.announced_at))
    return alerts


def firing_alerts(records: Iterable[Record], now: float) -> dict[tuple[str, str], Alert]:
    """Every alert the records fire, by (alert name, RID)."""
    return {alert.key: alert for record in records for alert in record_alerts(record, now)}


def transitions(event: Event) -> tuple[list[Alert], list[Alert]]:
    """The alerts ``event`` starts and the ones it ends: it tells what the deployment moved from and to."""

    def alert(name: str, description: str) -> Alert:
        return Alert(name, event.rid, event.name, event.labels, description, event.time)

    state_text = _state_text(event.rid, event.new_state, event.ready)
    fired: list[Alert] = []
    resolved: list[Alert] = []
    kind = event.type
    if kind in (EventType.OBSERVED, EventType.CHANGED, EventType.RETURNED):
        # A return starts from no state alert: the deployment's going missing resolved it.
        old = None if kind is EventType.RETURNED else event.old_state
        if kind is EventType.RETURNED:
            resolved.append(alert(NOT_FOUND_ALERT[0], state_text))
        if event.new_state != old:
            if old in STATE_ALERTS:
                resolved.append(alert(STATE_ALERTS[old][0], state_text))
            if event.new_state in STATE_ALERTS:
                fired.append(alert(STATE_ALERTS[event.new_state][0], state_text))
    elif kind is EventType.UNREACHABLE:
        text = _unreachable_text(event.rid, event.consecutive_failures, event.error)
        fired.append(alert(UNREACHABLE_ALERT[0], text))
    elif kind is EventType.RECOVERED:
        resolved.append(alert(UNREACHABLE_ALERT[0], state_text))
    elif kind is EventType.NOT_FOUND:
        fired.append(alert(NOT_FOUND_ALERT[0], _not_found_text(event.rid)))
        if event.old_state in STATE_ALERTS:
            resolved.append(alert(STATE_ALERTS[event.old_state][0], _not_found_text(event.rid)))
    elif kind is EventType.VERSION_BEHIND:
        fired.append(
            alert(
                ROLLOUT_ALERT[0], _rollout_text(event.rid, event.model_version_rid, event.latest_version_rid)
            )
        )
    elif kind is EventType.VERSION_CAUGHT_UP:
        resolved.append(alert(ROLLOUT_ALERT[0], f"{event.rid} caught up with {event.latest_version_rid}."))
    elif kind is EventType.REMOVED:
        resolved.extend(alert(name, f"{event.rid} is no longer watched.") for name in ALERT_NAMES)
    return fired, resolved


class AlertmanagerSink(QueuedSink):
    """Posts firing and resolved alerts to ``{url}/api/v2/alerts``: the records' firing set at start and
    every ``resend_interval`` (from once ``loaded`` is set), and each event's transitions in outbox order."""

    def __init__(
        self,
        metrics: ProcessMetrics,
        outbox: Outbox,
        config: AlertmanagerConfig,
        *,
        session: aiohttp.ClientSession,
        records: CurrentRecords,
        loaded: anyio.Event,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        super().__init__(
            "alertmanager",
            metrics,
            outbox,
            queue_size=10_000,
            retry_initial=retry_initial,
            retry_max=retry_max,
        )
        endpoint = config.url.rstrip("/") + "/api/v2/alerts"
        self._delivery = Delivery(session, endpoint, config.timeout, config.max_retries)
        self._records = records
        self._loaded = loaded
        self._resend_interval = config.resend_interval
        self._resend_backoff = Backoff(retry_initial, min(retry_max, config.resend_interval))
        #: One post at a time, so that a firing set read from the records is never overtaken by an older
        #: transition, or the other way round.
        self._posting = anyio.Lock()
        #: What Alertmanager was last told fires, by (alert name, RID): sent resolved once it no longer does.
        self.sent: dict[tuple[str, str], Alert] = {}

    async def deliver(self, batch: Sequence[Event]) -> None:
        payload: list[dict[str, Any]] = []
        for event in batch:
            fired, resolved = transitions(event)
            payload.extend(alert.payload() for alert in fired)
            payload.extend(alert.payload(ends_at=event.time) for alert in resolved)
        if not payload:
            return
        async with self._posting:
            outcome = await self._post(payload)
        if outcome is Outcome.UNAVAILABLE:
            raise SinkUnavailable(0)  # the batch stays queued and unacknowledged: sent again later

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._resend_firing)
            await super().run(task_status=task_status)

    async def send_firing(self) -> bool:
        """Post what the records fire now, and as resolved what was sent before and fires no longer.

        False when Alertmanager could not be reached: nothing is forgotten, the next send repeats it all.
        """
        async with self._posting:
            now = time.time()
            firing = firing_alerts(await self._records(), now)
            payload = [alert.payload() for alert in firing.values()]
            payload.extend(
                alert.payload(ends_at=now) for key, alert in self.sent.items() if key not in firing
            )
            if payload and await self._post(payload) is Outcome.UNAVAILABLE:
                self._failed(len(payload), "receiver unavailable")
                return False
            self.sent = firing
            return True

    async def _resend_firing(self) -> None:
        # Records are restored as the watch set is loaded: a send before that would resolve them all.
        await self._loaded.wait()
        while True:
            if await self.send_firing():
                self._resend_backoff.succeeded()
                delay = self._resend_interval
            else:
                delay = self._resend_backoff.failed()
            await anyio.sleep(delay)

    async def _post(self, alerts: list[dict[str, Any]]) -> Outcome:
        data = json.dumps(alerts, separators=(",", ":")).encode()
        outcome = await self._delivery.post(
            data, {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        )
        if outcome is Outcome.REFUSED:
            # Alertmanager will not take this body, however often it is sent: counted and passed over.
            self._metrics.sink_failures.labels(self.name).inc()
            log.warning("alertmanager_refused_alerts", alerts=len(alerts))
        return outcome
