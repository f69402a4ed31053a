"""The port of a partition: whether this process watches a deployment, and word when that changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Partition(Protocol):
    """Which deployments of the fleet are this process's to watch."""

    def owns(self, rid: str) -> bool:
        """Whether this process watches ``rid`` now."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever what ``owns`` answers may have changed."""
        ...
