"""Tests for monitor.sinks: delivery from each sink's outbox cursor, the stream, file and webhook sinks, and
the event bus. The outbox is the in-memory backend of the same port the SQLite file implements."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from monitor.config.model import FileSinkConfig, StdoutConfig, WebhookConfig
from monitor.events import Event, EventType
from monitor.formats import CLOUDEVENT, EventFormat, Formatter, cloudevents_source
from monitor.metrics import ProcessMetrics
from monitor.shaping import FlapMode
from monitor.sinks import EventBus, FileSink, StreamSink, WebhookSink
from monitor.state import DatabaseHealth, MemoryState, SqliteState, WatchedState, opened

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"


def sample(metrics: ProcessMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def event(sequence: int) -> Event:
    return Event(EventType.CHANGED, RID, "scorer", (), 1000.0 + sequence, sequence, "ACTIVE", "FAILED")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


async def append(outbox: MemoryState, events: list[Event]) -> list[Event]:
    """``events`` written to ``outbox``, as the journal hands them on: with their outbox seq."""
    seqs = await outbox.append([e.to_json() for e in events])
    return [dataclasses.replace(e, outbox_seq=seq) for e, seq in zip(events, seqs, strict=True)]


async def acknowledged(outbox: MemoryState, sink: str, timeout: float = 5.0) -> None:
    """Wait until ``sink``'s cursor is at the end of the outbox."""
    with anyio.fail_after(timeout):
        while await outbox.pending(sink):
            await anyio.sleep(0.005)


class Receiver:
    """A webhook receiver on loopback that fails the first ``fail_first`` POSTs with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, object]] = []
        self.attempts = 0
        self.fail_first = fail_first

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=503)
        self.bodies.append(await request.json())
        return web.Response(status=204)


@asynccontextmanager
async def serving(handle: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """A webhook receiver on loopback answering with ``handle``; yields its URL."""
    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver(fail_first=2)
    async with serving(hook.handle) as url:
        yield hook, url


async def test_stream_sink_writes_one_json_line_per_event(outbox: MemoryState) -> None:
    """Events become JSON lines in order."""
    stream = io.StringIO()
    sink = StreamSink(ProcessMetrics(), outbox, stream=stream)
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        for item in await append(outbox, [event(i) for i in range(3)]):
            sink.offer(item)
        await until(lambda: stream.getvalue().count("\n") == 3)
        tg.cancel_scope.cancel()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["sequence"] for line in lines] == [0, 1, 2]
    assert lines[0]["type"] == "deployment.changed"


class BlockedStream(io.StringIO):
    """A stream whose writes wait (in whatever thread makes them) until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.go_on = threading.Event()
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.writing.set()
        # Bounded: on code that writes from the event loop, the test fails instead of hanging.
        self.go_on.wait(timeout=2)
        self.written.set()
        return super().write(text)


async def test_a_stream_that_blocks_does_not_stall_the_event_loop(outbox: MemoryState) -> None:
    """Writes happen in a worker thread: while one waits on the stream, other tasks go on running."""
    stream = BlockedStream()
    sink = StreamSink(ProcessMetrics(), outbox, stream=stream)
    ticks = 0
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        for item in await append(outbox, [event(1)]):
            sink.offer(item)
        with anyio.fail_after(5):
            while not stream.writing.is_set():
                await anyio.sleep(0.005)
        started = ticks
        with anyio.fail_after(4):
            while ticks < started + 10:
                await anyio.sleep(0.001)
                ticks += 1
        assert not stream.written.is_set(), "the loop only ran again once the write was over"
        stream.go_on.set()
        await acknowledged(outbox, "stdout")
        tg.cancel_scope.cancel()
    assert json.loads(stream.getvalue())["sequence"] == 1


async def test_file_sink_appends(tmp_path: Path, outbox: MemoryState) -> None:
    """The file sink appends lines and creates the directory."""
    path = tmp_path / "sub" / "events.jsonl"
    sink = FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path)))
    sink.offer(event(1))
    sink.offer(event(2))
    await sink.drain(5.0)
    assert [json.loads(line)["sequence"] for line in path.read_text().splitlines()] == [1, 2]


