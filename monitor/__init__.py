"""Foundry live deployment monitor: polls deployments, diffs snapshots, exports metrics and events."""

from __future__ import annotations

__version__ = "0.1.0"
USER_AGENT = f"foundry-live-deployment-monitor/{__version__}"
