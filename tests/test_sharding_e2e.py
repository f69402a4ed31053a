"""Static sharding end to end: shard processes on the bundled simulator, over real sockets on 127.0.0.1.

Every shard runs one configuration, whose token file, events file and listen port are chosen per process
by ``${POD_NAME}`` and ``${MONITOR_PORT}``, as a StatefulSet's pods would: ``run --shard auto``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from monitor.partition import Shard
from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorHandle, SimulatorSettings, running_simulator

ROOT = Path(__file__).resolve().parents[1]
POD = "foundry-monitor-{}"
TOKENS = tuple(f"shard-token-{index}" for index in range(3))
DEADLINE = 60.0
_SERIES = re.compile(r'^foundry_live_deployment_up\{[^}]*\brid="([^"]+)"', re.MULTILINE)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    settings = SimulatorSettings(size=45, seed=11, rates=Rates(), tokens=TOKENS)
    async with running_simulator(settings) as handle:
        for rid in handle.fleet.rids:
            handle.fleet.set_status(rid, "ACTIVE", True)
        yield handle


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Fleet:
    """The simulator's fleet as the configuration names it: static RIDs and one discovered model."""

    static: list[str]
    model: str
    discovered: set[str]

    @property
    def rids(self) -> set[str]:
        return {*self.static, *self.discovered}


def split(sim: SimulatorHandle) -> Fleet:
    model = max(sim.fleet.models, key=lambda m: len(sim.fleet.deployments_of(m)))
    discovered = set(sim.fleet.deployments_of(model))
    assert len(discovered) >= 3
    return Fleet([rid for rid in sim.fleet.rids if rid not in discovered], model, discovered)


def write_config(tmp_path: Path, sim: SimulatorHandle, fleet: Fleet) -> Path:
    """One configuration for every shard; per-pod values come from the environment."""
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    for index, token in enumerate(TOKENS):
        (tokens / POD.format(index)).write_text(token + "\n")
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "foundry": {
                    "base_url": sim.base_url,
                    "auth": {"token_file": f"{tokens}/${{POD_NAME}}"},
                    "retries": {"attempts": 1},
                },
                "deployments": fleet.static,
                "discover": [{"model_rid": fleet.model, "interval": "1h"}],
                "polling": {
                    "interval": "200ms",
                    "fast_interval": "100ms",
                    "jitter": 0,
                    "requests_per_second": 1000,
                },
                "server": {"listen": "127.0.0.1:${MONITOR_PORT}"},
                "sinks": {"stdout": False, "file": {"path": f"{tmp_path}/events/${{POD_NAME}}.jsonl"}},
                "state": {"path": str(tmp_path / "state" / "monitor.sqlite3")},
                "logging": {"level": "warning", "format": "json"},
            }
        )
    )
    (tmp_path / "events").mkdir()
    return config


@dataclass
class ShardProcess:
    index: int
    port: int
    proc: subprocess.Popen[bytes]


async def get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientError:
        return 0, ""


async def until(what: str, condition: Callable[[], Any]) -> None:
    """Wait (bounded) until the awaitable ``condition()`` returns something true."""
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.05)