async def test_a_sink_starts_with_what_it_had_not_acknowledged(outbox: MemoryState) -> None:
    """At start a sink reads the outbox after its own cursor: the events the last run did not deliver
    arrive first, once, in order, before anything offered since; another sink's cursor is its own."""
    written = await append(outbox, [event(i) for i in range(1, 5)])
    await outbox.acknowledge("stdout", written[1].outbox_seq)
    await outbox.acknowledge("other", written[3].outbox_seq)
    stream = io.StringIO()
    sink = StreamSink(ProcessMetrics(), outbox, stream=stream)
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        for item in await append(outbox, [event(5)]):
            sink.offer(item)
        sink.offer(written[3])  # offered again (as after a flush that failed half-way): not written twice
        await acknowledged(outbox, "stdout")
        tg.cancel_scope.cancel()
    assert [json.loads(line)["sequence"] for line in stream.getvalue().splitlines()] == [3, 4, 5]


async def test_the_file_sink_does_not_write_again_what_it_wrote_before_a_crash(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """Events on the file but never acknowledged (a crash between the write and the acknowledgement) are
    skipped at start; the rest follows them once, and the cursor ends past all of them."""
    path = tmp_path / "events.jsonl"
    written = await append(outbox, [event(i) for i in range(1, 4)])
    path.write_text("".join(json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in written[:2]))
    sink = FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path)))
    await sink.drain(5.0)
    assert [json.loads(line)["sequence"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert await outbox.pending("file") == []


async def test_events_the_file_already_has_are_acknowledged_though_nothing_is_written(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """When every unacknowledged event is on the file already, the cursor still moves past them."""
    path = tmp_path / "events.jsonl"
    written = await append(outbox, [event(1), event(2)])
    path.write_text("".join(json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in written))
    sink = FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path)))
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        await acknowledged(outbox, "file")
        tg.cancel_scope.cancel()
    assert len(path.read_text().splitlines()) == 2


