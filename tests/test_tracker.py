"""Tests for monitor.tracker: poll outcomes in, events and watch state out."""

from __future__ import annotations

import dataclasses

import pytest

from monitor.errors import LiveDeploymentNotFound, RequestTimeout, ServerError
from monitor.events import Event, EventType
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.tracker import Record, Target, Tracker, counted, counts

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
BASE = LiveDeployment(
    rid=RID,
    model_rid="ri.models.main.model.1",
    model_version_rid="ri.models.main.model-version.1",
    runtime=RuntimeConfiguration(
        min_replicas=1, max_replicas=3, environment=(("API_KEY", "hmac-sha256:aa"),)
    ),
    state="ACTIVE",
    is_ready=True,
    branch="master",
)


def _tracker(unreachable_after: int = 3) -> Tracker:
    tracker = Tracker(unreachable_after=unreachable_after)
    tracker.add(Target(rid=RID, name="scorer", labels=(("team", "risk"),)))
    return tracker


def _types(events: list[Event]) -> list[EventType]:
    return [event.type for event in events]


def test_first_answer_is_observed_with_the_snapshot() -> None:
    """The first successful poll emits deployment.observed carrying the snapshot, name and labels."""
    tracker = _tracker()
    (event,) = tracker.observe(RID, BASE, 100.0)
    assert event.type is EventType.OBSERVED
    assert event.name == "scorer"
    assert event.labels == (("team", "risk"),)
    assert event.snapshot is BASE
    assert event.to_json()["snapshot"]["status"]["state"] == "ACTIVE"
    assert event.new_state == "ACTIVE"


def test_an_unchanged_answer_emits_nothing() -> None:
    """Polling the same snapshot again is silent."""
    tracker = _tracker()
    tracker.observe(RID, BASE, 100.0)
    assert tracker.observe(RID, BASE, 130.0) == []


def test_a_state_change_emits_changed_and_counts_the_transition() -> None:
    """ACTIVE -> FAILED is one changed event with field changes, and one counted transition."""
    tracker = _tracker()
    tracker.observe(RID, BASE, 100.0)
    failed = dataclasses.replace(BASE, state="FAILED", is_ready=False)
    (event,) = tracker.observe(RID, failed, 130.0)
    assert event.type is EventType.CHANGED
    assert (event.old_state, event.new_state) == ("ACTIVE", "FAILED")
    assert {c.path for c in event.changes} == {"status.state", "status.isReady"}
    record = tracker.records[RID]
    assert record.transitions[("ACTIVE", "FAILED")] == 1
    assert record.changes["status.state"] == 1
    assert record.last_change == 130.0
    assert record.wants_fast_poll


def test_a_blip_is_counted_even_when_it_is_gone_by_the_next_scrape() -> None:
    """ACTIVE -> FAILED -> ACTIVE leaves two transitions in the counters."""
    tracker = _tracker()
    tracker.observe(RID, BASE, 1.0)
    tracker.observe(RID, dataclasses.replace(BASE, state="FAILED"), 2.0)
    tracker.observe(RID, BASE, 3.0)
    transitions = tracker.records[RID].transitions
    assert transitions[("ACTIVE", "FAILED")] == 1
    assert transitions[("FAILED", "ACTIVE")] == 1


def test_unknown_states_are_counted_under_the_unknown_label() -> None:
    """A state the API does not document is kept but counted as UNKNOWN, bounding label values."""
    tracker = _tracker()
    tracker.observe(RID, BASE, 1.0)
    (event,) = tracker.observe(RID, dataclasses.replace(BASE, state="HIBERNATING"), 2.0)
    assert event.new_state == "HIBERNATING"
    assert tracker.records[RID].transitions[("ACTIVE", "UNKNOWN")] == 1


def test_failures_become_unreachable_once_then_recovered() -> None:
    """N consecutive failures emit one unreachable event; the next answer emits recovered."""
    tracker = _tracker(unreachable_after=3)
    tracker.observe(RID, BASE, 1.0)
    assert tracker.fail(RID, RequestTimeout("t"), 2.0) == []
    assert tracker.fail(RID, RequestTimeout("t"), 3.0) == []
    (event,) = tracker.fail(RID, RequestTimeout("t"), 4.0)
    assert event.type is EventType.UNREACHABLE
    assert (event.error, event.consecutive_failures) == ("timeout", 3)
    assert tracker.fail(RID, RequestTimeout("t"), 5.0) == []
    assert _types(tracker.observe(RID, BASE, 6.0)) == [EventType.RECOVERED]
    record = tracker.records[RID]
    assert record.errors["timeout"] == 4
    assert record.up
    assert not record.unreachable


def test_a_failed_poll_is_never_a_change() -> None:
    """A failure between two equal answers produces no changed event and no transition."""
    tracker = _tracker()
    tracker.observe(RID, BASE, 1.0)
    assert tracker.fail(RID, ServerError("boom", status=500), 2.0) == []
    assert tracker.observe(RID, BASE, 3.0) == []
    record = tracker.records[RID]
    assert not record.transitions
    assert record.snapshot == BASE
    assert record.up
    assert record.consecutive_failures == 0


