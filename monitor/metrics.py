"""The ``/metrics`` payload: process metrics (prometheus-client) plus the per-deployment families."""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition

from monitor import __version__
from monitor.demand import Demand
from monitor.exposition import DeploymentRenderer, latest_version_lines
from monitor.model import ModelVersion
from monitor.rollouts import BranchKey
from monitor.tracker import Tracker

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
BREAKER_STATES = ("closed", "open", "half_open")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ProcessMetrics:
    """Counters and histograms of the monitor process itself, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # ``*_created`` series double every counter's cardinality and carry no signal for alerting.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Gauge(
            "foundry_monitor_build_info", "Version of the monitor, value 1", ["version"], registry=r
        ).labels(__version__).set(1)
        self.deployments = Gauge("foundry_monitor_deployments", "Deployments being watched", registry=r)
        self.owned_deployments = Gauge(
            "foundry_monitor_owned_deployments",
            "Deployments this process watches: its partition's share of those configured and discovered",
            registry=r,
        )
        self.shard_info = Gauge(
            "foundry_monitor_shard_info",
            "This process's static shard, value 1 (absent without --shard)",
            ["shard", "total_shards"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "foundry_monitor_poll_duration_seconds",
            "Time a poll took, retries included",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.schedule_lag = Histogram(
            "foundry_monitor_schedule_lag_seconds",
            "How late a poll started after its scheduled time",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "foundry_monitor_requests",
            "HTTP requests sent to Foundry by answer code (timeout and connection when there was none)",
            ["code"],
            registry=r,
        )
        self._requests_by_code: dict[str, Counter] = {}
        self.events = Counter("foundry_monitor_events", "Events emitted by type", ["type"], registry=r)
        self.sink_failures = Counter(
            "foundry_monitor_sink_failures", "Event deliveries that failed, by sink", ["sink"], registry=r
        )
        self.sink_queue = Gauge(
            "foundry_monitor_sink_queue_length",
            "Events waiting for delivery in a sink's queue, by sink",
            ["sink"],
            registry=r,
        )
        self.sink_backlog = Gauge(
            "foundry_monitor_sink_outbox_backlog",
            "Events waiting in the outbox behind a sink's full queue (upper bound), by sink",
            ["sink"],
            registry=r,
        )
        self.sink_dropped = Counter(
            "foundry_monitor_sink_dropped_events",
            "Events dropped because a sink's queue was full, by sink",
            ["sink"],
            registry=r,
        )
        self.breaker = Gauge(
            "foundry_monitor_circuit_breaker_state",
            "1 for the upstream circuit breaker's current state",
            ["state"],
            registry=r,
        )
        self.discovery_errors = Counter(
            "foundry_monitor_discovery_errors",
            "Failed list calls of model discovery, by error kind",
            ["error"],
            registry=r,
        )
        self.version_list_errors = Counter(
            "foundry_monitor_version_list_errors",
            "Failed listings of a branch's model versions, by error kind",
            ["error"],
            registry=r,
        )
        self.list_errors = Counter(
            "foundry_monitor_list_errors",
            "Failed list requests of batched polling (their deployments fell back to GETs), by error kind",
            ["error"],
            registry=r,
        )
        self.demand_ratio = Gauge(
            "foundry_monitor_request_demand_ratio",
            "Requests the polling intervals ask for over what the request budget allows less the retries' "
            "reserve; above 1 the intervals are stretched",
            registry=r,
        )
        self.effective_interval = Gauge(
            "foundry_monitor_effective_interval_seconds",
            "The polling interval in force, stretched to fit the request budget, by cadence",
            ["cadence"],
            registry=r,
        )
        self.reload_ok = Gauge(
            "foundry_monitor_config_last_reload_successful",
            "1 when the last configuration reload was applied, 0 when it was refused",
            registry=r,
        )
        self.reload_time = Gauge(
            "foundry_monitor_config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration (re)load that was applied",
            registry=r,
        )
        self.config_hash = Gauge(
            "foundry_monitor_config_hash", "Hash of the live configuration, value 1", ["hash"], registry=r
        )
        self.database_up = Gauge(
            "foundry_monitor_database_up",
            "1 while the state database answers, 0 while it does not (as its last use found it)",
            registry=r,
        )
        self.database_errors = Counter(
            "foundry_monitor_database_errors",
            "Failed uses of the state database, by operation",
            ["operation"],
            registry=r,
        )
        self.state_buffered = Gauge(
            "foundry_monitor_state_buffered_events",
            "Events held in memory because the state database cannot be written",
            registry=r,
        )
        self.state_dropped = Counter(
            "foundry_monitor_state_dropped_events",
            "Held events dropped, oldest first, because state.buffer_events was exceeded",
            registry=r,
        )
        self.history_dropped = Counter(
            "foundry_monitor_status_history_dropped_rows",
            "Status history (change points, transitions) dropped, oldest first, while its database was down",
            registry=r,
        )
        self.database_up.set(1)
        self.set_breaker_state("closed")

        # Work sharing among replicas (issue 11's shared names; see the partition package).
        self.replicas = Gauge(
            "foundry_monitor_replicas", "Live replicas seen in the database (own included)", registry=r
        )
        self.unowned_deployments = Gauge(
            "foundry_monitor_unowned_deployments",
            "Deployments of the fleet that no live replica holds a lease on, as this replica sees it",
            registry=r,
        )
        self.leases_taken = Counter(
            "foundry_monitor_leases_taken",
            "Deployment leases this replica acquired from another (expired) owner or from nobody",
            registry=r,
        )
        self.leases_lost = Counter(
            "foundry_monitor_leases_lost",
            "Deployment leases this replica held and lost (expired, taken, or refused by the fence)",
            registry=r,
        )
        self.heartbeat_time = Gauge(
            "foundry_monitor_heartbeat_timestamp_seconds",
            "Unix time of this replica's last successful heartbeat",
            registry=r,
        )

    def config_loaded(self, digest: str, now: float) -> None:
        self.config_hash.clear()
        self.config_hash.labels(digest).set(1)
        self.reload_ok.set(1)
        self.reload_time.set(now)

    def show_demand(self, demand: Demand) -> None:
        self.demand_ratio.set(demand.ratio)
        self.effective_interval.labels("interval").set(demand.effective_interval)
        self.effective_interval.labels("fast_interval").set(demand.effective_fast_interval)

    def set_breaker_state(self, state: str) -> None:
        for name in BREAKER_STATES:
            self.breaker.labels(name).set(1 if name == state else 0)

    def request_done(self, code: str, seconds: float) -> None:
        """``RequestObserver`` for the client: counts every attempt by its answer code."""
        child = self._requests_by_code.get(code)
        if child is None:
            # Looking a labelled child up costs more than the increment: keep them (codes are few).
            child = self._requests_by_code[code] = self.requests.labels(code)
        child.inc()


@dataclass(frozen=True, slots=True)
class Scrape:
    """A ``/metrics`` answer: its headers, and its body as pieces to send one after the other."""

    content_type: str
    content_encoding: str | None
    body: Iterator[bytes]


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept


def wants_gzip(accept_encoding: str) -> bool:
    return any(part.split(";")[0].strip() == "gzip" for part in accept_encoding.split(","))


class MetricsView:
    """Renders the whole payload from the process metrics and the tracker, at scrape time."""

    def __init__(
        self,
        process: ProcessMetrics,
        tracker: Tracker,
        *,
        label_names: tuple[str, ...],
        staleness: float,
        latest: Callable[[], Mapping[BranchKey, ModelVersion]] = dict,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._process = process
        self._latest = latest
        self._tracker = tracker
        self._renderer = DeploymentRenderer(label_names)
        self._staleness = staleness
        self._clock = clock

    def set_label_names(self, label_names: tuple[str, ...]) -> None:
        self._renderer.set_label_names(label_names)

    def render(self, *, openmetrics: bool) -> str:
        """The whole payload as one text."""
        return "".join(self.chunks(openmetrics=openmetrics))

    def chunks(self, *, openmetrics: bool) -> Iterator[str]:
        """The payload in pieces; everything it shows is taken at the call, before the first piece."""
        self._process.deployments.set(len(self._tracker))
        if openmetrics:
            om_bytes: bytes = om_exposition.generate_latest(self._process.registry)  # type: ignore[no-untyped-call]
            head = om_bytes.decode().removesuffix("# EOF\n")
        else:
            head = text_exposition.generate_latest(self._process.registry).decode()
        rows = self._renderer.capture(self._tracker, now=self._clock(), staleness=self._staleness)
        branches = latest_version_lines(self._latest(), openmetrics)
        return itertools.chain(
            (head,),
            self._renderer.chunks(rows, openmetrics),
            (branches,),
            ("# EOF\n",) if openmetrics else (),
        )

    def scrape(self, *, accept: str = "", accept_encoding: str = "") -> Scrape:
        """The answer for a scrape with these request headers: format and compression negotiated."""
        openmetrics = wants_openmetrics(accept)
        content_type = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
        pieces = (chunk.encode() for chunk in self.chunks(openmetrics=openmetrics))
        if wants_gzip(accept_encoding):
            return Scrape(content_type, "gzip", _gzipped(pieces))
        return Scrape(content_type, None, pieces)


def _gzipped(pieces: Iterator[bytes]) -> Iterator[bytes]:
    # Level 1: the text is so repetitive that it shrinks ~30x anyway, at a fraction of the CPU of level 6.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for piece in pieces:
        if compressed := compressor.compress(piece):
            yield compressed
    yield compressor.flush()
