"""A short soak: the service polls a churning, occasionally faulty fleet for about a minute, and its
asyncio tasks, open file descriptors, threads and memory stay flat once warmed up.

The simulator runs in its own process (``foundry-monitor simulate --churn``), so every task, descriptor and
byte measured here is the monitor's (and the test's). ``make soak`` (``bench/soak.py``) is the long version.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from monitor.config import parse_config
from monitor.events import EventType
from monitor.service import Running, Service

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "soak-test-token"
SIZE = 300
CONCURRENCY = 32
WARMUP = 10.0
SAMPLES = 30
EVERY = 2.0
#: Seeded, with its life five times the demo's and stepped every 0.2 s.
SIMULATE = ("--seed", "41", "--token", TOKEN, "--churn", "5", "--tick", "0.2")
#: Faults taking turns fleet-wide, each on a small share of requests: the error paths soak too.
FAULTS: tuple[dict[str, Any], ...] = (
    {"kind": "reset", "probability": 0.02},
    {"kind": "hang", "probability": 0.01},
    {"kind": "status", "status": 503, "probability": 0.03},
    {"kind": "truncate", "probability": 0.02},
    {"kind": "status", "status": 429, "retry_after": "1", "probability": 0.02},
)


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for ``condition`` with a bound."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.05)


@dataclass(frozen=True, slots=True)
class Sample:
    """The process at one moment."""

    at: float
    tasks: int
    fds: int
    threads: int
    rss: int


def take_sample(at: float) -> Sample:
    status = Path("/proc/self/status").read_text().splitlines()
    rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    return Sample(
        at=at,
        tasks=len(asyncio.all_tasks()),
        fds=len(os.listdir("/proc/self/fd")),
        threads=threading.active_count(),
        rss=rss,
    )


class Simulator:
    """The simulator as a subprocess, and its control API."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.session = session

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.base_url + "/_sim" + path, json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json()


@pytest.fixture
async def simulator(tmp_path: Path) -> AsyncIterator[Simulator]:
    """``foundry-monitor simulate`` on an OS-chosen port, with its lifecycle rates raised fivefold."""
    out = tmp_path / "simulator.out"
    with out.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "simulate", "--port", "0", "--size", str(SIZE), *SIMULATE],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        await until(lambda: "listening on" in out.read_text() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, out.read_text()
        base_url = out.read_text().split("listening on ", 1)[1].split()[0]
        async with aiohttp.ClientSession() as session:
            yield Simulator(base_url, session)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await anyio.to_thread.run_sync(lambda: proc.wait(timeout=20))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def thirds(values: list[int]) -> tuple[list[int], list[int]]:
    third = max(1, len(values) // 3)
    return values[:third], values[-third:]


@pytest.mark.slow
async def test_tasks_descriptors_threads_and_memory_stay_flat(simulator: Simulator, tmp_path: Path) -> None:
    """After a warm-up, over about a minute of churn, discovery and faults: asyncio tasks stay within the
    concurrency plus a constant, descriptors and threads within a few of where they were, and RSS grows by
    less than 20 MB between the first and the last third."""
    rids: list[str] = (await simulator.control("GET", "/deployments"))["rids"]
    models: list[str] = (await simulator.control("GET", "/models"))["models"]
    config = parse_config(
        {
            "foundry": {
                "base_url": simulator.base_url,
                "auth": {"token": TOKEN},
                "timeouts": {"connect": "500ms", "read": "500ms", "total": "1s"},
                "retries": {
                    "attempts": 2,
                    "backoff_initial": "50ms",
                    "backoff_max": "200ms",
                    "retry_after_max": "1s",
                },
            },
            # Half the fleet by RID, the rest found through their models, which come and go with the churn.
            "deployments": rids[: SIZE // 2],
            "discover": [{"model_rid": model, "interval": "1s"} for model in models],
            "polling": {
                "interval": "200ms",
                "fast_interval": "100ms",
                "concurrency": CONCURRENCY,
                "requests_per_second": 5000,
                "staleness": "10s",
                "error_backoff_max": "1s",
                # The breaker keeps every poll's outcome for its window (about 1,500 a second here): a
                # short window fills during the warm-up, so that what is measured after it is leaks.
                "breaker": {"window": "5s"},
            },
            "server": {"listen": "127.0.0.1:0"},
            "sinks": {"stdout": False, "file": {"path": str(tmp_path / "events.jsonl")}},
            "state": {"path": str(tmp_path / "monitor.sqlite3")},
        },
        environ={},
    )
    samples: list[Sample] = []
    before = take_sample(0.0)
    async with anyio.create_task_group() as tg:
        running: Running = await tg.start(Service(config).run)
        await until(running.scheduler.first_round_done.is_set)
        begun = anyio.current_time()
        for index in range(int(WARMUP / EVERY) + SAMPLES):
            if index % 5 == 0:
                fault = FAULTS[index // 5 % len(FAULTS)]
                await simulator.control("PUT", "/faults/fleet", fault)
            await anyio.sleep(EVERY)
            if anyio.current_time() - begun >= WARMUP:
                samples.append(take_sample(anyio.current_time() - begun))
        await simulator.control("DELETE", "/faults")
        counters = await simulator.control("GET", "/counters")
        tg.cancel_scope.cancel()

    polled = sum(counters["byStatus"].values())
    events = running.bus.recent(100_000)
    # The run did what it is meant to soak: polls by the ten thousand, changes, deployments coming and
    # going, and failed polls of every fault.
    assert polled >= 10_000
    assert sum(e.type is EventType.CHANGED for e in events) >= 50
    assert any(e.type in (EventType.NOT_FOUND, EventType.REMOVED) for e in events)
    # A failed poll is a deployment's failed GET or, with batching, a model's failed list request.
    failed_lists = sum(
        sample.value
        for family in running.metrics.list_errors.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    assert sum(sum(r.errors.values()) for r in running.tracker) + failed_lists >= 50

    tasks = [s.tasks for s in samples]
    assert max(tasks) <= CONCURRENCY + len(models) + 20, tasks
    fds = [s.fds for s in samples]
    # Each pooled connection is a descriptor, and faults close some: the count moves, but never past the
    # pool's size, and does not creep up.
    assert max(fds) <= before.fds + CONCURRENCY + 16, fds
    first, last = thirds(fds)
    assert statistics.median(last) <= statistics.median(first) + 4, fds
    threads = [s.threads for s in samples]
    first, last = thirds(threads)
    assert max(last) <= max(first) + 2, threads
    rss = [s.rss for s in samples]
    first, last = thirds(rss)
    assert statistics.median(last) - statistics.median(first) < 20 << 20, [r >> 20 for r in rss]
