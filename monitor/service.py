"""The running service: one anyio task group holding the HTTP server, sinks, discovery and the scheduler."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from monitor.allocator import release_free_memory
from monitor.auth import ClientCredentials, StaticToken, TokenFile, TokenSource
from monitor.breaker import CircuitBreaker
from monitor.budget import RequestBudget
from monitor.client import FoundryClient, open_session, session_scope, ssl_context
from monitor.config import Config, ConfigError, FoundryConfig, config_hash, load_config
from monitor.decode import Decoder
from monitor.demand import listings_per_second
from monitor.discovery import discover_origin
from monitor.formats import cloudevents_source
from monitor.journal import Journal
from monitor.metrics import MetricsView, ProcessMetrics
from monitor.partition import EVERYTHING, Partition, Shard
from monitor.records import StoredRecords, stored_records
from monitor.rollouts import Rollouts
from monitor.scheduler import DeploymentReader, EventPublisher, Scheduler
from monitor.sinks import AlertmanagerSink, EventBus, FileSink, QueuedSink, StreamSink, WebhookSink
from monitor.sinks.alertmanager import CurrentRecords
from monitor.state import DatabaseHealth, Outbox, State, WatchedState, state_for
from monitor.status.routes import add_status_routes
from monitor.status.writer import HistoryWriter, Tap
from monitor.tracker import Record, Tracker
from monitor.versionpoller import VersionPoller
from monitor.watchset import WatchSet
from monitor.web import BasicAuth, Endpoints, serve_http, server_ssl_context

if TYPE_CHECKING:
    from monitor.partition.leased import LeasedPartition

log = structlog.get_logger(__name__)

#: How long shutdown may spend delivering queued events.
DRAIN_SECONDS = 5.0
#: How often a sink delivering for a replica set reads the shared outbox for the others' events.
SHARED_OUTBOX_READS = 0.5


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

    tls = ssl_context(ca_bundle=config.tls.ca_bundle, insecure_skip_verify=config.tls.insecure_skip_verify)
    session = open_session(timeouts=config.timeouts, ssl_setting=tls, limit=concurrency)
    async with session_scope(session):
        yield FoundryClient(
            session=session,
            base_url=config.base_url,
            tokens=token_source(config, session, USER_AGENT),
            decoder=Decoder(digest_key or secrets.token_bytes(32)),
            retry=config.retries,
            max_body_bytes=config.max_body_bytes,
            gate=budget,
            observer=metrics,
        )


def scheduler_for(
    config: Config,
    *,
    reader: DeploymentReader,
    tracker: Tracker,
    bus: EventPublisher,
    metrics: ProcessMetrics,
) -> Scheduler:
    """The scheduler the configuration's polling section asks for."""
    polling = config.polling
    return Scheduler(
        reader=reader,
        tracker=tracker,
        bus=bus,
        metrics=metrics,
        breaker=CircuitBreaker(polling.breaker),
        cadence=polling,
        concurrency=polling.concurrency,
        discovery_per_second=listings_per_second(config.discover),
    )


@dataclass(slots=True)
class Running:
    """Handles on a started service, for the CLI's banner and for tests."""

    port: int
    tracker: Tracker
    scheduler: Scheduler
    bus: EventBus
    metrics: ProcessMetrics


