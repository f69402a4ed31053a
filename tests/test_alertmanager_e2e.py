"""End to end: the Alertmanager sink against a real Alertmanager on loopback, across a restart of the monitor.

Alertmanager resolves an alert by itself ``resolve_timeout`` after it last heard of it. A deployment that
stays FAILED through a restart of the monitor causes no event, so the alert must be sent again from what the
monitor knows of the deployment, not from the events it saw since start.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
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

TOKEN = "am-e2e-token"
#: Alertmanager's resolve_timeout in this test, in seconds.
RESOLVE_TIMEOUT = 3.0

pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not shutil.which("prometheus-alertmanager"),
    reason="prometheus-alertmanager is not installed (CI installs it)",
)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    async with running_simulator(SimulatorSettings(size=2, seed=8, rates=Rates(), tokens=(TOKEN,))) as handle:
        for rid in handle.fleet.rids:
            handle.fleet.set_status(rid, "ACTIVE", True)
        yield handle


def alertmanager_args(directory: Path, port: int) -> list[str]:
    """A single Alertmanager (no cluster) on loopback ``port``, configured and storing in ``directory``."""
    return [
        "prometheus-alertmanager",
        f"--config.file={directory / 'alertmanager.yml'}",
        f"--storage.path={directory / 'am'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]


def monitor_config(sim: SimulatorHandle, am_url: str, state: Path) -> Config:
    return parse_config(
        {
            "foundry": {"base_url": sim.base_url, "auth": {"token": TOKEN}, "retries": {"attempts": 1}},
            "deployments": [{"rid": rid, "name": f"dep-{i}"} for i, rid in enumerate(sim.fleet.rids)],
            "polling": {"interval": "200ms", "fast_interval": "100ms", "jitter": 0},
            "server": {"listen": "127.0.0.1:0"},
            "sinks": {"stdout": False, "alertmanager": {"url": am_url, "resend_interval": "1s"}},
            "state": {"path": str(state)},
        },
        environ={},
    )


async def test_a_deployment_failed_through_a_restart_stays_alerting_past_the_resolve_timeout(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """FAILED before the monitor starts: the alert fires; the monitor stops and starts again on the same
    state file; for twice Alertmanager's resolve_timeout after the restart the alert stays active on every
    check; and the deployment's recovery still resolves it."""
    victim = sim.fleet.rids[0]
    sim.fleet.set_status(victim, "FAILED", False)
    port = free_port()
    am_url = f"http://127.0.0.1:{port}"
    (tmp_path / "alertmanager.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"resolve_timeout": f"{RESOLVE_TIMEOUT:g}s"},
                "route": {"receiver": "none"},
                "receivers": [{"name": "none"}],
            }
        )
    )
    am_args = alertmanager_args(tmp_path, port)
    config = monitor_config(sim, am_url, tmp_path / "monitor.sqlite3")
    with server_process(am_args, tmp_path / "am.log"):
        async with aiohttp.ClientSession() as session:

            async def failing() -> list[dict[str, Any]]:
                alerts = await get_json(session, am_url + "/api/v2/alerts?active=true")
                return [
                    a
                    for a in alerts
                    if a["labels"].get("alertname") == "FoundryDeploymentFailed"
                    and a["labels"].get("rid") == victim
                    and a["labels"].get("source") == "foundry-monitor"
                    and a["status"]["state"] == "active"
                ]

            async def ready() -> bool:
                return isinstance(await get_json(session, am_url + "/api/v2/alerts"), list)

            await until(ready, 30, "alertmanager ready")
            async with anyio.create_task_group() as tg:
                await tg.start(Service(config).run)
                await until(failing, 30, "FoundryDeploymentFailed from the sink")
                tg.cancel_scope.cancel()

            async with anyio.create_task_group() as tg:
                await tg.start(Service(config).run)
                deadline = anyio.current_time() + 2 * RESOLVE_TIMEOUT
                while anyio.current_time() < deadline:
                    left = deadline - anyio.current_time()
                    assert await failing(), f"resolved {2 * RESOLVE_TIMEOUT - left:.1f}s after the restart"
                    await anyio.sleep(0.25)

                sim.fleet.set_status(victim, "ACTIVE", True)

                async def resolved() -> bool:
                    return await failing() == []

                await until(resolved, 30, "FoundryDeploymentFailed resolved after the recovery")
                tg.cancel_scope.cancel()
