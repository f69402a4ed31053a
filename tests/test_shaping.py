"""Tests for monitor.shaping: flaps summarised or dropped, lasting failures delivered late but exact, other
deployments never delayed, recovery notices, and the same output for the same events after a restart."""

from __future__ import annotations

import dataclasses
import itertools
import re

from monitor.diff import FieldChange
from monitor.events import Event, EventType
from monitor.shaping import FlapEvent, FlapMode, Shaper, Shaping, flap_summary

A = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-00000000000a"
B = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-00000000000b"
T0 = 1_700_000_000.0
MINUTE = Shaping(min_duration=60.0)
_seq = itertools.count(1)


def changed(rid: str, at: float, old: str, new: str, *, ready: bool | None = None, seq: int = 0) -> Event:
    """A state change of ``rid`` ``at`` seconds after T0, numbered in the outbox."""
    ready = new == "ACTIVE" if ready is None else ready
    sequence = seq or next(_seq)
    return Event(EventType.CHANGED, rid, rid[-1], (), T0 + at, sequence, old, new, ready, outbox_seq=sequence)


def event(kind: EventType, rid: str, at: float, **fields: object) -> Event:
    sequence = next(_seq)
    return Event(kind, rid, rid[-1], (), T0 + at, sequence, outbox_seq=sequence, **fields)  # type: ignore[arg-type]


def shape(shaper: Shaper, events: list[Event]) -> list[Event]:
    return [out for item in events for out in shaper.push(item)]


def test_without_options_every_event_passes_at_once() -> None:
    """The default shaping is the identity: nothing held, no notice."""
    shaper = Shaper(Shaping())
    events = [changed(A, 0, "ACTIVE", "FAILED"), changed(A, 1, "FAILED", "ACTIVE")]
    assert shape(shaper, events) == events
    assert shaper.held_from() is None
    assert shaper.next_deadline() is None


def test_a_failure_that_recovers_within_min_duration_is_one_flapped_summary() -> None:
    """FAILED, DEGRADED, ACTIVE within a minute: one deployment.flapped naming the states, times, count and
    the ids of the events it stands for; it takes its first event's place in the outbox."""
    shaper = Shaper(MINUTE)
    run = [
        changed(A, 0, "ACTIVE", "FAILED"),
        changed(A, 20, "FAILED", "DEGRADED"),
        changed(A, 40, "DEGRADED", "ACTIVE"),
    ]
    assert shaper.push(run[0]) == []
    assert shaper.held_from() == run[0].outbox_seq
    assert shaper.push(run[1]) == []
    (summary,) = shaper.push(run[2])
    assert isinstance(summary, FlapEvent)
    body = summary.to_json()
    assert body["type"] == "deployment.flapped"
    assert body["states"] == ["ACTIVE", "FAILED", "DEGRADED", "ACTIVE"]
    assert body["count"] == 3
    assert body["event_ids"] == [e.event_id for e in run]
    assert body["first_time"] == run[0].to_json()["time"]
    assert body["last_time"] == body["time"] == run[2].to_json()["time"]
    assert (body["old_state"], body["new_state"], body["ready"]) == ("ACTIVE", "ACTIVE", True)
    assert summary.outbox_seq == run[0].outbox_seq
    assert shaper.held_from() is None
    assert shaper.due(T0 + 3600) == []


def test_the_summary_id_is_derived_from_the_events_it_stands_for() -> None:
    """The same events give the same summary id; other events give another one, never an event's own."""
    run = [changed(A, 0, "ACTIVE", "FAILED"), changed(A, 5, "FAILED", "ACTIVE")]
    other = [run[0], changed(A, 6, "FAILED", "ACTIVE")]
    first = flap_summary(run).event_id
    assert first == flap_summary(list(run)).event_id
    assert first != flap_summary(other).event_id
    assert first not in {e.event_id for e in run}
    assert re.fullmatch("[0-9a-f]{32}", first)


