"""Tests for monitor.rollouts: the model-version lag of direct deployments, and its events."""

from __future__ import annotations

import dataclasses
import json

from monitor.errors import RequestTimeout
from monitor.events import Event, EventType
from monitor.model import LiveDeployment, ModelVersion, RuntimeConfiguration
from monitor.records import StoredRecords, record_from_data, record_to_data
from monitor.rollouts import Lag, Rollouts, assess
from monitor.tracker import Target, Tracker

MODEL = "ri.models.main.model.00000000-0000-4000-8000-00000000000a"
V1 = "ri.models.main.model-version.00000000-0000-4000-8000-000000000001"
V2 = "ri.models.main.model-version.00000000-0000-4000-8000-000000000002"
V3 = "ri.models.main.model-version.00000000-0000-4000-8000-000000000003"
DIRECT = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
PINNED = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000002"
GRACE = 60.0
T0 = 1_700_000_000.0
MASTER = (MODEL, "master")
STAGING = (MODEL, "staging")


def deployment(rid: str, version: str = V1, branch: str | None = "master") -> LiveDeployment:
    return LiveDeployment(
        rid=rid,
        model_rid=MODEL,
        model_version_rid=version,
        runtime=RuntimeConfiguration(min_replicas=1, max_replicas=2),
        state="ACTIVE",
        is_ready=True,
        branch=branch,
    )


def fleet(now: float = T0) -> Tracker:
    """A direct deployment on master and a pinned one, both running V1."""
    tracker = Tracker()
    for rid, branch in ((DIRECT, "master"), (PINNED, None)):
        tracker.add(Target(rid, rid[-4:]))
        tracker.observe(rid, deployment(rid, branch=branch), now)
    return tracker


def listing(*versions: tuple[str, float]) -> list[ModelVersion]:
    return [ModelVersion(rid, created) for rid, created in versions]


def kinds(events: list[Event]) -> list[tuple[EventType, str]]:
    return [(event.type, event.rid) for event in events]


def test_a_deployment_behind_is_announced_once_after_the_grace_counted_from_created_time() -> None:
    """V2 was created 50 s before it was first listed: the deployment is behind at once (no event), and
    version_behind comes when 60 s have passed since V2's createdTime, not since the listing; only once."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V1, T0 - 3600), (V2, T0 - 50)))
    assert rollouts.check(tracker, T0) == []
    lag = tracker.records[DIRECT].lag
    assert lag == Lag(MODEL, "master", V2, since=T0 - 50)
    assert rollouts.check(tracker, T0 + 9) == []
    events = rollouts.check(tracker, T0 + 11)
    assert kinds(events) == [(EventType.VERSION_BEHIND, DIRECT)]
    behind = events[0]
    assert (behind.model_rid, behind.branch, behind.model_version_rid, behind.latest_version_rid) == (
        MODEL,
        "master",
        V1,
        V2,
    )
    assert behind.behind_seconds == 61.0
    assert rollouts.check(tracker, T0 + 500) == []


def test_pinned_deployments_are_never_behind() -> None:
    """A deployment with no branch runs what it was pinned to, whatever its model's branches publish."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V2, T0 - 3600)))
    events = rollouts.check(tracker, T0 + 3600)
    assert kinds(events) == [(EventType.VERSION_BEHIND, DIRECT)]
    assert tracker.records[PINNED].lag is None
    assert Rollouts.branches(tracker) == {MASTER}


def test_without_a_successful_listing_nothing_is_behind_and_what_was_known_stands() -> None:
    """No listing yet: no lag. A later failed listing (nothing new listed) leaves the known lag as it was."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    assert rollouts.check(tracker, T0 + 10_000) == []
    assert tracker.records[DIRECT].lag is None
    rollouts.listed(MASTER, listing((V2, T0)))
    rollouts.check(tracker, T0 + 1)
    known = tracker.records[DIRECT].lag
    assert known is not None
    # The poller calls nothing on a failed listing: judging again changes nothing.
    assert rollouts.check(tracker, T0 + 2) == []
    assert tracker.records[DIRECT].lag == known


def test_a_failed_poll_of_the_deployment_leaves_its_lag_alone() -> None:
    """A deployment whose last poll failed is not judged: its last known version may be out of date."""
    tracker = Tracker()
    tracker.add(Target(DIRECT, "d"))
    tracker.observe(DIRECT, deployment(DIRECT), T0)
    tracker.fail(DIRECT, RequestTimeout("slow"), T0 + 1)
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V2, T0 - 3600)))
    assert rollouts.check(tracker, T0 + 2) == []
    assert tracker.records[DIRECT].lag is None


def test_a_rollout_within_the_grace_gives_no_event() -> None:
    """Behind for 30 s then on the newest version: the lag is cleared and nothing is announced."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V1, T0 - 3600), (V2, T0)))
    assert rollouts.check(tracker, T0 + 1) == []
    tracker.observe(DIRECT, deployment(DIRECT, V2), T0 + 30)
    assert rollouts.check(tracker, T0 + 31) == []
    assert rollouts.check(tracker, T0 + 1000) == []
    assert tracker.records[DIRECT].lag is None


