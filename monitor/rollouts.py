"""Model-version lag: which direct deployments run other than their branch's newest version, and since when.

Pure and synchronous. ``Rollouts`` keeps the newest version of each (model, branch) as last listed;
``Rollouts.check`` judges every watched deployment against it and returns the rollout events. Only a
successful listing makes a deployment behind: a branch that could not be listed leaves what was known as it
was. The lag itself lives on the tracker's records (``Record.lag``), so it survives restarts with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.events import Event, EventType
from monitor.model import LiveDeployment, ModelVersion, latest_version

if TYPE_CHECKING:
    from monitor.tracker import Record, Tracker

#: A branch of a model: (model RID, branch name).
BranchKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Lag:
    """A deployment running other than its branch's newest version, as a successful listing showed it."""

    model_rid: str
    branch: str
    latest_version_rid: str
    #: Since when it has been behind: the newer version's ``createdTime`` (however late the monitor listed
    #: it), never later than when the listing was judged.
    since: float
    #: When ``deployment.version_behind`` was emitted; None while the grace runs.
    announced_at: float | None = None

    @property
    def key(self) -> BranchKey:
        return (self.model_rid, self.branch)

    def seconds(self, now: float) -> float:
        """How long the deployment has been behind at ``now``."""
        return max(0.0, now - self.since)


def branch_of(snapshot: LiveDeployment | None) -> BranchKey | None:
    """The branch a direct deployment follows; None for a pinned one (or one not seen yet)."""
    if snapshot is None or snapshot.branch is None:
        return None
    return (snapshot.model_rid, snapshot.branch)


def assess(
    lag: Lag | None, snapshot: LiveDeployment, latest: Mapping[BranchKey, ModelVersion], now: float
) -> Lag | None:
    """The deployment's lag now, from what it was, what the deployment runs and the branches' newest versions.

    A deployment that stays behind keeps the time it fell behind, even when a still newer version appears.
    """
    key = branch_of(snapshot)
    if key is None:
        return None  # pinned deployments follow no branch: never behind
    newest = latest.get(key)
    if newest is None:
        # The branch has not been listed (yet, or it failed): what was known of it stands; a lag known of
        # another branch (the deployment moved) no longer says anything.
        return lag if lag is None or lag.key == key else None
    if snapshot.model_version_rid == newest.rid:
        return None
    if lag is not None and lag.key == key:
        return (
            lag
            if lag.latest_version_rid == newest.rid
            else dataclasses.replace(lag, latest_version_rid=newest.rid)
        )
    return Lag(key[0], key[1], newest.rid, since=min(newest.created_time, now))


class Rollouts:
    """The newest version of each watched branch, and the rollout events of the deployments that follow them.

    ``deployment.version_behind`` is emitted once a deployment has been behind for longer than ``grace``;
    ``deployment.version_caught_up`` once a deployment so announced is no longer behind (it runs the newest
    version, no longer follows that branch, or is pinned).
    """

    def __init__(self, *, grace: float) -> None:
        self.grace = grace
        self._latest: dict[BranchKey, ModelVersion] = {}

    @property
    def latest(self) -> Mapping[BranchKey, ModelVersion]:
        """The newest version of each branch, as last listed."""
        return self._latest

    @staticmethod
    def branches(records: Iterable[Record]) -> set[BranchKey]:
        """Every branch that a watched direct deployment follows."""
        return {key for record in records if (key := branch_of(record.snapshot)) is not None}

    def listed(self, key: BranchKey, versions: Iterable[ModelVersion]) -> None:
        """A successful (complete) listing of the branch's versions."""
        newest = latest_version(versions)
        if newest is None:
            self._latest.pop(key, None)  # no version at all: nothing to be behind of
        else:
            self._latest[key] = newest

    def keep(self, keys: Iterable[BranchKey]) -> None:
        """Forget the branches no watched deployment follows any more."""
        wanted = set(keys)
        for gone in self._latest.keys() - wanted:
            del self._latest[gone]

    def check(self, tracker: Tracker, now: float) -> list[Event]:
        """Judge every deployment that answered its last poll; store the lags that changed; their events."""
        events: list[Event] = []
        for record in tracker:
            snapshot = record.snapshot
            if snapshot is None or not record.up or record.found is not True:
                continue  # what is not known now leaves the lag as it was
            old = record.lag
            lag = assess(old, snapshot, self._latest, now)
            announced: list[tuple[EventType, Lag]] = []
            if old is not None and old.announced_at is not None and (lag is None or lag.announced_at is None):
                announced.append((EventType.VERSION_CAUGHT_UP, old))
            if lag is not None and lag.announced_at is None and lag.seconds(now) > self.grace:
                lag = dataclasses.replace(lag, announced_at=now)
                announced.append((EventType.VERSION_BEHIND, lag))
            if lag != old:
                events.extend(
                    tracker.set_lag(
                        record.target.rid,
                        lag,
                        now,
                        [(kind, _details(about, snapshot, now)) for kind, about in announced],
                    )
                )
        return events


def _details(lag: Lag, snapshot: LiveDeployment, now: float) -> dict[str, object]:
    return {
        "model_rid": lag.model_rid,
        "branch": lag.branch,
        "model_version_rid": snapshot.model_version_rid,
        "latest_version_rid": lag.latest_version_rid,
        "behind_seconds": round(lag.seconds(now), 3),
    }
