"""Tests for monitor.status.recorder: events and ticks into change points, day totals and transitions."""

from __future__ import annotations

from monitor.diff import FieldChange
from monitor.events import EventType
from monitor.status.conditions import Condition
from monitor.status.history import ChangePoint, day_of
from monitor.status.recorder import Recorder
from monitor.status.store import OpenInterval
from tests.status.helpers import MIDNIGHT, RID, event, record


def day_totals(recorder: Recorder) -> dict[int, dict[Condition, int]]:
    totals: dict[int, dict[Condition, int]] = {}
    for inc in recorder.take().days:
        for condition, ms in inc.millis.items():
            day = totals.setdefault(inc.day, {})
            day[condition] = day.get(condition, 0) + ms
    return totals


def test_ticks_count_time_into_utc_days() -> None:
    """A deployment up from 23:00 to 01:00 UTC has an hour on each day, after a first moment of no data."""
    start = MIDNIGHT - 3600
    recorder = Recorder(started=start - 1)
    rec = record(last_success=start)
    recorder.tick(start, [rec])
    recorder.tick(MIDNIGHT + 3600, [rec])
    totals = day_totals(recorder)
    assert totals == {day_of(start): {Condition.UP: 3_600_000}, day_of(MIDNIGHT): {Condition.UP: 3_600_000}}


def test_event_time_is_when_the_condition_changes() -> None:
    """A FAILED change at 00:10 counts failed time from 00:10, not from the next tick."""
    recorder = Recorder(started=MIDNIGHT - 1)
    up = record(last_success=MIDNIGHT)
    recorder.tick(MIDNIGHT, [up])
    failed = event(EventType.CHANGED, MIDNIGHT + 600, old_state="ACTIVE", new_state="FAILED", ready=False)
    recorder.publish([failed], {RID: up})
    recorder.tick(MIDNIGHT + 900, [record("FAILED", False, last_success=MIDNIGHT + 900)])
    batch = recorder.take()
    assert [p for _, p in batch.points][-1] == ChangePoint(MIDNIGHT + 600, Condition.FAILED)
    totals = {c: ms for inc in batch.days for c, ms in inc.millis.items()}
    assert totals == {Condition.UP: 600_000, Condition.FAILED: 300_000}
    assert batch.transitions[0].new_state == "FAILED"


def test_scaled_to_zero_uses_the_records_min_replicas() -> None:
    """ACTIVE and not ready is scaled to zero when the record's snapshot asks for no replicas."""
    recorder = Recorder(started=MIDNIGHT - 1)
    idle = record("ACTIVE", False, min_replicas=0, last_success=MIDNIGHT)
    recorder.publish([event(EventType.OBSERVED, MIDNIGHT, new_state="ACTIVE", ready=False)], {RID: idle})
    assert recorder.current(RID) == (Condition.SCALED_TO_ZERO, MIDNIGHT)


def test_monitor_downtime_after_restart_is_unknown_never_up() -> None:
    """The gap between the last run's last count and this run's first answer is unknown time."""
    stopped = MIDNIGHT + 3600
    restarted = stopped + 7200
    stored = {RID: OpenInterval(RID, Condition.UP, since=MIDNIGHT - 86_400, accounted=stopped)}
    recorder = Recorder(started=restarted, stored=stored)
    recorder.tick(restarted, [record(last_success=stopped)])  # restored, not yet polled: unknown
    recorder.tick(restarted + 60, [record(last_success=restarted + 60)])
    recorder.tick(restarted + 120, [record(last_success=restarted + 120)])
    totals = day_totals(recorder)[day_of(MIDNIGHT)]
    assert totals == {Condition.UNKNOWN: 7_260_000, Condition.UP: 60_000}
    # Back in the same condition: its time in state goes on from before the restart.
    assert recorder.current(RID) == (Condition.UP, MIDNIGHT - 86_400)


def test_removed_deployment_is_closed_and_stops_counting() -> None:
    """A removal counts time up to the event, closes the open interval and keeps the transition."""
    recorder = Recorder(started=MIDNIGHT - 1)
    rec = record(last_success=MIDNIGHT)
    recorder.tick(MIDNIGHT, [rec])
    recorder.publish([event(EventType.REMOVED, MIDNIGHT + 30, new_state="ACTIVE")], {})
    recorder.tick(MIDNIGHT + 500, [])
    batch = recorder.take()
    assert batch.closed == (RID,)
    assert batch.open == ()
    assert sum(inc.millis.get(Condition.UP, 0) for inc in batch.days) == 30_000
    assert recorder.current(RID) is None


def test_environment_values_never_reach_transitions() -> None:
    """A changed environment variable shows as changed, never with its value's digest."""
    recorder = Recorder(started=0)
    path = "runtimeConfiguration.environmentVariables.API_KEY"
    changed = event(
        EventType.CHANGED,
        MIDNIGHT,
        old_state="ACTIVE",
        new_state="ACTIVE",
        ready=True,
        changes=(FieldChange(path, "digest-old-secretish", "digest-new-secretish"),),
    )
    recorder.publish([changed], {RID: record()})
    (transition,) = recorder.take().transitions
    assert transition.changes == ((path, "(set)", "(changed)"),)
    assert "digest" not in repr(transition)


def test_take_empties_what_was_gathered() -> None:
    """A second take holds no day increments, points or transitions, only the open intervals."""
    recorder = Recorder(started=MIDNIGHT - 1)
    recorder.tick(MIDNIGHT, [record(last_success=MIDNIGHT)])
    recorder.tick(MIDNIGHT + 5, [record(last_success=MIDNIGHT + 5)])
    assert recorder.take().days
    second = recorder.take()
    assert (second.days, second.points, second.transitions) == ((), (), ())
    assert [o.condition for o in second.open] == [Condition.UP]


def test_restore_keeps_at_most_held_points_and_transitions_dropping_the_oldest() -> None:
    """A refused batch taken back while more waits than ``held`` allows keeps the newest change points and
    transitions, of every deployment together, and says how many it dropped."""
    recorder = Recorder(started=MIDNIGHT - 1)
    other = RID.replace("0001", "0002")
    states = ("ACTIVE", "DEGRADED")
    for i in range(40):
        for rid in (RID, other):
            recorder.publish(
                [event(EventType.CHANGED, MIDNIGHT + i, rid=rid, new_state=states[i % 2], ready=True)],
                {},
            )
    gathered = recorder.take()
    held = len(gathered.points) + len(gathered.transitions)
    assert held >= 160
    assert recorder.restore(gathered, held=100) == held - 100
    kept = recorder.take()
    assert len(kept.points) + len(kept.transitions) == 100
    newest = sorted([p.time for _, p in gathered.points] + [t.time for t in gathered.transitions])[-100:]
    assert sorted([p.time for _, p in kept.points] + [t.time for t in kept.transitions]) == newest
    assert {rid for rid, _ in kept.points} == {RID, other}
    assert recorder.restore(kept, held=100) == 0
