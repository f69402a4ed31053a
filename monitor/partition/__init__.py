"""Partitions: which of the deployments the watch set would watch are this process's (``ports``); ``static``
holds the two that never change while the process runs, everything and a jump-hash shard of the fleet;
``leased`` shares the fleet among replicas through leases in the state database (its arithmetic in
``assignment``)."""

from __future__ import annotations

from monitor.partition.ports import Partition
from monitor.partition.static import EVERYTHING, Everything, Shard, ShardError

__all__ = ["EVERYTHING", "Everything", "Partition", "Shard", "ShardError"]
