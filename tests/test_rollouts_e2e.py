"""End to end: a stuck rollout in the simulator reaches the file sink, the status page's history and a real
Alertmanager, through the monitor's versions poller, its outbox and its sinks; a rollout that lands within
the grace gives no version_behind and no alert.

Model A has two direct deployments on master and one pinned deployment; model B one direct deployment on
master. A version published on A's master never rolls out (stuck); one published on B's master at the same
moment rolls out at once. By the time A's deployments are announced behind (the grace after the version's
``createdTime``), B's deployment has long run its new version: had it been judged behind past the grace, its
event would be there too.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from monitor.config import Config, parse_config
from monitor.service import Service
from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorHandle, SimulatorSettings, running_simulator
from tests.test_alerting_e2e import free_port, get_json, server_process, until
from tests.test_alertmanager_e2e import alertmanager_args

TOKEN = "rollouts-e2e-token"
GRACE = 2.0
ALERT = "FoundryDeploymentRolloutStuck"

needs_alertmanager = pytest.mark.skipif(
    not os.environ.get("CI") and not shutil.which("prometheus-alertmanager"),
    reason="prometheus-alertmanager is not installed (CI installs it)",
)


@dataclass(frozen=True, slots=True)
class Fleet:
    """The simulator and which of its deployments are which."""

    sim: SimulatorHandle
    model_a: str
    model_b: str
    a_direct: frozenset[str]
    a_pinned: str
    b_direct: str


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    settings = SimulatorSettings(size=0, seed=5, rates=Rates(), tick=0.1, tokens=(TOKEN,))
    async with running_simulator(settings) as sim:
        f = sim.fleet
        first = f.add(branch="master")
        model_a = f.model_of(first)
        second = f.add(model_rid=model_a, branch="master")
        pinned = f.add(model_rid=model_a, branch=None)
        b_direct = f.add(branch="master")
        for rid in f.rids:
            f.set_status(rid, "ACTIVE", True)
        yield Fleet(sim, model_a, f.model_of(b_direct), frozenset({first, second}), pinned, b_direct)


def monitor_config(fleet: Fleet, state: Path, events: Path, am_url: str | None) -> Config:
    sinks: dict[str, Any] = {"stdout": False, "file": {"path": str(events)}}
    if am_url is not None:
        sinks["alertmanager"] = {"url": am_url, "resend_interval": "1s"}
    return parse_config(
        {
            "foundry": {"base_url": fleet.sim.base_url, "auth": {"token": TOKEN}, "retries": {"attempts": 1}},
            "deployments": [{"rid": rid, "name": f"dep-{i}"} for i, rid in enumerate(fleet.sim.fleet.rids)],
            "polling": {
                "interval": "200ms",
                "fast_interval": "100ms",
                "jitter": 0,
                "versions_interval": "200ms",
                "rollout_grace": f"{GRACE:g}s",
            },
            "server": {"listen": "127.0.0.1:0"},
            "sinks": sinks,
            "state": {"path": str(state)},
        },
        environ={},
    )


def events_of(path: Path, kind: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [event for event in lines if event["type"] == kind]


def publish(fleet: Fleet) -> None:
    """A stuck version on A's master and one on B's master that rolls out at once, both created now."""
    f = fleet.sim.fleet
    # The simulated clock moves only while a rollout is pending: catch it up so createdTime reads as now.
    f.step(max(0.0, time.time() - f.epoch - f.now))
    f.publish_version(fleet.model_b, "master", delay=0.0)
    f.publish_version(fleet.model_a, "master", stuck=True)


async def run_stuck_rollout(
    fleet: Fleet, tmp_path: Path, am_url: str | None, *, then: Callable[[], Awaitable[Any]] | None = None
) -> Path:
    """Run the monitor until the file sink has version_behind for A's direct deployments, the status page's
    feed of each shows it (and ``then`` is truthy, when given); return the events file."""
    events = tmp_path / "events.jsonl"
    config = monitor_config(fleet, tmp_path / "monitor.sqlite3", events, am_url)
    async with anyio.create_task_group() as tg:
        running = await tg.start(Service(config).run)

        async def all_observed() -> bool:
            return len(events_of(events, "deployment.observed")) == 4

        await until(all_observed, 30, "every deployment observed")
        publish(fleet)

        async def announced() -> bool:
            return {e["rid"] for e in events_of(events, "deployment.version_behind")} >= fleet.a_direct

        await until(announced, 30, "version_behind for A's direct deployments")

        async def in_history() -> bool:
            async with aiohttp.ClientSession() as session:
                for rid in fleet.a_direct:
                    url = f"http://127.0.0.1:{running.port}/feeds/deployments/{rid}.atom"
                    async with session.get(url) as response:
                        if "version behind" not in await response.text():
                            return False
            return True

        await until(in_history, 30, "version_behind in the status history")
        if then is not None:
            await until(then, 30, "the further condition")
        tg.cancel_scope.cancel()
    return events


def check_file_sink(fleet: Fleet, events: Path) -> None:
    behind = events_of(events, "deployment.version_behind")
    assert {e["rid"] for e in behind} == fleet.a_direct
    assert len(behind) == len(fleet.a_direct)
    newest = fleet.sim.fleet.latest_version(fleet.model_a, "master")
    assert newest is not None
    for event in behind:
        assert (event["model_rid"], event["branch"], event["latest_version_rid"]) == (
            fleet.model_a,
            "master",
            newest.rid,
        )
        assert event["model_version_rid"] != newest.rid
        assert event["behind_seconds"] > GRACE
    rolled = [
        e
        for e in events_of(events, "deployment.changed")
        if e["rid"] == fleet.b_direct
        and any(c["field"] == "modelVersion.modelVersionRid" for c in e["changes"])
    ]
    assert rolled, "B's rollout was observed"
    assert events_of(events, "deployment.version_caught_up") == []


async def test_a_stuck_rollout_reaches_the_file_sink_for_its_branch_deployments_only(
    fleet: Fleet, tmp_path: Path
) -> None:
    """version_behind reaches the file sink for exactly A's direct deployments (not the pinned one), with the
    running and the newest version and a lag past the grace; B's rollout, which landed within the grace,
    gives none."""
    events = await run_stuck_rollout(fleet, tmp_path, None)
    check_file_sink(fleet, events)


@needs_alertmanager
async def test_a_stuck_rollout_fires_rollout_stuck_in_a_real_alertmanager(
    fleet: Fleet, tmp_path: Path
) -> None:
    """The Alertmanager sink pushes FoundryDeploymentRolloutStuck for exactly A's direct deployments, and a
    real Alertmanager holds them active, while the file sink gets their version_behind."""
    port = free_port()
    am_url = f"http://127.0.0.1:{port}"
    (tmp_path / "alertmanager.yml").write_text(
        yaml.safe_dump({"route": {"receiver": "none"}, "receivers": [{"name": "none"}]})
    )
    am_args = alertmanager_args(tmp_path, port)
    with server_process(am_args, tmp_path / "am.log"):
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                return isinstance(await get_json(session, am_url + "/api/v2/alerts"), list)

            async def stuck() -> set[str]:
                alerts = await get_json(session, am_url + "/api/v2/alerts?active=true")
                return {
                    a["labels"]["rid"]
                    for a in alerts
                    if a["labels"].get("alertname") == ALERT
                    and a["labels"].get("source") == "foundry-monitor"
                    and a["status"]["state"] == "active"
                }

            await until(ready, 30, "alertmanager ready")

            async def both_stuck() -> bool:
                return await stuck() >= fleet.a_direct

            events = await run_stuck_rollout(fleet, tmp_path, am_url, then=both_stuck)
            assert await stuck() == fleet.a_direct
            check_file_sink(fleet, events)
