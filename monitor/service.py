"""The running service: one anyio task group holding the HTTP server, sinks, discovery and the scheduler."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from monitor.alertmanager import AlertmanagerSink
from monitor.auth import ClientCredentials, StaticToken, TokenFile, TokenSource
from monitor.breaker import BreakerSettings, CircuitBreaker
from monitor.budget import RequestBudget
from monitor.client import FoundryClient, Timeouts, open_session, session_scope, ssl_context
from monitor.config import Config, FoundryConfig
from monitor.decode import Decoder
from monitor.discovery import Discovery
from monitor.metrics import MetricsView, ProcessMetrics
from monitor.retry import RetryPolicy
from monitor.scheduler import Cadence, Scheduler
from monitor.sinks import EventBus, FileSink, QueuedSink, StreamSink, WebhookSink
from monitor.tracker import Target, Tracker
from monitor.web import BasicAuth, Endpoints, serve_http, server_ssl_context

log = structlog.get_logger(__name__)

#: How long shutdown may spend delivering queued events.
DRAIN_SECONDS = 5.0


def token_source(config: FoundryConfig, session: aiohttp.ClientSession, user_agent: str) -> TokenSource:
    """The token source the configuration asks for."""
    auth = config.auth
    if auth.method == "client_credentials":
        assert auth.client_id is not None
        assert auth.client_secret is not None
        return ClientCredentials(
            session,
            token_url=auth.token_url,
            client_id=auth.client_id,
            client_secret=auth.client_secret,
            scope=auth.scope,
            user_agent=user_agent,
        )
    if auth.method == "token_file":
        assert auth.token_file is not None
        return TokenFile(auth.token_file)
    assert auth.token is not None
    return StaticToken(auth.token)


@asynccontextmanager
async def foundry_client(
    config: FoundryConfig,
    *,
    metrics: ProcessMetrics | None = None,
    budget: RequestBudget | None = None,
    concurrency: int = 100,
    digest_key: bytes | None = None,
) -> AsyncIterator[FoundryClient]:
    """A client and its one session, closed (bounded) on exit."""
    from monitor import USER_AGENT

    timeouts = Timeouts(
        connect=config.timeouts.connect, read=config.timeouts.read, total=config.timeouts.total
    )
    tls = ssl_context(ca_bundle=config.tls.ca_bundle, insecure_skip_verify=config.tls.insecure_skip_verify)
    session = open_session(timeouts=timeouts, ssl_setting=tls, limit=concurrency)
    async with session_scope(session):
        retries = config.retries
        yield FoundryClient(
            session=session,
            base_url=config.base_url,
            tokens=token_source(config, session, USER_AGENT),
            decoder=Decoder(digest_key or secrets.token_bytes(32)),
            retry=RetryPolicy(
                attempts=retries.attempts,
                backoff_initial=retries.backoff_initial,
                backoff_max=retries.backoff_max,
                retry_after_max=retries.retry_after_max,
            ),
            max_body_bytes=config.max_body_bytes,
            gate=budget,
            observer=metrics,
        )


def static_targets(config: Config) -> list[Target]:
    return [Target(rid=d.rid, name=d.name, labels=d.labels) for d in config.deployments]


@dataclass(slots=True)
class Running:
    """Handles on a started service, for the CLI's banner and for tests."""

    port: int
    tracker: Tracker
    scheduler: Scheduler
    bus: EventBus
    metrics: ProcessMetrics