def test_drop_mode_holds_a_flap_back_entirely() -> None:
    """flaps: drop sends nothing for a flap, and holds nothing afterwards."""
    shaper = Shaper(Shaping(min_duration=60.0, flaps=FlapMode.DROP))
    assert shape(shaper, [changed(A, 0, "ACTIVE", "FAILED"), changed(A, 30, "FAILED", "ACTIVE")]) == []
    assert shaper.held_from() is None


def test_a_failure_that_lasts_is_delivered_as_it_happened_at_its_deadline() -> None:
    """Held until its own time plus min_duration, then released unchanged (later events with it)."""
    shaper = Shaper(MINUTE)
    failed = changed(A, 0, "ACTIVE", "FAILED")
    worse = event(EventType.UNREACHABLE, A, 30, error="ServerError", consecutive_failures=3)
    assert shape(shaper, [failed, worse]) == []
    assert shaper.next_deadline() == T0 + 60
    assert shaper.due(T0 + 59.9) == []
    assert shaper.due(T0 + 60) == [failed, worse]
    assert shaper.held_from() is None
    back = changed(A, 90, "FAILED", "ACTIVE")
    assert shaper.push(back) == [back]


def test_an_event_after_the_deadline_releases_the_held_ones_first() -> None:
    """A recovery later than min_duration is no flap: the failure goes out, then the recovery."""
    shaper = Shaper(MINUTE)
    failed, back = changed(A, 0, "ACTIVE", "FAILED"), changed(A, 61, "FAILED", "ACTIVE")
    assert shape(shaper, [failed, back]) == [failed, back]


def test_other_deployments_are_not_delayed_while_one_is_held() -> None:
    """Holding is per deployment: B's events pass at once while A's failure is held, in any interleaving."""
    shaper = Shaper(MINUTE)
    a_failed = changed(A, 0, "ACTIVE", "FAILED")
    b_first = changed(B, 1, "ACTIVE", "STARTING")
    b_second = changed(B, 2, "STARTING", "ACTIVE")
    assert shaper.push(a_failed) == []
    assert shaper.push(b_first) == [b_first]
    assert shaper.push(b_second) == [b_second]
    b_failed = changed(B, 3, "ACTIVE", "FAILED")
    assert shaper.push(b_failed) == []
    assert shaper.held_from() == a_failed.outbox_seq
    assert shaper.due(T0 + 60) == [a_failed]
    assert shaper.held_from() == b_failed.outbox_seq


def test_a_removal_while_held_releases_what_was_held() -> None:
    """A deployment removed while failing is no flap: its failure and its removal go out."""
    shaper = Shaper(MINUTE)
    failed = changed(A, 0, "ACTIVE", "FAILED")
    removed = event(EventType.REMOVED, A, 10, new_state="FAILED")
    assert shape(shaper, [failed, removed]) == [failed, removed]


def test_recovery_notices_follow_a_return_to_active_and_ready() -> None:
    """deployment.healthy after FAILED, unreachable and not found, once ACTIVE and ready (not before)."""
    shaper = Shaper(Shaping(recovery=True))
    out = shape(
        shaper,
        [
            changed(A, 0, "ACTIVE", "FAILED"),
            changed(A, 10, "FAILED", "ACTIVE", ready=False),
            changed(A, 20, "ACTIVE", "ACTIVE", ready=True),
            event(EventType.UNREACHABLE, B, 30, error="Timeout", consecutive_failures=3),
            event(EventType.RECOVERED, B, 40, new_state="ACTIVE", ready=True),
            event(EventType.NOT_FOUND, B, 50, old_state="ACTIVE"),
            event(EventType.RETURNED, B, 60, old_state="ACTIVE", new_state="ACTIVE", ready=True),
            changed(B, 70, "ACTIVE", "STARTING", ready=False),
            changed(B, 80, "STARTING", "ACTIVE", ready=True),
        ],
    )
    notices = [(e.rid, e.time - T0) for e in out if e.type is EventType.HEALTHY]
    assert notices == [(A, 20), (B, 40), (B, 60)]
    healthy = next(e for e in out if e.type is EventType.HEALTHY).to_json()
    assert (healthy["new_state"], healthy["ready"]) == ("ACTIVE", True)