def test_not_found_then_returned() -> None:
    """A 404 emits not_found once, marks found False yet up; a later answer emits returned."""
    tracker = _tracker()
    tracker.observe(RID, BASE, 1.0)
    gone = LiveDeploymentNotFound("gone", status=404)
    assert _types(tracker.fail(RID, gone, 2.0)) == [EventType.NOT_FOUND]
    assert tracker.fail(RID, gone, 3.0) == []
    record = tracker.records[RID]
    assert record.found is False
    assert record.up
    (event,) = tracker.observe(RID, dataclasses.replace(BASE, state="STARTING"), 4.0)
    assert event.type is EventType.RETURNED
    assert (event.old_state, event.new_state) == ("ACTIVE", "STARTING")
    assert tracker.records[RID].found is True


def test_removal_emits_removed_and_forgets_the_deployment() -> None:
    """remove() returns deployment.removed and the record is gone."""
    tracker = _tracker()
    tracker.observe(RID, BASE, 1.0)
    event = tracker.remove(RID, 2.0)
    assert event is not None
    assert event.type is EventType.REMOVED
    assert RID not in tracker
    assert tracker.remove(RID, 3.0) is None


def test_event_ids_are_deterministic_and_distinct_for_repeated_flips() -> None:
    """Same observations give the same ids; A->B twice gives two different ids."""
    failed = dataclasses.replace(BASE, state="FAILED")
    sequence = [BASE, failed, BASE, failed]

    def ids() -> list[str]:
        tracker = _tracker()
        return [e.event_id for i, s in enumerate(sequence) for e in tracker.observe(RID, s, float(i))]

    first, second = ids(), ids()
    assert first == second
    assert len(set(first)) == len(first) == 4


def test_an_unchanged_answer_keeps_the_render_cache_and_clears_the_fast_poll() -> None:
    """Repeating the last answer leaves ``version`` alone and drops back to the normal interval."""
    tracker = _tracker()
    tracker.observe(RID, BASE, 1.0)
    tracker.observe(RID, dataclasses.replace(BASE, state="STARTING"), 2.0)
    record = tracker.records[RID]
    version = record.version
    assert record.changed_last_poll
    assert tracker.observe(RID, dataclasses.replace(BASE, state="STARTING"), 3.0) == []
    assert record.version == version
    assert not record.changed_last_poll
    assert record.last_success == 3.0


def test_memory_written_differently_is_not_a_change() -> None:
    """1Gi and 1024Mi are the same size: the snapshots differ as text, not as compared fields."""
    tracker = _tracker()
    one = dataclasses.replace(
        BASE, runtime=dataclasses.replace(BASE.runtime, memory="1Gi", memory_bytes=1 << 30)
    )
    same = dataclasses.replace(
        BASE, runtime=dataclasses.replace(BASE.runtime, memory="1024Mi", memory_bytes=1 << 30)
    )
    tracker.observe(RID, one, 1.0)
    assert tracker.observe(RID, same, 2.0) == []


def test_transition_keys_are_shared_across_records() -> None:
    """Two deployments making the same transition count it under one and the same key object."""
    tracker = _tracker()
    other = RID[:-1] + "9"
    tracker.add(Target(other, "other"))
    for rid in (RID, other):
        tracker.observe(rid, dataclasses.replace(BASE, rid=rid), 100.0)
        tracker.observe(rid, dataclasses.replace(BASE, rid=rid, state="FAILED"), 200.0)
    (first,) = tracker.records[RID].transitions
    (second,) = tracker.records[other].transitions
    assert first == ("ACTIVE", "FAILED")
    assert first is second


def test_records_that_counted_nothing_share_one_empty_counter_until_their_first_count() -> None:
    """A fleet of quiet deployments holds no counters of its own; the first count gives a record its own
    counter, and the others stay empty."""
    tracker = Tracker()
    other = RID.replace("0001", "0002")
    for rid in (RID, other):
        tracker.add(Target(rid=rid, name=rid))
        tracker.observe(rid, dataclasses.replace(BASE, rid=rid), 1.0)
    first, second = tracker.records[RID], tracker.records[other]
    assert first.errors is second.errors is first.changes is first.transitions
    tracker.fail(RID, RequestTimeout("t"), 2.0)
    tracker.observe(RID, dataclasses.replace(BASE, state="FAILED"), 3.0)
    assert (first.errors, first.transitions) == ({"timeout": 1}, {("ACTIVE", "FAILED"): 1})
    assert (second.errors, second.changes, second.transitions) == ({}, {}, {})
    assert second.errors["timeout"] == 0


def test_the_shared_empty_counter_refuses_writes() -> None:
    """Counting into the shared empty counter directly fails loudly instead of counting for every record."""
    shared = Record(target=Target(rid=RID, name="scorer")).errors
    with pytest.raises(TypeError, match="read-only"):
        shared["timeout"] += 1
    with pytest.raises(TypeError, match="read-only"):
        shared.update({"timeout": 1})
    with pytest.raises(TypeError, match="read-only"):
        shared.setdefault("timeout", 1)
    assert shared == {}
    assert counted(counts({"timeout": 2}), "timeout") == {"timeout": 3}
    assert counts({}) is shared
