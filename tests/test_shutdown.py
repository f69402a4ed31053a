"""Graceful shutdown of a real process: SIGTERM ends a thousand hung requests quickly and cleanly, and a
normal run's events all reach the file sink before the process exits 0."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from monitor.simulator.faults import FLEET, Fault
from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorHandle, SimulatorSettings, running_simulator

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "shutdown-test-token"
EXIT_BOUND = 15.0
#: What an unclean asyncio or aiohttp exit prints.
UNCLEAN = (
    "ResourceWarning",
    "Task was destroyed but it is pending",
    "Traceback",
    "Unclosed",
    "Exception ignored",
)


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for ``condition`` with a bound."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.05)


def in_flight(sim: SimulatorHandle) -> int:
    """Requests that reached the simulator and have not ended."""
    return sim.counters.total - sum(sim.counters.by_status.values())


def start_monitor(tmp_path: Path, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m monitor run`` with ResourceWarnings shown; returns the process and its stderr file."""
    config_path = tmp_path / "monitor.yaml"
    config_path.write_text(yaml.safe_dump(config))
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config_path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "always::ResourceWarning"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return proc, stderr


async def terminate(proc: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM, then the exit code (None if it outlived the bound, when it is killed) and the time taken."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=EXIT_BOUND))
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, time.monotonic() - sent


@pytest.fixture
def descriptors() -> Iterator[None]:
    """Room for a thousand sockets on each side (the monitor inherits the limit); restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit of open files ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def config_for(sim: SimulatorHandle, tmp_path: Path, **polling: Any) -> dict[str, Any]:
    return {
        "foundry": {
            "base_url": sim.base_url,
            "auth": {"token": TOKEN},
            "timeouts": {"connect": "5s", "read": "2m", "total": "2m"},
            "retries": {"attempts": 1},
        },
        "deployments": list(sim.fleet.rids),
        "polling": {"jitter": 0, "breaker": {"min_polls": 1_000_000}, **polling},
        "server": {"listen": "127.0.0.1:0"},
        "sinks": {"stdout": False, "file": {"path": str(tmp_path / "events.jsonl")}},
        "state": {"path": str(tmp_path / "monitor.sqlite3")},
        "logging": {"level": "info", "format": "json"},
    }


@pytest.mark.usefixtures("descriptors")
async def test_sigterm_with_a_thousand_hung_requests_exits_0_quickly_and_cleanly(tmp_path: Path) -> None:
    """A thousand polls hang on a server that never answers; SIGTERM: exit 0 within the bound, and
    nothing on stderr about unclosed resources, pending tasks or tracebacks."""
    settings = SimulatorSettings(size=1000, seed=31, rates=Rates(), tokens=(TOKEN,), shutdown_timeout=1.0)
    async with running_simulator(settings) as sim:
        sim.faults.set(Fault(kind="hang"), FLEET)
        config = config_for(sim, tmp_path, interval="1m", concurrency=1000, requests_per_second=100_000)
        proc, stderr = start_monitor(tmp_path, config)
        try:
            await until(lambda: in_flight(sim) >= 990 or proc.poll() is not None)
            assert proc.poll() is None, stderr.read_text()
        finally:
            code, took = await terminate(proc)
    log = stderr.read_text()
    assert code == 0, log
    assert took <= EXIT_BOUND
    for sign in UNCLEAN:
        assert sign not in log, log
    assert '"shutting_down"' in log


async def test_sigterm_on_a_normal_run_delivers_every_event_to_the_file_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM while a burst of changes is being reported: the process exits 0, and every event in the
    state file's outbox is in the events file, once, and acknowledged by the file sink."""
    settings = SimulatorSettings(size=300, seed=32, rates=Rates(), tokens=(TOKEN,))
    async with running_simulator(settings) as sim:
        config = config_for(
            sim, tmp_path, interval="200ms", fast_interval="100ms", concurrency=50, requests_per_second=5000
        )
        proc, stderr = start_monitor(tmp_path, config)
        try:
            await until(lambda: _events_of(tmp_path).count("deployment.observed") == 300)
            for rid in sim.fleet.rids:
                sim.fleet.set_status(rid, "FAILED", False)
            await until(lambda: "deployment.changed" in _events_of(tmp_path))
        finally:
            code, _ = await terminate(proc)
    log = stderr.read_text()
    assert code == 0, log
    for sign in UNCLEAN:
        assert sign not in log, log
    written = [json.loads(line)["event_id"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    with contextlib.closing(sqlite3.connect(tmp_path / "monitor.sqlite3")) as db:
        outbox = [row[0] for row in db.execute("SELECT event_id FROM outbox ORDER BY seq")]
        last = db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
        acknowledged = db.execute("SELECT seq FROM cursors WHERE sink='file'").fetchone()[0]
    assert len(written) == len(set(written)), "an event was written twice"
    assert written == outbox
    assert acknowledged == last
    assert len(outbox) > 300, "the burst of changes was not under way"


def _events_of(tmp_path: Path) -> list[str]:
    """The types of the events in the file sink so far (a torn last line is not counted yet)."""
    path = tmp_path / "events.jsonl"
    if not path.exists():
        return []
    types = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            types.append(json.loads(line)["type"])
    return types


async def test_the_monitor_answers_while_requests_hang(tmp_path: Path) -> None:
    """With every poll hanging, /healthz answers at once and /readyz says the first round is not done."""
    settings = SimulatorSettings(size=20, seed=33, rates=Rates(), tokens=(TOKEN,), shutdown_timeout=1.0)
    async with running_simulator(settings) as sim:
        sim.faults.set(Fault(kind="hang"), FLEET)
        proc, stderr = start_monitor(tmp_path, config_for(sim, tmp_path, interval="1m"))
        try:
            await until(lambda: '"http_listening"' in stderr.read_text() or proc.poll() is not None)
            await until(lambda: in_flight(sim) >= 20)
            port = next(
                json.loads(line)["port"]
                for line in stderr.read_text().splitlines()
                if '"http_listening"' in line
            )
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                    healthz = health.status
                async with session.get(f"http://127.0.0.1:{port}/readyz") as ready:
                    readyz = ready.status
        finally:
            code, _ = await terminate(proc)
    assert (healthz, readyz, code) == (200, 503, 0)
