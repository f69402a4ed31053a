"""Crash safety: the monitor is killed with SIGKILL at random moments while deployments change, and restarted.

The file sink's output must then tell each deployment's story without a gap or a repeat: every reported
change starts where the previous one ended, no event id appears twice, no deployment is observed twice,
and the last reported state is the simulator's final one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorHandle, SimulatorSettings, running_simulator

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "crash-token"
KILLS = 20
STATES = [("ACTIVE", True), ("DEGRADED", True), ("FAILED", False), ("STARTING", False), ("DISABLED", False)]


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    async with running_simulator(SimulatorSettings(size=8, seed=5, rates=Rates(), tokens=(TOKEN,))) as handle:
        for rid in handle.fleet.rids:
            handle.fleet.set_status(rid, "ACTIVE", True)
        yield handle


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line torn by SIGKILL; its event is written again whole after the restart
    return events


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


def last_states(events: list[dict[str, Any]]) -> dict[str, str]:
    states: dict[str, str] = {}
    for event in events:
        if event.get("new_state") is not None and event["type"] != "deployment.removed":
            states[event["rid"]] = event["new_state"]
    return states


async def test_sigkill_at_random_moments_loses_and_repeats_nothing(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """20 SIGKILLs while states churn: continuous per-deployment history, unique ids, one observed each."""
    rng = random.Random(20261126)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    events_path = tmp_path / "events.jsonl"
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "foundry": {"base_url": sim.base_url, "auth": {"token": TOKEN}, "retries": {"attempts": 1}},
                "deployments": list(sim.fleet.rids),
                "polling": {
                    "interval": "100ms",
                    "fast_interval": "50ms",
                    "jitter": 0,
                    "requests_per_second": 1000,
                },
                "server": {"listen": f"127.0.0.1:{port}"},
                "sinks": {"stdout": False, "file": {"path": str(events_path)}},
                "state": {"path": str(tmp_path / "state.sqlite3")},
                "logging": {"level": "warning", "format": "json"},
            }
        )
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stderr_path = tmp_path / "stderr.log"

    def start() -> subprocess.Popen[bytes]:
        with stderr_path.open("ab") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(config)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    churning = True

    async def churn() -> None:
        while churning:
            rid = rng.choice(sim.fleet.rids)
            state, ready = rng.choice(STATES)
            sim.fleet.set_status(rid, state, ready)
            await anyio.sleep(rng.uniform(0.02, 0.08))

    async with anyio.create_task_group() as tg:
        tg.start_soon(churn)
        for _ in range(KILLS):
            proc = start()
            await anyio.sleep(rng.uniform(0.4, 1.4))
            proc.kill()
            await anyio.to_thread.run_sync(proc.wait)
            # Sometimes stay down for a while: changes then happen while nobody watches.
            await anyio.sleep(rng.choice([0.0, 0.0, 0.3]))
        churning = False

    final = {rid: sim.fleet.get_json(rid)["status"]["state"] for rid in sim.fleet.rids}  # type: ignore[index]
    proc = start()
    try:
        deadline = time.monotonic() + 60
        # Ready first: a SIGTERM before the service has installed its handlers would just kill it.
        while not await ready(port):
            assert time.monotonic() < deadline, "the last run never became ready"
            await anyio.sleep(0.1)
        while last_states(read_events(events_path)) != final:
            assert time.monotonic() < deadline, "the last run never caught up with the simulator"
            await anyio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=30))
    assert code == 0

    events = read_events(events_path)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    observed = [e["rid"] for e in events if e["type"] == "deployment.observed"]
    assert sorted(observed) == sorted(set(observed)), "a deployment was observed twice"
    changes = 0
    for rid in sim.fleet.rids:
        story = [e for e in events if e["rid"] == rid]
        assert story[0]["type"] == "deployment.observed"
        current = story[0]["new_state"]
        for event in story[1:]:
            if event["type"] == "deployment.changed":
                assert event["old_state"] == current, (
                    f"{rid}: a change was lost between {current} and {event}"
                )
                current = event["new_state"]
                changes += 1
        assert current == final[rid]
    assert changes >= KILLS  # the churn really was observed across the restarts
    assert "Traceback" not in stderr_path.read_text()
