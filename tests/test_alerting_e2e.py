"""End to end: simulator, monitor, a real Prometheus with deploy/'s rules and a real Alertmanager, on loopback.

The rules are the shipped ones with every duration divided by 60 (``for: 2m`` becomes ``2s``), so that a run
takes seconds; scrape and evaluation intervals are 1 s.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from monitor.config import parse_config
from monitor.service import Running, Service
from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorHandle, SimulatorSettings, running_simulator

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "e2e-token"
TOOLS = ("prometheus", "prometheus-alertmanager")

pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not all(shutil.which(t) for t in TOOLS),
    reason="prometheus and prometheus-alertmanager are not installed (CI installs them)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scale(text: str) -> str:
    """Every duration in ``text`` divided by 60: minutes become seconds, hours minutes."""
    return re.sub(r"(\d+)([mh])\b", lambda m: m.group(1) + {"m": "s", "h": "m"}[m.group(2)], text)


def scaled_rules(path: Path) -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = _scale(rule[key])
            rule["expr"] = re.sub(r"\[[^\]]+\]|offset \S+", lambda m: _scale(m.group(0)), rule["expr"])
    path.write_text(yaml.safe_dump(rules))


@contextmanager
def server_process(args: list[str], log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        try:
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Await ``condition()`` (an async callable) until it is truthy, within ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while True:
            try:
                value = await condition()
            except (aiohttp.ClientError, OSError):
                value = None
            if value:
                return value
            await anyio.sleep(0.25)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.json()


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    async with running_simulator(SimulatorSettings(size=6, seed=3, rates=Rates(), tokens=(TOKEN,))) as handle:
        for rid in handle.fleet.rids:
            handle.fleet.set_status(rid, "ACTIVE", True)
        yield handle


async def test_failed_deployment_alerts_and_resolves_in_real_prometheus_and_alertmanager(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """A healthy fleet fires nothing; FAILED fires from the rules and the sink; recovery resolves both."""
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    rids = list(sim.fleet.rids)
    config = parse_config(
        {
            "foundry": {"base_url": sim.base_url, "auth": {"token": TOKEN}},
            "deployments": [{"rid": rid, "name": f"dep-{i}"} for i, rid in enumerate(rids)],
            "polling": {"interval": "500ms", "fast_interval": "250ms", "staleness": "30s"},
            "server": {"listen": "127.0.0.1:0"},
            "sinks": {"stdout": False, "alertmanager": {"url": am_url, "resend_interval": "5s"}},
            "state": {"path": str(tmp_path / "monitor.sqlite3")},
        },
        environ={},
    )
    scaled_rules(tmp_path / "rules.yml")
    async with anyio.create_task_group() as tg, aiohttp.ClientSession() as session:
        running: Running = await tg.start(Service(config).run)
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(tmp_path / "rules.yml")],
                    "alerting": {
                        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "foundry-monitor",
                            "static_configs": [{"targets": [f"127.0.0.1:{running.port}"]}],
                        }
                    ],
                }
            )
        )
        am_args = [
            "prometheus-alertmanager",
            f"--config.file={ROOT / 'deploy' / 'alertmanager' / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ]
        prom_args = [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ]
        with server_process(am_args, tmp_path / "am.log"), server_process(prom_args, tmp_path / "prom.log"):

            async def alerts() -> list[dict[str, Any]]:
                return await get_json(session, am_url + "/api/v2/alerts")  # type: ignore[no-any-return]

            async def scraped() -> bool:
                result = await get_json(session, prom_url + '/api/v1/query?query=up{job="foundry-monitor"}')
                return any(r["value"][1] == "1" for r in result["data"]["result"])

            async def alertmanager_ready() -> bool:
                return isinstance(await alerts(), list)

            await until(alertmanager_ready, 30, "alertmanager ready")
            await until(scraped, 60, "prometheus scraping the monitor")

            # Healthy: for longer than any scaled for: of the deployment alerts (the longest, 30m, is 30 s
            # scaled; the ones a healthy fleet could trip are 2-10 s), nothing reaches Alertmanager.
            with anyio.move_on_after(15):
                while True:
                    assert await alerts() == [], "an alert fired on a healthy fleet"
                    await anyio.sleep(0.5)

            victim = rids[0]
            sim.fleet.set_status(victim, "FAILED", False)

            def failed(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [
                    a
                    for a in items
                    if a["labels"].get("alertname") == "FoundryDeploymentFailed"
                    and a["labels"].get("rid") == victim
                ]

            async def both_fired() -> bool:
                sources = {("sink" if a["labels"].get("source") else "rules") for a in failed(await alerts())}
                return sources == {"sink", "rules"}

            await until(both_fired, 60, "FoundryDeploymentFailed from the rules and from the sink")

            sim.fleet.set_status(victim, "ACTIVE", True)

            async def resolved() -> bool:
                return failed(await alerts()) == []

            await until(resolved, 90, "FoundryDeploymentFailed resolved")
            tg.cancel_scope.cancel()
    log = (tmp_path / "prom.log").read_text()
    assert "error loading" not in log.lower(), log[-2000:]


async def test_one_shard_down_mutes_no_deployment_alert_in_a_real_alertmanager(tmp_path: Path) -> None:
    """The shipped alertmanager.yml in a real Alertmanager: one static shard down (FoundryMonitorDown) mutes
    that shard's own polling alert but no deployment alert of the job; once the job is blind
    (FoundryMonitorBlind, as when the last shard or a single monitor is down) the deployment alert is muted
    too, while the down and blind alerts themselves still notify."""
    port = free_port()
    am_url = f"http://127.0.0.1:{port}"
    am_args = [
        "prometheus-alertmanager",
        f"--config.file={ROOT / 'deploy' / 'alertmanager' / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]

    def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "severity": severity, "job": "foundry-monitor", **labels}}

    failed = alert(
        "FoundryDeploymentFailed",
        "critical",
        rid="ri.foundry-ml-live.main.live-deployment.d1",
        deployment="d1",
    )
    down = alert("FoundryMonitorDown", "critical", instance="shard-0:9708")
    polling = alert("FoundryMonitorPollErrorRatioHigh", "warning", instance="shard-0:9708")
    blind = alert("FoundryMonitorBlind", "warning")
    async with aiohttp.ClientSession() as session:

        async def post(alerts: list[dict[str, Any]]) -> None:
            async with session.post(am_url + "/api/v2/alerts", json=alerts) as response:
                response.raise_for_status()

        async def statuses() -> dict[str, dict[str, Any]]:
            items = await get_json(session, am_url + "/api/v2/alerts")
            return {item["labels"]["alertname"]: item["status"] for item in items}

        async def ready() -> bool:
            return isinstance(await get_json(session, am_url + "/api/v2/alerts"), list)

        def muted(name: str) -> Callable[[], Any]:
            async def check() -> bool:
                return bool((await statuses()).get(name, {}).get("inhibitedBy"))

            return check

        with server_process(am_args, tmp_path / "am.log"):
            await until(ready, 30, "alertmanager ready")
            await post([failed, down, polling])
            # The down shard's own polling alert muted: the inhibitor has seen FoundryMonitorDown.
            await until(muted("FoundryMonitorPollErrorRatioHigh"), 30, "polling alert muted by its shard")
            now = await statuses()
            assert now["FoundryDeploymentFailed"]["state"] == "active"
            assert now["FoundryDeploymentFailed"]["inhibitedBy"] == []
            assert now["FoundryMonitorDown"]["state"] == "active"
            await post([blind])
            await until(muted("FoundryDeploymentFailed"), 30, "deployment alert muted by the blind job")
            now = await statuses()
            assert now["FoundryMonitorDown"]["state"] == "active"
            assert now["FoundryMonitorBlind"]["state"] == "active"