def test_catching_up_after_the_announcement_gives_version_caught_up() -> None:
    """Announced behind, then rolled out: one version_caught_up with the whole time it was behind."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V2, T0)))
    rollouts.check(tracker, T0 + 100)
    tracker.observe(DIRECT, deployment(DIRECT, V2), T0 + 200)
    events = rollouts.check(tracker, T0 + 200)
    assert kinds(events) == [(EventType.VERSION_CAUGHT_UP, DIRECT)]
    assert (events[0].model_version_rid, events[0].latest_version_rid, events[0].behind_seconds) == (
        V2,
        V2,
        200.0,
    )
    assert tracker.records[DIRECT].lag is None
    assert rollouts.check(tracker, T0 + 300) == []


def test_a_newer_version_while_behind_keeps_the_time_it_fell_behind() -> None:
    """Behind V2 since T0, then V3 appears: still behind since T0 (and not announced a second time)."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V2, T0)))
    assert kinds(rollouts.check(tracker, T0 + 100)) == [(EventType.VERSION_BEHIND, DIRECT)]
    rollouts.listed(MASTER, listing((V2, T0), (V3, T0 + 150)))
    assert rollouts.check(tracker, T0 + 160) == []
    lag = tracker.records[DIRECT].lag
    assert lag is not None
    assert (lag.latest_version_rid, lag.since, lag.announced_at) == (V3, T0, T0 + 100)


def test_a_version_created_in_the_future_counts_from_now() -> None:
    """A createdTime ahead of the monitor's clock is bounded by now: behind_seconds is never negative."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V2, T0 + 500)))
    rollouts.check(tracker, T0)
    lag = tracker.records[DIRECT].lag
    assert lag is not None
    assert lag.since == T0


def test_a_deployment_changing_branch_is_judged_against_its_new_branch() -> None:
    """Announced behind on master, the deployment moves to staging: caught up with master (its alert ends);
    staging not listed yet gives no lag; once listed with a newer version it is behind on staging."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V2, T0)))
    rollouts.check(tracker, T0 + 100)
    tracker.observe(DIRECT, deployment(DIRECT, V1, branch="staging"), T0 + 110)
    events = rollouts.check(tracker, T0 + 110)
    assert kinds(events) == [(EventType.VERSION_CAUGHT_UP, DIRECT)]
    assert events[0].branch == "master"
    assert tracker.records[DIRECT].lag is None
    rollouts.listed(STAGING, listing((V3, T0 + 105)))
    assert rollouts.check(tracker, T0 + 120) == []
    assert tracker.records[DIRECT].lag == Lag(MODEL, "staging", V3, since=T0 + 105)


def test_a_deployment_becoming_pinned_catches_up() -> None:
    """An announced lag ends when the deployment stops following a branch."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V2, T0)))
    rollouts.check(tracker, T0 + 100)
    tracker.observe(DIRECT, deployment(DIRECT, V1, branch=None), T0 + 110)
    assert kinds(rollouts.check(tracker, T0 + 110)) == [(EventType.VERSION_CAUGHT_UP, DIRECT)]


def test_the_lag_survives_a_restart_without_a_second_announcement() -> None:
    """The lag is in the state file: a new process restores it, does not announce it again, and still sees
    the catch-up; a state file from before rollouts (no ``lag``) reads as not behind."""
    tracker = fleet()
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V2, T0)))
    rollouts.check(tracker, T0 + 100)
    stored = {rid: json.loads(json.dumps(record_to_data(r))) for rid, r in tracker.records.items()}

    restored = StoredRecords(stored)
    again = Tracker(restore=restored.claim)
    again.add(Target(DIRECT, DIRECT[-4:]))
    assert again.records[DIRECT].lag == tracker.records[DIRECT].lag
    fresh = Rollouts(grace=GRACE)
    # Before the first listing of the new process, and after it, nothing is announced again.
    again.observe(DIRECT, deployment(DIRECT), T0 + 200)
    assert fresh.check(again, T0 + 200) == []
    fresh.listed(MASTER, listing((V2, T0)))
    assert fresh.check(again, T0 + 201) == []
    again.observe(DIRECT, deployment(DIRECT, V2), T0 + 300)
    assert kinds(fresh.check(again, T0 + 300)) == [(EventType.VERSION_CAUGHT_UP, DIRECT)]

    old = {k: v for k, v in stored[DIRECT].items() if k != "lag"}
    before = record_from_data(Target(DIRECT, "d"), old)
    assert before is not None
    assert before.lag is None


def test_rollout_events_are_deterministic() -> None:
    """The same life gives the same event ids; the versions are part of the id."""

    def life() -> list[Event]:
        tracker = fleet()
        rollouts = Rollouts(grace=GRACE)
        rollouts.listed(MASTER, listing((V2, T0)))
        events = rollouts.check(tracker, T0 + 100)
        tracker.observe(DIRECT, deployment(DIRECT, V2), T0 + 200)
        return events + rollouts.check(tracker, T0 + 200)

    first, second = life(), life()
    assert [e.event_id for e in first] == [e.event_id for e in second]
    other = dataclasses.replace(first[0], event_id="", latest_version_rid=V3)
    assert other.event_id != first[0].event_id


def test_branches_not_followed_any_more_are_forgotten() -> None:
    """keep() drops the newest version of a branch no watched deployment follows (its series goes too)."""
    rollouts = Rollouts(grace=GRACE)
    rollouts.listed(MASTER, listing((V1, T0)))
    rollouts.listed(STAGING, listing((V2, T0)))
    rollouts.keep({MASTER})
    assert set(rollouts.latest) == {MASTER}
    rollouts.listed(MASTER, [])
    assert rollouts.latest == {}


def test_assess_gives_the_lag_and_none_once_the_newest_runs() -> None:
    """assess() of a deployment on V1 with V2 newest is a lag since V2's createdTime; on V2, none."""
    latest = {MASTER: ModelVersion(V2, T0)}
    lag = assess(None, deployment(DIRECT), latest, T0 + 5)
    assert lag == assess(None, deployment(DIRECT), latest, T0 + 5) == Lag(MODEL, "master", V2, T0)
    assert assess(lag, deployment(DIRECT, V2), latest, T0 + 6) is None
