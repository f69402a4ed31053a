"""Sinks of a replica set: delivery from an outbox other replicas append to, and again from the shared
cursor when the sink's lease comes back."""

from __future__ import annotations

from pathlib import Path

import anyio

from monitor.config.model import FileSinkConfig
from monitor.metrics import ProcessMetrics
from monitor.sinks import FileSink
from monitor.state import MemoryState
from tests.test_sinks import append, event, file_lines, until


async def test_a_sink_following_a_shared_outbox_delivers_what_others_appended_in_order_once(
    outbox: MemoryState, tmp_path: Path
) -> None:
    """Events appended by other replicas are never offered to this one's sink: following the shared outbox,
    it reads them there, in outbox order, interleaved with its own offered ones, each once."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path)))
    sink.follow_shared_outbox(0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        await append(outbox, [event(1), event(2)])  # another replica's
        (own,) = await append(outbox, [event(3)])
        sink.offer(own)
        await append(outbox, [event(4)])  # another replica's, offered to nobody here
        await until(lambda: len(file_lines(path)) >= 4)
        tg.cancel_scope.cancel()
    assert [line["sequence"] for line in file_lines(path)] == [1, 2, 3, 4]


async def test_a_reset_sink_starts_again_from_the_cursor_another_replica_moved(
    outbox: MemoryState, tmp_path: Path
) -> None:
    """When a sink's lease comes back, what it read before is forgotten: it delivers from the shared cursor
    (moved meanwhile by the replica that held the lease), not from where it had stopped itself."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(ProcessMetrics(), outbox, FileSinkConfig(path=str(path)))
    sink.follow_shared_outbox(0.05)
    await append(outbox, [event(1)])
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        await until(lambda: len(file_lines(path)) == 1)
        tg.cancel_scope.cancel()
    written = await append(outbox, [event(2), event(3)])
    await outbox.acknowledge("file", written[0].outbox_seq)  # the other holder delivered event 2
    sink.reset()
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        await until(lambda: len(file_lines(path)) >= 2)
        tg.cancel_scope.cancel()
    assert [line["sequence"] for line in file_lines(path)] == [1, 3]