def test_without_recovery_no_notice_is_sent() -> None:
    """recovery: false (the default) adds nothing after a return to health."""
    shaper = Shaper(MINUTE)
    events = [changed(A, 0, "ACTIVE", "FAILED"), changed(A, 90, "FAILED", "ACTIVE")]
    assert shape(shaper, events) == events


def test_a_flap_owes_no_notice_but_earlier_trouble_does() -> None:
    """A summarised flap is its own good news; after an unreachable the sink was told of, it still gets one."""
    shaper = Shaper(Shaping(min_duration=60.0, recovery=True))
    quiet = shape(shaper, [changed(A, 0, "ACTIVE", "FAILED"), changed(A, 10, "FAILED", "ACTIVE")])
    assert [e.type for e in quiet] == [EventType.FLAPPED]
    unreachable = event(EventType.UNREACHABLE, B, 0, error="Timeout", consecutive_failures=3)
    out = shape(
        shaper,
        [
            unreachable,
            event(EventType.RECOVERED, B, 5, new_state="ACTIVE", ready=True),
            changed(B, 10, "ACTIVE", "DEGRADED"),
            changed(B, 20, "DEGRADED", "ACTIVE"),
        ],
    )
    assert [e.type for e in out] == [
        EventType.UNREACHABLE,
        EventType.RECOVERED,
        EventType.HEALTHY,
        EventType.FLAPPED,
    ]


def test_notice_ids_are_deterministic_and_distinct() -> None:
    """The same recovery gives the same notice id in any shaper; another recovery, another id."""
    events = [
        changed(A, 0, "ACTIVE", "FAILED", seq=1),
        changed(A, 90, "FAILED", "ACTIVE", seq=2),
        changed(A, 100, "ACTIVE", "FAILED", seq=3),
        changed(A, 200, "FAILED", "ACTIVE", seq=4),
    ]
    ids = [
        [e.event_id for e in shape(Shaper(Shaping(recovery=True)), events) if e.type is EventType.HEALTHY]
        for _ in range(2)
    ]
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 2
    assert not set(ids[0]) & {e.event_id for e in events}


def test_after_a_restart_the_same_events_are_shaped_alike() -> None:
    """Held events read again by a new shaper give the same output: a flap is decided by the events'
    times, and a hold whose deadline passed while the monitor was down is released at once."""
    flap = [changed(A, 0, "ACTIVE", "FAILED"), changed(A, 30, "FAILED", "ACTIVE")]
    before = shape(Shaper(MINUTE), flap)
    after = Shaper(MINUTE)
    assert [e.event_id for e in shape(after, flap)] == [e.event_id for e in before]
    lasting = changed(B, 0, "ACTIVE", "FAILED")
    restarted = Shaper(MINUTE)
    assert restarted.push(lasting) == []
    assert restarted.held_from() == lasting.outbox_seq
    assert restarted.due(T0 + 3600) == [lasting]


def test_a_flap_keeps_the_net_changes_across_it() -> None:
    """What differs between before the flap and after it (a new model version) is in the summary's changes;
    what came back to where it was (the state) is not."""
    version = "modelVersion.modelVersionRid"
    down = dataclasses.replace(
        changed(A, 0, "ACTIVE", "DEGRADED"), changes=(FieldChange("status.state", "ACTIVE", "DEGRADED"),)
    )
    up = dataclasses.replace(
        changed(A, 10, "DEGRADED", "ACTIVE"),
        changes=(FieldChange("status.state", "DEGRADED", "ACTIVE"), FieldChange(version, "v1", "v2")),
    )
    (summary,) = shape(Shaper(MINUTE), [down, up])
    assert summary.to_json()["changes"] == [{"field": version, "old": "v1", "new": "v2"}]