class Service:
    """Everything the ``run`` command starts, wired from one validated ``Config``."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def _sinks(self, metrics: ProcessMetrics, webhook_session: aiohttp.ClientSession) -> list[QueuedSink]:
        sinks_config = self.config.sinks
        sinks: list[QueuedSink] = []
        if sinks_config.stdout:
            sinks.append(StreamSink(metrics))
        if sinks_config.file_path is not None:
            sinks.append(FileSink(metrics, sinks_config.file_path))
        for index, hook in enumerate(sinks_config.webhooks):
            sinks.append(
                WebhookSink(
                    metrics,
                    url=hook.url,
                    session=webhook_session,
                    index=index,
                    headers=hook.headers,
                    timeout=hook.timeout,
                    queue_size=hook.queue_size,
                    max_retries=hook.max_retries,
                )
            )
        if sinks_config.alertmanager is not None:
            am = sinks_config.alertmanager
            sinks.append(
                AlertmanagerSink(
                    metrics,
                    url=am.url,
                    session=webhook_session,
                    resend_interval=am.resend_interval,
                    timeout=am.timeout,
                    max_retries=am.max_retries,
                )
            )
        return sinks

    async def run(self, *, task_status: TaskStatus[Running] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; on the way out, drain the sinks within ``DRAIN_SECONDS``."""
        config = self.config
        polling = config.polling
        metrics = ProcessMetrics()
        tracker = Tracker(unreachable_after=polling.unreachable_after)
        budget = RequestBudget(
            requests_per_second=polling.requests_per_second, concurrency=polling.concurrency
        )
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                foundry_client(
                    config.foundry, metrics=metrics, budget=budget, concurrency=polling.concurrency
                )
            )
            webhook_session = await stack.enter_async_context(session_scope(aiohttp.ClientSession()))
            sinks = self._sinks(metrics, webhook_session)
            bus = EventBus(sinks, metrics, keep=config.sinks.events_buffer)
            breaker_config = polling.breaker
            scheduler = Scheduler(
                reader=client,
                tracker=tracker,
                bus=bus,
                metrics=metrics,
                breaker=CircuitBreaker(
                    BreakerSettings(
                        failure_ratio=breaker_config.failure_ratio,
                        min_polls=breaker_config.min_polls,
                        window=breaker_config.window,
                        cooldown=breaker_config.cooldown,
                    )
                ),
                cadence=Cadence(
                    interval=polling.interval,
                    fast_interval=polling.fast_interval,
                    jitter=polling.jitter,
                    error_backoff_max=polling.error_backoff_max,
                ),
                concurrency=polling.concurrency,
            )
            for target in static_targets(config):
                scheduler.add(target)
            pinned = {d.rid for d in config.deployments}
            discoveries = [
                Discovery(
                    lister=client,
                    follower=scheduler,
                    metrics=metrics,
                    model_rid=entry.model_rid,
                    branch=entry.branch,
                    labels=entry.labels,
                    interval=entry.interval,
                    pinned=pinned.__contains__,
                )
                for entry in config.discover
            ]
            view = MetricsView(metrics, tracker, label_names=config.label_names, staleness=polling.staleness)
            server = config.server
            endpoints = Endpoints(
                view=view,
                tracker=tracker,
                bus=bus,
                ready=scheduler.first_round_done.is_set,
                auth=BasicAuth(dict(server.basic_auth)) if server.basic_auth else None,
            )
            try:
                async with anyio.create_task_group() as tg:
                    port = await tg.start(
                        lambda task_status: serve_http(
                            endpoints.app(),
                            host=server.host,
                            port=server.port,
                            ssl_context=server_ssl_context(server.tls_cert_file, server.tls_key_file),
                            task_status=task_status,
                        )
                    )
                    for sink in sinks:
                        await tg.start(sink.run)
                    # Discovery's first listing comes before the first round counts as done.
                    await _first_discovery(discoveries, tg)
                    await tg.start(scheduler.run, tg)
                    task_status.started(Running(port, tracker, scheduler, bus, metrics))
            finally:
                await _drain(sinks)


async def _first_discovery(discoveries: Sequence[Discovery], tg: TaskGroup) -> None:
    for discovery in discoveries:
        await discovery.refresh()
        tg.start_soon(discovery.run)


async def _drain(sinks: Sequence[QueuedSink]) -> None:
    with anyio.CancelScope(shield=True):
        for sink in sinks:
            await sink.drain(DRAIN_SECONDS / max(1, len(sinks)))


async def run_until_signalled(service: Service) -> int:
    """Run ``service`` until SIGTERM or SIGINT; then stop polling, drain sinks and return 0."""
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for signum in received:
                    log.info("shutting_down", signal=signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch_signals)
        running = await tg.start(service.run)
        log.info(
            "monitor_started",
            pid=os.getpid(),
            deployments=len(running.tracker),
            metrics=f"http://{service.config.server.host}:{running.port}/metrics",
        )
    return 0
