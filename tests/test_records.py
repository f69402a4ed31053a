"""Tests for monitor.records: watch records to plain data and back."""

from __future__ import annotations

import json
from collections import Counter

from hypothesis import given, settings

from monitor.model import LiveDeployment
from monitor.records import StoredRecords, record_from_data, record_to_data
from monitor.tracker import Record, Target
from tests.strategies import RID, snapshots

TARGET = Target(RID, "scorer", (("team", "risk"),), "config")


@settings(max_examples=150)
@given(snapshots)
def test_a_record_survives_the_round_trip_through_json(snapshot: LiveDeployment) -> None:
    """Everything a restart needs comes back equal, after passing through JSON text."""
    record = Record(
        target=TARGET,
        snapshot=snapshot,
        found=True,
        up=False,
        unreachable=True,
        consecutive_failures=4,
        last_error="timeout",
        last_success=12.5,
        last_change=10.0,
        transitions=Counter({("ACTIVE", "FAILED"): 2}),
        changes=Counter({"status.state": 3}),
        errors=Counter({"timeout": 4}),
        sequence=9,
    )
    back = record_from_data(TARGET, json.loads(json.dumps(record_to_data(record))))
    assert back is not None
    assert back.snapshot == snapshot
    assert (back.found, back.up, back.unreachable, back.consecutive_failures) == (True, False, True, 4)
    assert back.transitions == record.transitions
    assert back.changes == record.changes
    assert back.errors == record.errors
    assert back.sequence == 9


def test_unreadable_data_gives_no_record() -> None:
    """A record from another format or with broken fields is dropped, not raised."""
    assert record_from_data(TARGET, {"format": 999}) is None
    assert record_from_data(TARGET, {"format": 1, "snapshot": {"rid": 1}}) is None
    assert record_from_data(TARGET, {}) is None


def test_stored_records_are_claimed_once_and_leftovers_released_as_removed() -> None:
    """claim() hands a record out once; release() turns a leftover into deployment.removed."""
    data = record_to_data(Record(target=TARGET, sequence=4))
    stored = StoredRecords({RID: data, "other": {**data, "name": "gone", "origin": "discover:m"}})
    assert stored.claim(TARGET) is not None
    assert stored.claim(TARGET) is None
    assert list(stored.unclaimed()) == ["other"]
    assert stored.origin("other") == "discover:m"
    event = stored.release("other", 50.0)
    assert event is not None
    assert (event.type.value, event.name, event.sequence) == ("deployment.removed", "gone", 5)
    assert stored.unclaimed() == {}
