"""Secrets never leave the monitor: with debug logging and every upstream fault driven, no sentinel token,
client secret, issued access token or environment variable value appears in any output of a real process.

The monitor runs as ``python -m monitor run`` so that everything it could print is captured: structlog,
stdlib logging, warnings and tracebacks on stderr, the stdout sink, the file sink and the state file, besides
``/metrics``, ``/api/v1/deployments`` and ``/api/v1/events``.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from monitor.simulator.faults import TOKEN_ENDPOINT, Fault, IssuedToken, TokenStore
from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorHandle, SimulatorSettings, running_simulator

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
SENTINEL_TOKEN = "tok-SENTINEL-5c1f9a70e2b4"
SENTINEL_ENV = "env-SENTINEL-0d8e3b6a41f7"
SENTINEL_ENV_OTHER = "env-SENTINEL-OTHER-93c2e5"
SENTINEL_ENV_NEW = "env-SENTINEL-NEW-7a4b0c18"
SENTINEL_SECRET = "sec-SENTINEL-e61f2d09b3a8"
CLIENT_ID = "leak-test-client"

#: One fault per deployment, each for its next two requests; between them every error kind the client has.
FAULTS: tuple[tuple[Fault, str | None], ...] = (
    (Fault(kind="status", status=500, count=2), "server_error"),
    (Fault(kind="status", status=502, count=2), "server_error"),
    (Fault(kind="status", status=503, count=2), "unavailable"),
    (Fault(kind="status", status=503, retry_after="1", count=2), "unavailable"),
    (Fault(kind="status", status=429, retry_after="1", count=2), "rate_limited"),
    (Fault(kind="status", status=401, count=2), "unauthorized"),
    (Fault(kind="status", status=403, count=2), "permission_denied"),
    (Fault(kind="status", status=404, count=2), "not_found"),
    (Fault(kind="status", status=404, empty=True, count=2), "api_not_found"),
    (Fault(kind="hang", count=2), "timeout"),
    (Fault(kind="delay", delay=2.0, count=2), "timeout"),
    (Fault(kind="reset", count=2), "connection"),
    (Fault(kind="cut", count=2), "connection"),
    (Fault(kind="html", count=2), "server_error"),
    (Fault(kind="truncate", count=2), "not_json"),
    (Fault(kind="wrong_shape", shape="missing_status", count=2), "wrong_shape"),
    (Fault(kind="wrong_shape", shape="missing_runtime", count=2), "wrong_shape"),
    (Fault(kind="wrong_shape", shape="wrong_types", count=2), "wrong_shape"),
    (Fault(kind="wrong_shape", shape="not_object", count=2), "wrong_shape"),
    (Fault(kind="huge", size=200_000, count=2), "too_large"),
    (Fault(kind="unknown_state", count=2), None),
)


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 30.0) -> None:
    """Wait for ``condition`` (plain or asynchronous) with a bound."""
    with anyio.fail_after(timeout):
        while True:
            result = condition()
            if await result if inspect.isawaitable(result) else result:
                return
            await anyio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plant(sim: SimulatorHandle, values: Mapping[str, str]) -> None:
    """Give every deployment secret-looking environment variables."""
    for rid in sim.fleet.rids:
        sim.fleet.reconfigure(rid, environmentVariables=dict(values))


class MonitorProcess:
    """``python -m monitor run`` with its stdout and stderr in files, and its HTTP API."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], env: Mapping[str, str]) -> None:
        self.dir = tmp_path
        self.stdout = tmp_path / "stdout.log"
        self.stderr = tmp_path / "stderr.log"
        self.config_path = tmp_path / "monitor.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config_path)],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "always", **env},
                stdout=out,
                stderr=err,
            )
        self.base = ""

    async def started(self) -> None:
        """Wait for the HTTP server's log line, which names the port, and for the first round of polls."""

        async def listening() -> bool:
            assert self.proc.poll() is None, self.stderr.read_text()
            for line in self.stderr.read_text().splitlines():
                if '"http_listening"' in line:
                    self.base = f"http://127.0.0.1:{json.loads(line)['port']}"
                    return True
            return False

        await until(listening)
        await until(lambda: self.status("/readyz", 200))

    async def status(self, path: str, expected: int) -> bool:
        async with aiohttp.ClientSession() as session, session.get(self.base + path) as response:
            return response.status == expected

    async def read(self, path: str) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(self.base + path) as response:
            assert response.status == 200
            return await response.read()

    async def deployments(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(await self.read("/api/v1/deployments"))["deployments"]
        return items

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await anyio.to_thread.run_sync(lambda: self.proc.wait(timeout=30))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def outputs(self) -> dict[str, bytes]:
        """Everything the process served over HTTP (while it runs)."""
        return {
            "/metrics": await self.read("/metrics"),
            "/api/v1/deployments": await self.read("/api/v1/deployments"),
            "/api/v1/events": await self.read("/api/v1/events?limit=10000"),
        }

    def files(self) -> dict[str, bytes]:
        """Everything it wrote to disk, stdout and stderr included (after it stopped)."""
        return {
            path.name: path.read_bytes()
            for path in sorted(self.dir.iterdir())
            if path.is_file() and path != self.config_path
        }


def monitor_config(
    base_url: str, rids: Sequence[str], tmp_path: Path, auth: dict[str, str]
) -> dict[str, Any]:
    return {
        "foundry": {
            "base_url": base_url,
            "auth": auth,
            "timeouts": {"connect": "500ms", "read": "500ms", "total": "1s"},
            "retries": {
                "attempts": 2,
                "backoff_initial": "50ms",
                "backoff_max": "100ms",
                "retry_after_max": "2s",
            },
            "max_body_bytes": 65536,
        },
        "deployments": [{"rid": rid, "name": f"dep-{i}"} for i, rid in enumerate(rids)],
        "polling": {
            "interval": "200ms",
            "fast_interval": "100ms",
            "jitter": 0,
            "requests_per_second": 1000,
            "unreachable_after": 2,
            "error_backoff_max": "200ms",
            "breaker": {"min_polls": 1_000_000},
            # The faults strike, and settle() counts, each deployment's own GET: no list batching.
            "batch": "off",
        },
        "server": {"listen": "127.0.0.1:0"},
        "sinks": {"stdout": True, "file": {"path": str(tmp_path / "events.jsonl")}},
        "state": {"path": str(tmp_path / "monitor.sqlite3")},
        "logging": {"level": "debug", "format": "json"},
    }


def assert_absent(outputs: Mapping[str, bytes], secrets: Sequence[str]) -> None:
    found = [
        f"secret #{index} in {name}"
        for name, data in outputs.items()
        for index, secret in enumerate(secrets)
        if secret.encode() in data
    ]
    assert found == []


async def key_changes_reported(proc: MonitorProcess) -> int:
    """How many reported changes include the API_KEY environment variable."""
    events = json.loads(await proc.read("/api/v1/events?limit=10000"))["events"]
    field = "runtimeConfiguration.environmentVariables.API_KEY"
    return sum(any(c["field"] == field for c in event.get("changes", ())) for event in events)


async def settle(sim: SimulatorHandle, proc: MonitorProcess) -> None:
    """Wait until every fault is used up and every deployment has answered twice since, and is up."""
    await until(lambda: not sim.faults)
    polled = dict(sim.counters.by_target)

    async def answered_again() -> bool:
        if any(sim.counters.by_target[rid] < polled.get(rid, 0) + 2 for rid in sim.fleet.rids):
            return False
        return all(d["up"] and d["found"] for d in await proc.deployments())

    await until(answered_again)


async def test_no_secret_in_any_output_under_every_fault(tmp_path: Path) -> None:
    """Static token and environment variable values, debug logging, every fault (token revoked and the
    server gone included): none of the sentinels appears in logs, events, state, metrics or the API."""
    port = free_port()
    settings = SimulatorSettings(
        port=port, size=len(FAULTS) + 1, seed=21, rates=Rates(), tokens=(SENTINEL_TOKEN,)
    )
    planted = {"API_KEY": SENTINEL_ENV, "DB_PASSWORD": SENTINEL_ENV_OTHER}
    proc: MonitorProcess | None = None
    try:
        async with running_simulator(settings) as sim:
            plant(sim, planted)
            rids = list(sim.fleet.rids)
            config = monitor_config(sim.base_url, rids, tmp_path, {"token": "${FOUNDRY_TOKEN}"})
            proc = MonitorProcess(tmp_path, config, {"FOUNDRY_TOKEN": SENTINEL_TOKEN})
            await proc.started()
            for rid, (fault, _) in zip(rids, FAULTS, strict=False):
                sim.faults.set(fault, rid)
            await settle(sim, proc)

            refusals = sim.counters.by_status[401]
            sim.tokens.revoke(SENTINEL_TOKEN)
            await until(lambda: sim.counters.by_status[401] >= refusals + 2 * len(rids))
            sim.tokens.add_static(SENTINEL_TOKEN)
            await settle(sim, proc)

            # A new value is a change: reported, by digest.
            plant(sim, {**planted, "API_KEY": SENTINEL_ENV_NEW})

            async def env_change_reported() -> bool:
                return await key_changes_reported(proc) == len(rids)

            await until(env_change_reported)

        async def refused() -> bool:
            return all(d["last_error"] == "connection" for d in await proc.deployments())

        await until(refused)
        async with running_simulator(settings) as sim:
            plant(sim, {**planted, "API_KEY": SENTINEL_ENV_NEW})
            await settle(sim, proc)
            served = await proc.outputs()
        assert await proc.stop() == 0
        written = proc.files()
    finally:
        if proc is not None:
            proc.kill()

    stderr = written["stderr.log"].decode()
    # The faults did reach the monitor, and it logged them at debug level.
    for kind in {kind for _, kind in FAULTS if kind is not None}:
        assert f'"error": "{kind}"' in stderr, kind
    assert '"retrying"' in stderr
    assert "Traceback" not in stderr
    assert b"hmac-sha256:" in written["events.jsonl"]
    assert b"runtimeConfiguration.environmentVariables.API_KEY" in written["events.jsonl"]
    assert {"stdout.log", "events.jsonl", "monitor.sqlite3"} <= written.keys()
    assert_absent(
        {**served, **written},
        [
            SENTINEL_TOKEN,
            SENTINEL_ENV,
            SENTINEL_ENV_OTHER,
            SENTINEL_ENV_NEW,
            SENTINEL_TOKEN.rsplit("-", 1)[1],
        ],
    )


async def test_no_client_secret_or_access_token_in_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OAuth2 client credentials with short-lived tokens, expired and revoked tokens and a failing token
    endpoint: neither the client secret nor any access token issued appears in any output."""
    settings = SimulatorSettings(
        size=4, seed=22, rates=Rates(), tokens=(), clients={CLIENT_ID: SENTINEL_SECRET}, token_ttl=1.5
    )
    issued: list[str] = []
    async with running_simulator(settings) as sim:
        original = sim.tokens.issue

        def issue(client_id: str, client_secret: str) -> IssuedToken | None:
            token = original(client_id, client_secret)
            if token is not None:
                issued.append(token.access_token)
            return token

        monkeypatch.setattr(sim.tokens, "issue", issue)
        rids = list(sim.fleet.rids)
        auth = {"client_id": CLIENT_ID, "client_secret": "${FOUNDRY_CLIENT_SECRET}"}
        config = monitor_config(sim.base_url, rids, tmp_path, auth)
        proc = MonitorProcess(tmp_path, config, {"FOUNDRY_CLIENT_SECRET": SENTINEL_SECRET})
        try:
            await proc.started()
            for fault in (
                Fault(kind="status", status=500, count=1),
                Fault(kind="html", count=1),
                Fault(kind="wrong_shape", count=1),
                Fault(kind="hang", count=1),
                Fault(kind="reset", count=1),
            ):
                fetched = len(issued)
                _expire_or_revoke(sim.tokens, fetched)
                sim.faults.set(fault, TOKEN_ENDPOINT)

                def refetched(before: int = fetched) -> bool:
                    return not sim.faults and len(issued) > before

                await until(refetched)
            await settle(sim, proc)
            served = await proc.outputs()
            assert await proc.stop() == 0
        finally:
            proc.kill()
    written = proc.files()

    assert len(issued) >= 6
    assert sim.counters.by_status[401] >= 1, "no stale token was ever refused"
    basic = base64.b64encode(f"{CLIENT_ID}:{SENTINEL_SECRET}".encode()).decode()
    assert_absent({**served, **written}, [SENTINEL_SECRET, basic, *issued])


def _expire_or_revoke(tokens: TokenStore, turn: int) -> None:
    """Make the token in use stale, alternating between the two ways a server does it."""
    if turn % 2:
        tokens.revoke_all()
    else:
        tokens.expire()
