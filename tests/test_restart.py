"""Restarts and reloads of the running service, against the simulator over loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from monitor.config import load_config
from monitor.events import EventType
from monitor.service import Running, Service
from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorHandle, SimulatorSettings, running_simulator
from monitor.state import state_for

TOKEN = "restart-token"


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    async with running_simulator(
        SimulatorSettings(size=6, seed=11, rates=Rates(), tokens=(TOKEN,))
    ) as handle:
        for rid in handle.fleet.rids:
            handle.fleet.set_status(rid, "ACTIVE", True)
        yield handle


def write_config(path: Path, sim: SimulatorHandle, rids: list[str], **extra: Any) -> Path:
    data: dict[str, Any] = {
        "foundry": {"base_url": sim.base_url, "auth": {"token": TOKEN}, "retries": {"attempts": 1}},
        "deployments": [{"rid": rid, "name": f"dep-{rid[-4:]}"} for rid in rids],
        "polling": {"interval": "200ms", "fast_interval": "100ms", "jitter": 0, "requests_per_second": 1000},
        "server": {"listen": "127.0.0.1:0"},
        "sinks": {"stdout": False, "file": {"path": str(path.parent / "events.jsonl")}},
        "state": {"path": str(path.parent / "state.sqlite3")},
    }
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    return path


def file_events(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def metrics_text(running: Running) -> str:
    url = f"http://127.0.0.1:{running.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


async def test_a_restart_reports_what_changed_while_down_once_and_observes_nothing_again(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """After a restart: no deployment.observed for known ones, one change from the last known snapshot,
    transition counters carried over, no event id twice."""
    rids = list(sim.fleet.rids)
    config = load_config(write_config(tmp_path / "monitor.yaml", sim, rids))
    async with anyio.create_task_group() as tg:
        running: Running = await tg.start(Service(config).run)
        await until(running.scheduler.first_round_done.is_set)
        sim.fleet.set_status(rids[1], "DEGRADED", True)
        await until(lambda: any(e["type"] == "deployment.changed" for e in file_events(tmp_path)))
        tg.cancel_scope.cancel()

    sim.fleet.set_status(rids[0], "FAILED", False)  # while the monitor is down

    async with anyio.create_task_group() as tg:
        running = await tg.start(Service(config).run)
        await until(running.scheduler.first_round_done.is_set)
        await until(lambda: any(e.get("new_state") == "FAILED" for e in file_events(tmp_path)))
        text = await metrics_text(running)
        tg.cancel_scope.cancel()

    events = file_events(tmp_path)
    observed = [e for e in events if e["type"] == "deployment.observed"]
    assert sorted(e["rid"] for e in observed) == sorted(rids)
    down_change = [e for e in events if e["rid"] == rids[0] and e["type"] == "deployment.changed"]
    assert len(down_change) == 1
    assert (down_change[0]["old_state"], down_change[0]["new_state"]) == ("ACTIVE", "FAILED")
    assert len({e["event_id"] for e in events}) == len(events)
    assert (
        f'rid="{rids[1]}",deployment="dep-{rids[1][-4:]}",from_state="ACTIVE",to_state="DEGRADED"}} 1' in text
    )


async def test_a_deployment_dropped_from_the_config_while_down_is_reported_removed(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """The state file remembers it; the next run, which no longer names it, emits deployment.removed and
    deletes its record with that event, so later starts do not report it again (once retention has pruned
    the event, its deterministic id would no longer keep a second report out)."""
    rids = list(sim.fleet.rids[:3])
    path = tmp_path / "monitor.yaml"
    async with anyio.create_task_group() as tg:
        running: Running = await tg.start(Service(load_config(write_config(path, sim, rids))).run)
        await until(running.scheduler.first_round_done.is_set)
        tg.cancel_scope.cancel()
    config = load_config(write_config(path, sim, rids[:2]))
    async with anyio.create_task_group() as tg:
        running = await tg.start(Service(config).run)
        await until(lambda: any(e["type"] == "deployment.removed" for e in file_events(tmp_path)))
        tg.cancel_scope.cancel()
    removed = [e for e in file_events(tmp_path) if e["type"] == "deployment.removed"]
    assert [e["rid"] for e in removed] == [rids[2]]
    assert rids[2] not in running.tracker.records
    store = state_for(config.state)
    loaded = await store.open()
    await store.close()
    assert sorted(loaded.records) == sorted(rids[:2])


async def test_reload_adds_and_removes_deployments_and_refuses_an_invalid_config(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """A valid reload adds and removes without a restart; an invalid one keeps the old config and says so."""
    rids = list(sim.fleet.rids)
    path = write_config(tmp_path / "monitor.yaml", sim, rids[:2])
    service = Service(load_config(path))
    async with anyio.create_task_group() as tg:
        running: Running = await tg.start(service.run)
        await until(running.scheduler.first_round_done.is_set)
        first_hash = await metrics_text(running)

        write_config(path, sim, [rids[1], rids[2]])
        assert await service.reload()
        await until(
            lambda: any(e.rid == rids[2] for e in running.bus.recent(100) if e.type is EventType.OBSERVED)
        )
        assert any(e.rid == rids[0] for e in running.bus.recent(100) if e.type is EventType.REMOVED)
        text = await metrics_text(running)
        assert rids[0] not in text
        assert "foundry_monitor_config_last_reload_successful 1.0" in text
        assert _hash(text) != _hash(first_hash)

        path.write_text("foundry: [this is not valid\n")
        assert not await service.reload()
        text = await metrics_text(running)
        assert "foundry_monitor_config_last_reload_successful 0.0" in text
        assert set(running.tracker.records) == {rids[1], rids[2]}
        # Still polled (by its own GET or its model's list): its answers keep arriving.
        for _ in range(3):
            answered = running.tracker.records[rids[2]].last_success
            await until(lambda a=answered: running.tracker.records[rids[2]].last_success != a)
        tg.cancel_scope.cancel()


def _hash(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("foundry_monitor_config_hash{"):
            return line
    raise AssertionError("no config hash series")


async def test_sighup_and_a_changed_file_reload_a_running_process(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """In a real process: SIGHUP applies an edited config; an edit alone is picked up by the file watch."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rids = list(sim.fleet.rids)
    path = tmp_path / "monitor.yaml"

    def configure(selected: list[str]) -> None:
        write_config(path, sim, selected, server={"listen": f"127.0.0.1:{port}"})

    configure(rids[:2])
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(path)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"

    async def watched() -> set[str]:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(base + "/api/v1/deployments") as response,
            ):
                return {item["rid"] for item in (await response.json())["deployments"]}
        except aiohttp.ClientError:
            return set()

    async def wait_for(expected: set[str]) -> None:
        with anyio.fail_after(20):
            while await watched() != expected:
                await anyio.sleep(0.1)

    try:
        await wait_for(set(rids[:2]))
        configure(rids[:3])
        proc.send_signal(signal.SIGHUP)
        await wait_for(set(rids[:3]))
        configure([rids[2]])  # no signal: the file watch notices
        await wait_for({rids[2]})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
    assert proc.returncode == 0
    assert b"Traceback" not in stderr
    assert b"config_reloaded" in stderr
