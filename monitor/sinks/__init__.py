"""Event sinks, each delivering from its own outbox cursor (``queued``): JSON lines to a stream or a file,
webhooks, and Alertmanager; and the bus that offers them every event once it is in the outbox."""

from __future__ import annotations

from monitor.sinks.alertmanager import AlertmanagerSink
from monitor.sinks.bus import EventBus, Sink
from monitor.sinks.file import FileSink
from monitor.sinks.queued import QueuedSink, SinkUnavailable
from monitor.sinks.stream import StreamSink
from monitor.sinks.webhook import Delivery, Outcome, WebhookSink

__all__ = [
    "AlertmanagerSink",
    "Delivery",
    "EventBus",
    "FileSink",
    "Outcome",
    "QueuedSink",
    "Sink",
    "SinkUnavailable",
    "StreamSink",
    "WebhookSink",
]
