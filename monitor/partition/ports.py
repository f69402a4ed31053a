"""The partition port: which of the deployments this process would watch are its own.

The watch set (``monitor.watchset``) knows the *candidates*: every deployment the configuration names or a
discovery lists, the same set in every process that runs this configuration. A partition picks this
process's share of them. The watch set drives it like this, all from the event loop's thread:

1. Whenever the candidates change it calls ``offer(added, withdrawn)``, before it asks ``owns`` about any
   added RID. A partition that must acquire something per deployment (a lease) starts doing so here; it
   should not block: ``offer`` is synchronous and may be called with a whole fleet at start.
2. It watches a candidate exactly while ``owns(rid)`` is true, asking when the candidate is added (or its
   name or labels change) and again after every return of ``changed()``.
3. A task of its own loops: ask ``owns`` about every candidate and add or remove the difference, then
   await ``changed()``, with no checkpoint between the two. So a partition that sets an ``anyio.Event`` and
   replaces it at each change, and whose ``changed()`` awaits the Event current at the call, loses no
   change: one made before the call was seen by the pass just before it, and one made after sets the
   Event the call waits on.

What a partition may rely on, and what it must give:

- ``owns`` is called once per candidate on every ``changed()``, so it must be cheap (a set or dict lookup, or
  a hash) and must not do I/O. It answers for the candidates only; a RID never offered may get either answer.
- ``owns`` must be stable between two returns of ``changed()``: the watch set does not re-ask otherwise.
- Two processes running the same configuration must never both own one RID for longer than the partition
  documents (a static shard never; a lease at most until it expires), or both will report its changes.
- Losing a candidate makes the watch set stop watching it through ``Watcher.release``: quietly, since its
  new owner reports it and ownership is neither a change nor a removal. Only a deployment that is no
  candidate any more goes through ``Watcher.remove`` (``deployment.removed``, its record deleted).
"""

from __future__ import annotations

from collections.abc import Set
from typing import Protocol


class Partition(Protocol):
    """This process's share of the candidates the watch set offers; see the module for the protocol."""

    def offer(self, added: Set[str], withdrawn: Set[str]) -> None:
        """The candidates gained ``added`` and lost ``withdrawn`` (RIDs, disjoint)."""
        ...

    def owns(self, rid: str) -> bool:
        """Whether this process watches the candidate ``rid`` now: cheap, no I/O, stable until ``changed``."""
        ...

    async def changed(self) -> None:
        """Return once ``owns`` may answer otherwise for some candidate; a static partition never returns."""
        ...
