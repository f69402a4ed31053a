"""Tests for monitor.state.health: every use of a watched state reports to one health, which goes down at a
failure and up once each operation that failed answers again, once each way, counting failures by operation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from monitor.metrics import ProcessMetrics
from monitor.state import DatabaseHealth, MemoryState, RecordWrite, StateUnavailable, WatchedState
from monitor.status.store import HistoryBatch
from tests.logcapture import configured_logging, json_lines


def errors(metrics: ProcessMetrics, operation: str) -> float | None:
    return metrics.registry.get_sample_value(
        "foundry_monitor_database_errors_total", {"operation": operation}
    )


async def test_each_use_counts_under_its_operation_and_moves_database_up_once_each_way() -> None:
    """Appends count as ``append``, reads and cursor writes as ``cursor``, prunes as ``prune``, history as
    ``history``; the first failure logs one warning and sets database_up 0; once each operation that failed
    has answered again (a success of another does not count) one info line says so and it is 1; the failure
    still reaches the caller."""
    metrics = ProcessMetrics()
    health = DatabaseHealth(metrics)
    memory = MemoryState()
    state = WatchedState(memory, health)
    await state.open()
    memory.reachable = False
    with configured_logging("info", "json") as logged:
        for use in (
            lambda: state.append([{"event_id": "e"}]),
            lambda: state.pending("file"),
            lambda: state.acknowledge("file", 1),
            lambda: state.prune(older_than=0.0, sinks=["file"]),
        ):
            with pytest.raises(StateUnavailable):
                await use()
        assert metrics.registry.get_sample_value("foundry_monitor_database_up") == 0
        await state.history.write(HistoryBatch())  # the memory history answers, but it never failed
        memory.reachable = True
        assert await state.append([{"event_id": "e"}]) == [1]
        assert await state.pending("file") != []
        assert metrics.registry.get_sample_value("foundry_monitor_database_up") == 0  # prune still failed
        assert await state.prune(older_than=0.0, sinks=["file"]) == (0, 0)
    assert [errors(metrics, op) for op in ("append", "cursor", "prune", "history")] == [1, 2, 1, None]
    assert metrics.registry.get_sample_value("foundry_monitor_database_up") == 1
    lines = [(line["event"], line["level"], line["operation"]) for line in json_lines(logged.getvalue())]
    assert lines == [
        ("state_database_unavailable", "warning", "append"),
        ("state_database_available", "info", "prune"),
    ]
    assert health.up



class RefusingWrites(MemoryState):
    """A database that answers reads but, while ``refusing``, not appends (a full disk, a read-only standby)."""

    refusing = True

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        if self.refusing:
            raise StateUnavailable("disk full")
        return await super().append(events, records=records)


async def test_reads_that_answer_while_writes_fail_do_not_bring_the_database_up() -> None:
    """Appends refused while the outbox and the history still read: database_up stays 0 from the first
    refusal on (an alert's for: is not reset at each read), with one warning and no line between refusals;
    once appends answer again it is 1, logged once."""
    metrics = ProcessMetrics()
    health = DatabaseHealth(metrics)
    memory = RefusingWrites()
    state = WatchedState(memory, health)
    await state.open()
    with configured_logging("info", "json") as logged:
        for _ in range(3):
            with pytest.raises(StateUnavailable):
                await state.append([{"event_id": "e"}])
            assert await state.pending("file") == []
            assert await state.history.transitions(None, 10) == []
            assert metrics.registry.get_sample_value("foundry_monitor_database_up") == 0
        memory.refusing = False
        assert await state.append([{"event_id": "e"}]) == [1]
    assert metrics.registry.get_sample_value("foundry_monitor_database_up") == 1
    lines = [(line["event"], line["operation"]) for line in json_lines(logged.getvalue())]
    assert lines == [("state_database_unavailable", "append"), ("state_database_available", "append")]