async def test_a_cursor_the_database_refuses_lags_and_is_written_once_it_answers(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """The outbox stops answering after two events reached it: the file sink still writes them, its
    acknowledgements fail (counted under ``cursor``) without stopping it, and once the outbox answers again
    the cursor moves past them; nothing is written twice."""
    metrics = ProcessMetrics()
    watched = WatchedState(outbox, DatabaseHealth(metrics))
    path = tmp_path / "events.jsonl"
    sink = FileSink(metrics, watched, FileSinkConfig(path=str(path)))
    errors = {"operation": "cursor"}
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        written = await append(outbox, [event(1), event(2)])
        outbox.reachable = False
        for item in written:
            sink.offer(item)
        await until(lambda: (sample(metrics, "foundry_monitor_database_errors_total", errors) or 0) >= 2)
        assert [json.loads(line)["sequence"] for line in path.read_text().splitlines()] == [1, 2]
        outbox.reachable = True
        await acknowledged(outbox, "file")
        for item in await append(outbox, [event(3)]):
            sink.offer(item)
        await acknowledged(outbox, "file")
        tg.cancel_scope.cancel()
    assert [json.loads(line)["sequence"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert sample(metrics, "foundry_monitor_database_up", {}) == 1


async def test_a_restart_while_the_cursor_lags_writes_no_duplicate_to_the_file(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """A run that wrote events but could not acknowledge them (the database was down) ends; the next run's
    file sink, on the database again, finds them on the file and writes only what is new."""
    path = tmp_path / "events.jsonl"
    metrics = ProcessMetrics()
    first = FileSink(metrics, WatchedState(outbox, DatabaseHealth(metrics)), FileSinkConfig(path=str(path)))
    written = await append(outbox, [event(1), event(2)])
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        outbox.reachable = False
        for item in written:
            first.offer(item)
        await until(lambda: len(path.read_text().splitlines()) == 2 if path.exists() else False)
        tg.cancel_scope.cancel()
    await first.drain(0.5)  # the cursor still cannot be written: the run ends with it behind
    outbox.reachable = True
    assert [e.seq for e in await outbox.pending("file")] == [1, 2]
    await append(outbox, [event(3)])
    await FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path))).drain(5.0)
    assert [json.loads(line)["sequence"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert await outbox.pending("file") == []


async def test_drain_delivers_what_waits_in_the_outbox_behind_a_full_queue(outbox: MemoryState) -> None:
    """At shutdown a sink whose queue overflowed reads the rest back from the outbox and delivers it."""
    stream = io.StringIO()
    sink = StreamSink(ProcessMetrics(), outbox, stream=stream)
    sink._queue_size = 2
    for item in await append(outbox, [event(i) for i in range(7)]):
        sink.offer(item)
    await sink.drain(5.0)
    assert [json.loads(line)["sequence"] for line in stream.getvalue().splitlines()] == list(range(7))
    assert await outbox.pending("stdout") == []


async def test_after_a_restart_the_backlog_gauge_counts_what_waits_behind_a_full_queue(
    tmp_path: Path,
) -> None:
    """A state file left with 25 undelivered events, reopened by a sink whose queue holds 10 (its receiver
    down, so the queue stays full): the backlog gauge reads the 15 left in the outbox once the sink has
    started, before any new event is offered."""
    path = tmp_path / "state.sqlite3"
    async with opened(SqliteState(path)) as state:
        await append(state, [event(i) for i in range(25)])  # type: ignore[arg-type]
    metrics = ProcessMetrics()
    async with opened(SqliteState(path)) as state, aiohttp.ClientSession() as session:
        sink = WebhookSink(
            metrics,
            state,
            WebhookConfig(url="http://127.0.0.1:9/", queue_size=10, max_retries=0),
            session=session,
            retry_initial=60.0,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            assert sample(metrics, "foundry_monitor_sink_outbox_backlog", {"sink": "webhook[0]"}) == 15
            assert sample(metrics, "foundry_monitor_sink_queue_length", {"sink": "webhook[0]"}) == 10
            tg.cancel_scope.cancel()


async def test_webhook_retries_then_delivers(receiver: tuple[Receiver, str], outbox: MemoryState) -> None:
    """Two 503s are retried with backoff; the event arrives once."""
    hook, url = receiver
    metrics = ProcessMetrics()
    async with aiohttp.ClientSession() as session:
        sink = WebhookSink(
            metrics, outbox, WebhookConfig(url=url, max_retries=5), session=session, backoff_initial=0.01
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            sink.offer(event(7))
            await until(lambda: len(hook.bodies) == 1)
            tg.cancel_scope.cancel()
    assert hook.attempts == 3
    assert hook.bodies[0]["sequence"] == 7
    assert sample(metrics, "foundry_monitor_sink_failures_total", {"sink": "webhook[0]"}) == 0


async def test_dead_webhook_counts_failures_keeps_its_events_and_never_blocks_offer(
    outbox: MemoryState,
) -> None:
    """A refused connection: offer() returns at once, a full queue drops events that are in no outbox, and
    the queued ones stay queued (failed rounds counted) instead of being given up."""
    metrics = ProcessMetrics()
    async with aiohttp.ClientSession() as session:
        # Port 9 on loopback: nothing listens, connections are refused at once.
        sink = WebhookSink(
            metrics,
            outbox,
            WebhookConfig(url="http://127.0.0.1:9/", queue_size=5, max_retries=1),
            session=session,
            backoff_initial=0.001,
            retry_initial=0.01,
        )
        with anyio.fail_after(1):
            for i in range(20):
                sink.offer(event(i))
        assert sample(metrics, "foundry_monitor_sink_dropped_events_total", {"sink": "webhook[0]"}) == 15
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            await until(
                lambda: sample(metrics, "foundry_monitor_sink_failures_total", {"sink": "webhook[0]"}) == 3
            )
            tg.cancel_scope.cancel()
    assert [e.sequence for e in sink._queue] == [0, 1, 2, 3, 4]


async def test_a_webhook_that_comes_back_gets_every_held_event_in_order_once(outbox: MemoryState) -> None:
    """While the receiver answers 503 the events wait; then each arrives once, in order, and the outbox is
    acknowledged up to the last; more events than the queue holds are read back from the outbox."""
    hook = Receiver(fail_first=4)
    metrics = ProcessMetrics()
    async with serving(hook.handle) as url, aiohttp.ClientSession() as session:
        sink = WebhookSink(
            metrics,
            outbox,
            WebhookConfig(url=url, queue_size=4, max_retries=0),
            session=session,
            retry_initial=0.01,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            for item in await append(outbox, [event(i) for i in range(10)]):
                sink.offer(item)
            await anyio.sleep(0)
            for item in await append(outbox, [event(i) for i in range(10, 15)]):
                sink.offer(item)
            assert sample(metrics, "foundry_monitor_sink_outbox_backlog", {"sink": "webhook[0]"}) == 11
            await acknowledged(outbox, "webhook[0]")
            tg.cancel_scope.cancel()
    assert [body["sequence"] for body in hook.bodies] == list(range(15))
    assert sample(metrics, "foundry_monitor_sink_outbox_backlog", {"sink": "webhook[0]"}) == 0
    assert sample(metrics, "foundry_monitor_sink_failures_total", {"sink": "webhook[0]"}) == 4
    assert sample(metrics, "foundry_monitor_sink_dropped_events_total", {"sink": "webhook[0]"}) == 0


async def test_a_refused_event_is_passed_over_and_the_rest_delivered(outbox: MemoryState) -> None:
    """A 4xx answer will not change: that event is counted as failed, the next ones still go out, and the
    cursor moves past it."""
    bodies: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        if body["sequence"] == 1:
            return web.Response(status=422)
        bodies.append(body["sequence"])
        return web.Response(status=204)

    metrics = ProcessMetrics()
    async with serving(handle) as url, aiohttp.ClientSession() as session:
        sink = WebhookSink(metrics, outbox, WebhookConfig(url=url), session=session)
        for item in await append(outbox, [event(i) for i in range(3)]):
            sink.offer(item)
        await sink.drain(5.0)
    assert bodies == [0, 2]
    assert not sink._queue
    assert await outbox.pending("webhook[0]") == []
    assert sample(metrics, "foundry_monitor_sink_failures_total", {"sink": "webhook[0]"}) == 1


def test_bus_fans_out_and_keeps_recent_events() -> None:
    """publish() reaches every sink, counts by type, and recent() returns the newest, newest last."""
    metrics = ProcessMetrics()
    outbox = MemoryState()
    first, second = (
        StreamSink(metrics, outbox, stream=io.StringIO()),
        StreamSink(metrics, outbox, stream=io.StringIO(), name="b"),
    )
    bus = EventBus([first, second], metrics, keep=3)
    bus.publish([event(i) for i in range(5)])
    assert [e.sequence for e in bus.recent(10)] == [2, 3, 4]
    assert [e.sequence for e in bus.recent(2)] == [3, 4]
    assert bus.recent(0) == []
    assert len(first._queue) == len(second._queue) == 5
    assert sample(metrics, "foundry_monitor_events_total", {"type": "deployment.changed"}) == 5


async def test_file_sink_recovers_from_a_line_cut_short_by_a_crash(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """A torn last line is closed before new events are written, and does not count as delivered."""
    path = tmp_path / "events.jsonl"
    whole = event(1)
    torn = event(2)
    path.write_text(
        json.dumps(whole.to_json(), separators=(",", ":")) + "\n" + '{"event_id":"' + torn.event_id
    )
    sink = FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path)))
    assert await sink.already_delivered({whole.event_id, torn.event_id}) == {whole.event_id}
    sink.offer(torn)
    await sink.drain(5.0)
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["event_id"] == torn.event_id
    assert len(lines) == 3


CLOUD = Formatter(EventFormat.CLOUDEVENTS, cloudevents_source("https://acme.palantirfoundry.com"))
OTHER = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000002"


def state_change(rid: str, sequence: int, old: str, new: str, at: float) -> Event:
    """A state change of ``rid`` observed at Unix time ``at``."""
    return Event(EventType.CHANGED, rid, rid[-1], (), at, sequence, old, new, new == "ACTIVE")


def cloudevent(content_type: str, body: bytes) -> BaseCloudEvent:
    """``body`` as the cloudevents SDK's HTTP binding reads it."""
    return from_http(HTTPMessage(headers={"content-type": content_type}, body=body), JSONFormat())


def file_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_the_file_sink_writes_cloudevents_the_sdk_reads(tmp_path: Path, outbox: MemoryState) -> None:
    """format: cloudevents gives one structured CloudEvent per line, id the event_id, data the event."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(
        ProcessMetrics(),
        outbox,
        FileSinkConfig(path=str(path), format=EventFormat.CLOUDEVENTS),
        source=CLOUD.source,
    )
    written = await append(outbox, [event(1), event(2)])
    for item in written:
        sink.offer(item)
    await sink.drain(5.0)
    lines = path.read_bytes().splitlines()
    parsed = [cloudevent(CLOUDEVENT, line) for line in lines]
    assert [e.get_id() for e in parsed] == [e.event_id for e in written]
    assert {e.get_type() for e in parsed} == {"com.palantir.foundry.live-deployment.changed.v1"}
    assert [e.get_data() for e in parsed] == [e.to_json() for e in written]
    assert await outbox.pending("file") == []


async def test_the_file_sink_does_not_write_again_cloudevents_it_wrote_before_a_crash(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """A CloudEvent line carries its id as ``id``: what a crash left written is still skipped at start."""
    path = tmp_path / "events.jsonl"
    written = await append(outbox, [event(i) for i in range(1, 4)])
    path.write_text("".join(CLOUD.line(e) for e in written[:2]))
    await FileSink(
        ProcessMetrics(),
        outbox,
        FileSinkConfig(path=str(path), format=EventFormat.CLOUDEVENTS),
        source=CLOUD.source,
    ).drain(5.0)
    assert [line["data"]["sequence"] for line in file_lines(path)] == [1, 2, 3]
    assert await outbox.pending("file") == []


async def test_a_webhook_posts_cloudevents_the_sdk_reads(outbox: MemoryState) -> None:
    """A CloudEvents webhook POSTs each event as application/cloudevents+json that the SDK parses."""
    received: list[tuple[str, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((request.headers["Content-Type"], await request.read()))
        return web.Response(status=204)

    written = await append(outbox, [event(1), event(2)])
    async with serving(handle) as url, aiohttp.ClientSession() as session:
        sink = WebhookSink(
            ProcessMetrics(),
            outbox,
            WebhookConfig(url=url, format=EventFormat.CLOUDEVENTS),
            session=session,
            source=CLOUD.source,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            await acknowledged(outbox, "webhook[0]")
            tg.cancel_scope.cancel()
    assert {content_type for content_type, _ in received} == {CLOUDEVENT}
    parsed = [cloudevent(content_type, body) for content_type, body in received]
    assert [e.get_id() for e in parsed] == [e.event_id for e in written]
    assert {e.get_source() for e in parsed} == {"/foundry-monitor/acme.palantirfoundry.com"}
    assert {e.get_subject() for e in parsed} == {RID}


async def test_a_held_failure_is_not_acknowledged_and_other_deployments_are_not_delayed(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """With min_duration, a FAILED deployment's event is held and the cursor stays before it while another
    deployment's events are written at once; its recovery within the window writes one flapped summary,
    and then the cursor passes all of them."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path), min_duration=3600.0))
    now = time.time()
    failed, other = await append(
        outbox,
        [state_change(RID, 1, "ACTIVE", "FAILED", now), state_change(OTHER, 1, "ACTIVE", "DELETING", now)],
    )
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        sink.offer(failed)
        sink.offer(other)
        await until(lambda: len(file_lines(path)) == 1)
        assert file_lines(path)[0]["rid"] == OTHER
        assert [item.seq for item in await outbox.pending("file")] == [failed.outbox_seq, other.outbox_seq]
        (back,) = await append(outbox, [state_change(RID, 2, "FAILED", "ACTIVE", now + 1)])
        sink.offer(back)
        await acknowledged(outbox, "file")
        tg.cancel_scope.cancel()
    lines = file_lines(path)
    assert [line["type"] for line in lines] == ["deployment.changed", "deployment.flapped"]
    assert lines[1]["event_ids"] == [failed.event_id, back.event_id]


async def test_a_failure_that_lasts_is_written_when_min_duration_has_passed(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """A FAILED that does not recover is written as it happened once its own time plus min_duration has
    passed, and then acknowledged."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path), min_duration=0.3))
    (failed,) = await append(outbox, [state_change(RID, 1, "ACTIVE", "FAILED", time.time())])
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        sink.offer(failed)
        assert file_lines(path) == []
        await acknowledged(outbox, "file")
        tg.cancel_scope.cancel()
    assert file_lines(path) == [failed.to_json()]
    assert time.time() >= failed.time + 0.3


async def test_after_a_crash_while_holding_the_file_sink_writes_no_duplicate(
    tmp_path: Path, outbox: MemoryState
) -> None:
    """A run that stops while holding leaves the held event (and what followed it) unacknowledged: the next
    run reads them again, holds the failure again, skips what the file has, and summarises the flap once."""
    path = tmp_path / "events.jsonl"
    settings = FileSinkConfig(
        path=str(path), min_duration=3600.0, recovery=True, format=EventFormat.CLOUDEVENTS
    )
    now = time.time()
    failed, other = await append(
        outbox,
        [state_change(RID, 1, "ACTIVE", "FAILED", now), state_change(OTHER, 1, "ACTIVE", "DELETING", now)],
    )
    first = FileSink(ProcessMetrics(), outbox, settings, source=CLOUD.source)
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        first.offer(failed)
        first.offer(other)
        await until(lambda: len(file_lines(path)) == 1)
        tg.cancel_scope.cancel()
    assert len(await outbox.pending("file")) == 2
    second = FileSink(ProcessMetrics(), outbox, settings, source=CLOUD.source)
    async with anyio.create_task_group() as tg:
        await tg.start(second.run)
        (back,) = await append(outbox, [state_change(RID, 2, "FAILED", "ACTIVE", now + 1)])
        second.offer(back)
        await acknowledged(outbox, "file")
        tg.cancel_scope.cancel()
    assert [line["type"] for line in file_lines(path)] == [
        "com.palantir.foundry.live-deployment.changed.v1",
        "com.palantir.foundry.live-deployment.flapped.v1",
    ]


async def test_a_dropped_flap_moves_the_cursor_past_it(tmp_path: Path, outbox: MemoryState) -> None:
    """flaps: drop writes nothing for a flap, yet its events are acknowledged (not read again forever)."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(
        ProcessMetrics(), outbox, FileSinkConfig(path=str(path), min_duration=3600.0, flaps=FlapMode.DROP)
    )
    now = time.time()
    written = await append(
        outbox,
        [state_change(RID, 1, "ACTIVE", "DEGRADED", now), state_change(RID, 2, "DEGRADED", "ACTIVE", now)],
    )
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        for item in written:
            sink.offer(item)
        await acknowledged(outbox, "file")
        tg.cancel_scope.cancel()
    assert file_lines(path) == []


async def test_a_recovery_notice_follows_the_return_to_health_on_a_webhook(outbox: MemoryState) -> None:
    """recovery: true POSTs deployment.healthy right after the event that shows the deployment ACTIVE and
    ready again; the outbox holds only the exact events."""
    hook = Receiver()
    written = await append(
        outbox,
        [state_change(RID, 1, "ACTIVE", "FAILED", 1000.0), state_change(RID, 2, "FAILED", "ACTIVE", 2000.0)],
    )
    async with serving(hook.handle) as url, aiohttp.ClientSession() as session:
        sink = WebhookSink(ProcessMetrics(), outbox, WebhookConfig(url=url, recovery=True), session=session)
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            await acknowledged(outbox, "webhook[0]")
            tg.cancel_scope.cancel()
    assert [body["type"] for body in hook.bodies] == [
        "deployment.changed",
        "deployment.changed",
        "deployment.healthy",
    ]
    assert hook.bodies[2]["sequence"] == written[1].sequence
    assert [item.event_id for item in await outbox.pending("other")] == [e.event_id for e in written]


async def test_the_cursor_stays_before_a_flap_until_its_summary_is_delivered(outbox: MemoryState) -> None:
    """A flapped summary the receiver has not taken keeps the cursor before the flap's first event, though
    the other deployment's event before it was delivered: a crash now reads the flap again."""
    now = time.time()
    failed, other, back, later = await append(
        outbox,
        [
            state_change(RID, 1, "ACTIVE", "FAILED", now),
            state_change(OTHER, 1, "ACTIVE", "DELETING", now),
            state_change(RID, 2, "FAILED", "ACTIVE", now + 1),
            state_change(OTHER, 2, "DELETING", "ACTIVE", now + 1),
        ],
    )
    delivered: list[str] = []
    refused_flaps = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal refused_flaps
        body = await request.json()
        if body["type"] == "deployment.flapped":
            refused_flaps += 1
            return web.Response(status=503)
        delivered.append(body["event_id"])
        return web.Response(status=204)

    async with serving(handle) as url, aiohttp.ClientSession() as session:
        sink = WebhookSink(
            ProcessMetrics(),
            outbox,
            WebhookConfig(url=url, max_retries=0, min_duration=3600.0),
            session=session,
            retry_initial=0.01,
            retry_max=0.02,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            # A second refusal comes after the first round's acknowledgement.
            await until(lambda: refused_flaps >= 2)
            tg.cancel_scope.cancel()
    assert delivered == [other.event_id]
    assert [item.seq for item in await outbox.pending("webhook[0]")] == [
        e.outbox_seq for e in (failed, other, back, later)
    ]


async def test_the_stream_sink_writes_cloudevents_lines(outbox: MemoryState) -> None:
    """stdout with format cloudevents writes one structured CloudEvent per line, in order."""
    stream = io.StringIO()
    sink = StreamSink(
        ProcessMetrics(),
        outbox,
        StdoutConfig(format=EventFormat.CLOUDEVENTS),
        stream=stream,
        source=CLOUD.source,
    )
    written = await append(outbox, [event(1), event(2)])
    for item in written:
        sink.offer(item)
    await sink.drain(5.0)
    parsed = [cloudevent(CLOUDEVENT, line.encode()) for line in stream.getvalue().splitlines()]
    assert [e.get_id() for e in parsed] == [e.event_id for e in written]
