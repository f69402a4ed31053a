"""A loopback Foundry API of live deployments and model versions, for demos, tests and benchmarks."""

from __future__ import annotations

from monitor.simulator.faults import FLEET, TOKEN_ENDPOINT, Fault, FaultRegistry, TokenStore
from monitor.simulator.fleet import DEFAULT_RATES, Change, Fleet, PublishedVersion, Rates, Rollouts
from monitor.simulator.server import (
    DEFAULT_TOKEN,
    Life,
    RequestCounters,
    SimulatorHandle,
    SimulatorSettings,
    running_simulator,
    serve,
)

__all__ = [
    "DEFAULT_RATES",
    "DEFAULT_TOKEN",
    "FLEET",
    "TOKEN_ENDPOINT",
    "Change",
    "Fault",
    "FaultRegistry",
    "Fleet",
    "Life",
    "PublishedVersion",
    "Rates",
    "RequestCounters",
    "Rollouts",
    "SimulatorHandle",
    "SimulatorSettings",
    "TokenStore",
    "running_simulator",
    "serve",
]
