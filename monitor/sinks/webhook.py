"""The webhook sink, and the delivery of a body to a URL with retries that it shares with Alertmanager's."""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import anyio
import structlog
from yarl import URL

from monitor import USER_AGENT
from monitor.config import WebhookConfig
from monitor.events import Event
from monitor.formats import DEFAULT_SOURCE
from monitor.metrics import ProcessMetrics
from monitor.retry import backoff_ceiling
from monitor.sinks.queued import QueuedSink, SinkUnavailable
from monitor.state import Outbox

log = structlog.get_logger(__name__)


class Outcome(enum.Enum):
    """How a delivery ended."""

    DELIVERED = "delivered"
    #: The receiver answered 4xx (but 408/429): this body will never be taken.
    REFUSED = "refused"
    #: Errors or 5xx through the last retry: worth sending again later.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Delivery:
    """POSTs a body to one URL, retrying failures with capped, fully jittered backoff."""

    session: aiohttp.ClientSession
    url: str
    timeout: float = 5.0
    max_retries: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    async def post(self, data: bytes, headers: Mapping[str, str]) -> Outcome:
        """Whether the receiver accepted ``data``, refused it for good, or could not be reached in time."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        for attempt in range(self.max_retries + 1):
            try:
                async with self.session.post(
                    self.url, data=data, headers=headers, timeout=timeout
                ) as response:
                    if response.status < 300:
                        return Outcome.DELIVERED
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        return Outcome.REFUSED
                    reason = f"status {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            if attempt < self.max_retries:
                ceiling = backoff_ceiling(self.backoff_initial, self.backoff_max, attempt + 1)
                log.debug("delivery_retry", url_host=URL(self.url).host, reason=reason, attempt=attempt + 1)
                await anyio.sleep(random.uniform(0, ceiling))
        return Outcome.UNAVAILABLE


class WebhookSink(QueuedSink):
    """POSTs each event as JSON, one per request (chat and ticket receivers take one object), in order,
    retrying with capped, jittered backoff up to ``max_retries`` times; after that the event waits and
    delivery resumes from it ``retry_initial``..``retry_max`` later. An event the receiver refuses with a
    4xx (but 408/429) is counted as failed and passed over."""

    def __init__(
        self,
        metrics: ProcessMetrics,
        outbox: Outbox,
        config: WebhookConfig,
        *,
        session: aiohttp.ClientSession,
        index: int = 0,
        source: str = DEFAULT_SOURCE,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        super().__init__(
            f"webhook[{index}]",
            metrics,
            outbox,
            queue_size=config.queue_size,
            retry_initial=retry_initial,
            retry_max=retry_max,
            output=config,
            source=source,
        )
        content_type = self._formatter.content_type()
        self._headers = {"Content-Type": content_type, "User-Agent": USER_AGENT, **dict(config.headers)}
        self._delivery = Delivery(
            session, config.url, config.timeout, config.max_retries, backoff_initial, backoff_max
        )

    async def deliver(self, batch: Sequence[Event]) -> None:
        for index, event in enumerate(batch):
            data = self._formatter.encoded(event)
            outcome = await self._delivery.post(data, self._headers)
            if outcome is Outcome.UNAVAILABLE:
                raise SinkUnavailable(index)
            if outcome is Outcome.REFUSED:
                # Sending it again would be refused again: counted, logged and passed over.
                self._metrics.sink_failures.labels(self.name).inc()
                log.warning("webhook_refused_event", sink=self.name, event_id=event.event_id)
