"""A loopback Foundry live-deployment API for demos, tests and benchmarks: fleet model, faults and server."""

from __future__ import annotations

from monitor.simulator.faults import FLEET, TOKEN_ENDPOINT, Fault, FaultRegistry, TokenStore
from monitor.simulator.fleet import DEFAULT_RATES, Change, Fleet, Rates
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
    "Rates",
    "RequestCounters",
    "SimulatorHandle",
    "SimulatorSettings",
    "TokenStore",
    "running_simulator",
    "serve",
]
