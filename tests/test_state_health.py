"""Tests for monitor.state.health: every use of a watched state reports to one health, which goes down at a
failure and up at the next success, once each way, counting failures by operation."""

from __future__ import annotations

import pytest

from monitor.metrics import ProcessMetrics
from monitor.state import DatabaseHealth, MemoryState, StateUnavailable, WatchedState
from monitor.status.store import HistoryBatch
from tests.logcapture import configured_logging, json_lines


def errors(metrics: ProcessMetrics, operation: str) -> float | None:
    return metrics.registry.get_sample_value(
        "foundry_monitor_database_errors_total", {"operation": operation}
    )


async def test_each_use_counts_under_its_operation_and_moves_database_up_once_each_way() -> None:
    """Appends count as ``append``, reads and cursor writes as ``cursor``, prunes as ``prune``, history as
    ``history``; the first failure logs one warning and sets database_up 0, the next success (of any use)
    logs one info line and sets it to 1; the failure still reaches the caller."""
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
        await state.history.write(HistoryBatch())  # the memory history answers: that is a success
        memory.reachable = True
        assert await state.append([{"event_id": "e"}]) == [1]
    assert [errors(metrics, op) for op in ("append", "cursor", "prune", "history")] == [1, 2, 1, None]
    assert metrics.registry.get_sample_value("foundry_monitor_database_up") == 1
    lines = [(line["event"], line["level"], line["operation"]) for line in json_lines(logged.getvalue())]
    assert lines == [
        ("state_database_unavailable", "warning", "append"),
        ("state_database_available", "info", "history"),
    ]
    assert health.up