@asynccontextmanager
async def shards(config: Path, total: int, tmp_path: Path) -> AsyncIterator[list[ShardProcess]]:
    """``total`` shard processes, each ready (its first round polled); SIGTERM and a clean exit after."""
    started: list[ShardProcess] = []
    try:
        for index in range(total):
            port = free_port()
            env = {**os.environ, "POD_NAME": POD.format(index), "MONITOR_PORT": str(port)}
            with (tmp_path / f"stderr-{index}.log").open("ab") as err:
                command = ["run", "--config", str(config), "--shard", "auto", "--total-shards", str(total)]
                proc = subprocess.Popen(
                    [sys.executable, "-m", "monitor", *command],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            started.append(ShardProcess(index, port, proc))
        for shard in started:

            async def ready(shard: ShardProcess = shard) -> bool:
                assert shard.proc.poll() is None, (tmp_path / f"stderr-{shard.index}.log").read_text()
                return (await get(f"http://127.0.0.1:{shard.port}/readyz"))[0] == 200

            await until(f"shard {shard.index} to be ready", ready)
        yield started
        for shard in started:
            shard.proc.send_signal(signal.SIGTERM)
        for shard in started:
            code = await anyio.to_thread.run_sync(lambda p=shard.proc: p.wait(timeout=30))
            assert code == 0, (tmp_path / f"stderr-{shard.index}.log").read_text()
    finally:
        for shard in started:
            if shard.proc.poll() is None:
                shard.proc.kill()
                await anyio.to_thread.run_sync(shard.proc.wait)
    for index in range(total):
        assert "Traceback" not in (tmp_path / f"stderr-{index}.log").read_text()


async def scrape(shard: ShardProcess) -> str:
    status, text = await get(f"http://127.0.0.1:{shard.port}/metrics")
    assert status == 200
    return text


def exported(text: str) -> set[str]:
    """The RIDs whose per-deployment series a /metrics page holds."""
    return set(_SERIES.findall(text))


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one series (exact label text), 0 when the page has none."""
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def events(tmp_path: Path, index: int) -> list[dict[str, Any]]:
    path = tmp_path / "events" / f"{POD.format(index)}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@contextmanager
def state_file(tmp_path: Path, index: int) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(tmp_path / "state" / f"monitor.shard-{index}.sqlite3")
    try:
        yield db
    finally:
        db.close()


def stored(tmp_path: Path, index: int) -> set[str]:
    with state_file(tmp_path, index) as db:
        return {row[0] for row in db.execute("SELECT rid FROM deployments")}


async def test_three_shards_export_the_whole_fleet_once_each_with_its_own_state_and_token(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """Three shards of one configuration: what their /metrics export is the whole fleet (configured and
    discovered), pairwise disjoint and as the jump hash assigns it; each observes its share once and
    keeps it in its own state file; each authenticates with its own token file, named by ${POD_NAME}: when
    shard 1's token is revoked, shard 1 alone is refused."""
    fleet = split(sim)
    config = write_config(tmp_path, sim, fleet)
    async with shards(config, 3, tmp_path) as running:
        pages = [await scrape(shard) for shard in running]
        shares = [exported(page) for page in pages]
        assert all(shares)
        assert set().union(*shares) == fleet.rids
        assert sum(map(len, shares)) == len(fleet.rids)
        for index, (page, share) in enumerate(zip(pages, shares, strict=True)):
            assert share == {rid for rid in fleet.rids if Shard(index, 3).owns(rid)}
            assert sample(page, "foundry_monitor_owned_deployments") == len(share)
            assert sample(page, "foundry_monitor_shard_info", f'shard="{index}",total_shards="3"') == 1
            assert sample(page, "foundry_monitor_requests_total", 'code="200"') > 0
            assert sample(page, "foundry_monitor_requests_total", 'code="401"') == 0

        assert sim.tokens.revoke(TOKENS[1])

        async def refused() -> bool:
            return sample(await scrape(running[1]), "foundry_monitor_requests_total", 'code="401"') > 0

        await until("shard 1 to be refused", refused)
        for shard in (running[0], running[2]):
            page = await scrape(shard)
            assert sample(page, "foundry_monitor_requests_total", 'code="401"') == 0
    for index, share in enumerate(shares):
        observed = [e["rid"] for e in events(tmp_path, index) if e["type"] == "deployment.observed"]
        assert sorted(observed) == sorted(share)
        assert stored(tmp_path, index) == share
    assert sorted(path.name for path in (tmp_path / "state").glob("*.sqlite3")) == [
        f"monitor.shard-{index}.sqlite3" for index in range(3)
    ]


async def test_a_third_shard_takes_a_third_and_only_what_moved_is_observed_again(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """Resharding from 2 to 3: shards 0 and 1 keep their files and what stays in them (no second
    observed, nothing removed); what moved to shard 2 is dropped from the old shard's file without an event
    and observed once by shard 2, which exports it."""
    fleet = split(sim)
    config = write_config(tmp_path, sim, fleet)
    async with shards(config, 2, tmp_path) as running:
        before = [exported(await scrape(shard)) for shard in running]
    assert set().union(*before) == fleet.rids
    moved = {rid for rid in fleet.rids if Shard(2, 3).owns(rid)}
    assert moved
    counts = [len(events(tmp_path, index)) for index in range(2)]

    async with shards(config, 3, tmp_path) as running:
        after = [exported(await scrape(shard)) for shard in running]
    assert after[2] == moved
    for index in range(2):
        assert after[index] == before[index] - moved
        assert stored(tmp_path, index) == after[index]
        assert events(tmp_path, index)[counts[index] :] == []
    new = events(tmp_path, 2)
    assert sorted(e["rid"] for e in new) == sorted(moved)
    assert {e["type"] for e in new} == {"deployment.observed"}
