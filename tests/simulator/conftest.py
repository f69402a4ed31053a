"""Fixtures for the simulator tests: a running simulator on a loopback port 0, and a small raw API client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import anyio
import pytest
import yarl

from monitor.simulator import Rates, SimulatorHandle, SimulatorSettings, running_simulator

TOKEN = "test-token"
CLIENT_ID = "svc-monitor"
CLIENT_SECRET = "svc-secret-value"
API = "/api/v2/models/liveDeployments"

#: A static fleet (no life), one static token and one OAuth2 client.
SETTINGS = SimulatorSettings(
    size=120,
    seed=7,
    rates=Rates(),
    tokens=(TOKEN,),
    clients={CLIENT_ID: CLIENT_SECRET},
)


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for one request."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """Raw requests to the simulator's Foundry endpoints, with the test token unless told otherwise."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def get(
        self,
        rid: str,
        *,
        token: str | None = TOKEN,
        preview: str | None = "true",
        raw_path: str | None = None,
    ) -> Answer:
        params = {} if preview is None else {"preview": preview}
        return await self.request("GET", raw_path or f"{API}/{rid}", token=token, params=params)

    async def list(
        self,
        model_rid: str | None,
        *,
        branch: str | None = None,
        token: str | None = TOKEN,
        preview: str = "true",
    ) -> Answer:
        params = {"preview": preview}
        if model_rid is not None:
            params["modelRid"] = model_rid
        if branch is not None:
            params["branch"] = branch
        return await self.request("GET", API, token=token, params=params)

    async def versions(
        self,
        model_rid: str,
        *,
        branch: str | None = None,
        page_size: str | int | None = None,
        page_token: str | None = None,
        token: str | None = TOKEN,
        preview: str | None = "true",
    ) -> Answer:
        params = {
            name: str(value)
            for name, value in (
                ("branch", branch),
                ("pageSize", page_size),
                ("pageToken", page_token),
                ("preview", preview),
            )
            if value is not None
        }
        return await self.request("GET", f"/api/v2/models/{model_rid}/versions", token=token, params=params)

    async def token(self, form: Mapping[str, str], headers: Mapping[str, str] | None = None) -> Answer:
        return await self.request(
            "POST", "/multipass/api/oauth2/token", token=None, data=dict(form), headers=headers
        )

    async def request(
        self,
        method: str,
        path: str | yarl.URL,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Answer:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, path, headers=sent, **kwargs) as response:
            return Answer(response.status, dict(response.headers), await response.read())

    async def control(self, method: str, path: str, body: Any = None) -> Answer:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        return await self.request(method, "/_sim" + path, **kwargs)


@pytest.fixture
def settings() -> SimulatorSettings:
    return SETTINGS


@pytest.fixture
async def sim(settings: SimulatorSettings, anyio_backend: str) -> AsyncIterator[SimulatorHandle]:
    # Asking for anyio_backend keeps anyio's plugin from re-creating the test without its parameters.
    async with running_simulator(settings) as handle:
        yield handle


@pytest.fixture
async def api(sim: SimulatorHandle) -> AsyncIterator[Api]:
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(sim.base_url, timeout=timeout) as session:
        yield Api(session)


def with_settings(**changes: Any) -> pytest.MarkDecorator:
    """Parametrize the ``settings`` fixture of one test."""
    return pytest.mark.parametrize("settings", [replace(SETTINGS, **changes)], ids=["custom"])


async def wait_for(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)