class Service:
    """Everything the ``run`` command starts, wired from one validated ``Config`` (and its ``shard``)."""

    def __init__(self, config: Config, *, shard: Shard | None = None) -> None:
        self.config = config
        self.shard = shard
        self._reloader: Reloader | None = None

    async def reload(self, path: str | None = None) -> bool:
        """Re-read the configuration (``path``, else the file it came from) and apply it if valid."""
        if self._reloader is None:
            return False
        return await self._reloader.reload(path or self.config.source)

    def _sinks(
        self,
        metrics: ProcessMetrics,
        webhook_session: aiohttp.ClientSession,
        outbox: Outbox,
        firing: CurrentRecords,
        loaded: anyio.Event,
    ) -> list[QueuedSink]:
        """Every configured sink, each delivering from its own cursor in ``outbox``; the Alertmanager sink
        reads what fires from ``firing`` once ``loaded`` (the watch set, records restored) is set."""
        sinks_config = self.config.sinks
        source = cloudevents_source(self.config.foundry.base_url)

        sinks: list[QueuedSink] = []
        if (stdout := sinks_config.stdout) is not None:
            sinks.append(StreamSink(metrics, outbox, stdout, source=source))
        if (file := sinks_config.file) is not None:
            sinks.append(FileSink(metrics, outbox, file, source=source))
        for index, hook in enumerate(sinks_config.webhooks):
            sinks.append(
                WebhookSink(metrics, outbox, hook, session=webhook_session, index=index, source=source)
            )
        if (am := sinks_config.alertmanager) is not None:
            sinks.append(
                AlertmanagerSink(metrics, outbox, am, session=webhook_session, records=firing, loaded=loaded)
            )
        return sinks

    async def run(self, *, task_status: TaskStatus[Running] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; on the way out, write the state and drain the sinks, within bounds."""
        config = self.config
        polling = config.polling
        metrics = ProcessMetrics()
        metrics.config_loaded(config_hash(config), time.time())
        health = DatabaseHealth(metrics)
        shard = self.shard
        state = config.state if shard is None else shard.state(config.state)
        if shard is not None:
            metrics.shard_info.labels(str(shard.index), str(shard.total)).set(1)
            log.info("static_shard", shard=shard.index, total_shards=shard.total, state_path=state.path)
        backend = state_for(state)
        store = WatchedState(backend, health)
        loaded = await store.open()
        stored = StoredRecords(loaded.records)
        tracker = Tracker(unreachable_after=polling.unreachable_after, restore=stored.claim)
        budget = RequestBudget(
            requests_per_second=polling.requests_per_second, concurrency=polling.concurrency
        )
        async with AsyncExitStack() as stack:
            stack.push_async_callback(store.close)
            client = await stack.enter_async_context(
                foundry_client(
                    config.foundry,
                    metrics=metrics,
                    budget=budget,
                    concurrency=polling.concurrency,
                    digest_key=loaded.digest_key,
                )
            )
            webhook_session = await stack.enter_async_context(session_scope(aiohttp.ClientSession()))
            history = HistoryWriter(store.history, tracker, metrics=metrics)
            await history.open()
            watch_set_loaded = anyio.Event()
            firing = _tracked(tracker)
            partition: Partition = shard or EVERYTHING
            leased = None
            # Replicas share a PostgreSQL database; the driver is imported only then (3 MB of RSS).
            replicated = shard is None and config.state.backend == "postgres"
            if replicated:
                firing = _fleet_records(backend)
            sinks = self._sinks(metrics, webhook_session, store, firing, watch_set_loaded)
            if replicated:
                partition = leased = _leased(backend, config, stored, health, metrics, sinks)
                # After the journal's last write and the sinks' drain, before the store closes.
                stack.push_async_callback(leased.leave)
            bus = EventBus(sinks, metrics, keep=config.sinks.events_buffer)
            journal = Journal(
                store,
                tracker,
                bus,
                health=health,
                buffer_events=config.state.buffer_events,
                retention=config.state.retention,
            )
            events = Tap(journal, history)
            scheduler = scheduler_for(config, reader=client, tracker=tracker, bus=events, metrics=metrics)
            rollouts = Rollouts(grace=polling.rollout_grace)
            versions = VersionPoller(
                lister=client,
                tracker=tracker,
                rollouts=rollouts,
                bus=events,
                metrics=metrics,
                interval=polling.versions_interval,
                jitter=polling.jitter,
            )
            view = MetricsView(
                metrics,
                tracker,
                label_names=config.label_names,
                staleness=polling.staleness,
                latest=lambda: rollouts.latest,
            )
            watched = WatchSet(lister=client, watcher=scheduler, metrics=metrics, partition=partition)
            server = config.server
            endpoints = Endpoints(
                view=view,
                tracker=tracker,
                bus=bus,
                ready=scheduler.first_round_done.is_set,
                database=health,
                auth=BasicAuth(dict(server.basic_auth)) if server.basic_auth else None,
                after_scrape=release_free_memory,
            )
            app = endpoints.app()
            add_status_routes(app, tracker=tracker, history=history)
            try:
                tls = server.tls
                ssl_context = server_ssl_context(tls.cert_file, tls.key_file) if tls else None
                async with anyio.create_task_group() as tg:
                    port = await tg.start(
                        lambda task_status: serve_http(
                            app,
                            host=server.host,
                            port=server.port,
                            ssl_context=ssl_context,
                            task_status=task_status,
                        )
                    )
                    # Each sink reads what the last run did not deliver before it is offered anything new.
                    for sink in sinks:
                        if leased is None:
                            await tg.start(sink.run)
                        else:
                            tg.start_soon(leased.deliver, sink)  # while this replica holds its lease
                    await tg.start(journal.run)
                    await tg.start(history.run)
                    # Static deployments and discovery's first listing come before the first round.
                    listed = await watched.apply(config, tg)
                    _release_leftovers(
                        stored, config, journal, watched, all_listed=listed, shared=leased is not None
                    )
                    if leased is not None:
                        stored.drop_unclaimed()  # other replicas' records, read again when taken over
                        await tg.start(leased.run)
                    watch_set_loaded.set()
                    await tg.start(scheduler.run)
                    tg.start_soon(_release_after, scheduler.first_round_done)
                    await tg.start(versions.run)
                    self._reloader = Reloader(self, watched, view, metrics, tg, scheduler)
                    task_status.started(Running(port, tracker, scheduler, bus, metrics))
            finally:
                await history.close()
                await journal.close()
                await _drain([s for s in sinks if leased is None or leased.delivers(s.name)])


def _leased(
    store: State,
    config: Config,
    stored: StoredRecords,
    health: DatabaseHealth,
    metrics: ProcessMetrics,
    sinks: Sequence[QueuedSink],
) -> LeasedPartition:
    """Replicas sharing the database share the fleet and the sinks through leases; the writes are fenced."""
    from monitor.partition.leased import LeasedPartition, replica_id
    from monitor.state.postgres import PostgresState

    assert isinstance(store, PostgresState)
    partition = store.fence = LeasedPartition(
        store.leases,
        read=store.records,
        hand_over=stored.offer,
        replica=replica_id(),
        health=health,
        metrics=metrics,
        sinks=[sink.name for sink in sinks],
        lease=config.state.lease,
        heartbeat=config.state.heartbeat,
    )
    for sink in sinks:
        sink.follow_shared_outbox(SHARED_OUTBOX_READS)
    return partition


def _tracked(tracker: Tracker) -> CurrentRecords:
    """This process's records: it watches the whole fleet."""

    async def current() -> Iterable[Record]:
        return tracker

    return current


def _fleet_records(store: State) -> CurrentRecords:
    """The whole fleet's records in the shared state, whichever replica watches each deployment."""
    from monitor.state.postgres import PostgresState

    assert isinstance(store, PostgresState)

    async def current() -> Iterable[Record]:
        return stored_records(await store.records())

    return current


async def _release_after(done: anyio.Event) -> None:
    """Once ``done``, give back what the burst before it freed (a fleet's first round: every answer parsed,
    every record written)."""
    await done.wait()
    await anyio.to_thread.run_sync(release_free_memory)


async def _drain(sinks: Sequence[QueuedSink]) -> None:
    with anyio.CancelScope(shield=True):
        for sink in sinks:
            await sink.drain(DRAIN_SECONDS / max(1, len(sinks)))


def _release_leftovers(
    stored: StoredRecords,
    config: Config,
    journal: Journal,
    watched: WatchSet,
    *,
    all_listed: bool,
    shared: bool = False,
) -> None:
    """Deployments the last run watched that this configuration no longer names: ``deployment.removed``,
    written with the deletion of their records.

    One that came from a model still under ``discover`` waits while that model could not be listed. One
    still named but another shard's now (the shard count changed) is forgotten without an event, since its
    new shard reports it. In a replica set (``shared``) one still named is another replica's, or will be
    taken over by one: its record stays.
    """
    discovered = {discover_origin(entry.model_rid, entry.branch) for entry in config.discover}
    now = time.time()
    for rid in stored.unclaimed():
        if watched.candidate(rid):
            if not shared:
                stored.forget(rid)
                journal.publish([], forget=[rid])
            continue
        origin = stored.origin(rid)
        if origin in discovered and not all_listed:
            continue
        event = stored.release(rid, now)
        journal.publish([] if event is None else [event], forget=[rid])


#: Sections that a reload cannot change in a running process: a change there asks for a restart.
_RESTART_SECTIONS = ("foundry", "polling", "server", "sinks", "state", "logging")


class Reloader:
    """Applies a new configuration to a running service, or keeps the old one when the new is invalid."""

    def __init__(
        self,
        service: Service,
        watched: WatchSet,
        view: MetricsView,
        metrics: ProcessMetrics,
        tg: TaskGroup,
        scheduler: Scheduler,
    ) -> None:
        self._service = service
        self._scheduler = scheduler
        self._watched = watched
        self._view = view
        self._metrics = metrics
        self._tg = tg

    async def reload(self, path: str) -> bool:
        """Load ``path``; if valid, add and remove deployments without a restart."""
        try:
            new = await anyio.to_thread.run_sync(load_config, path)
        except ConfigError as exc:
            self._metrics.reload_ok.set(0)
            # The problems say it all; a traceback would only add noise.
            log.error("config_reload_refused", path=path, problems=list(exc.problems))  # noqa: TRY400
            return False
        old = self._service.config
        for section in _RESTART_SECTIONS:
            if getattr(old, section) != getattr(new, section):
                log.warning("config_section_needs_restart", section=section)
        self._view.set_label_names(new.label_names)
        await self._watched.apply(new, self._tg)
        self._service.config = new
        self._metrics.config_loaded(config_hash(new), time.time())
        log.info("config_reloaded", path=path, deployments=len(new.deployments), discover=len(new.discover))
        self._scheduler.discovery_per_second = listings_per_second(new.discover)
        self._scheduler.weigh_demand(announce=True)
        return True


async def run_until_signalled(service: Service, *, watch_interval: float = 2.0) -> int:
    """Run ``service`` until SIGTERM or SIGINT (then stop polling, drain sinks and return 0).

    SIGHUP, or a change of the configuration file, reloads the configuration.
    """
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as received:
                async for signum in received:
                    if signum == signal.SIGHUP:
                        log.info("reload_requested", signal="SIGHUP")
                        await service.reload()
                        continue
                    log.info("shutting_down", signal=signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch_signals)
        running = await tg.start(service.run)
        tg.start_soon(_watch_file, service, watch_interval)
        log.info(
            "monitor_started",
            pid=os.getpid(),
            deployments=len(running.tracker),
            metrics=f"http://{service.config.server.host}:{running.port}/metrics",
        )
    return 0


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def _watch_file(service: Service, interval: float) -> None:
    """Reload when the configuration file changes (a ConfigMap update swaps the file's inode)."""
    path = service.config.source
    seen = await anyio.to_thread.run_sync(_identity, path)
    while True:
        await anyio.sleep(interval)
        current = await anyio.to_thread.run_sync(_identity, path)
        if current is not None and current != seen:
            seen = current
            log.info("reload_requested", reason="config file changed")
            await service.reload(path)
