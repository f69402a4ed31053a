"""Tests for monitor.status.conditions: which condition a snapshot, record or event stands for."""

from __future__ import annotations

import pytest

from monitor.events import EventType
from monitor.status.conditions import (
    LOOKS,
    Condition,
    Kind,
    condition_of,
    condition_of_event,
    condition_of_record,
    is_problem,
)
from tests.status.helpers import MIDNIGHT, event, record


@pytest.mark.parametrize(
    ("state", "ready", "min_replicas", "expected"),
    [
        ("ACTIVE", True, 1, Condition.UP),
        ("ACTIVE", True, 0, Condition.UP),
        ("ACTIVE", False, 0, Condition.SCALED_TO_ZERO),
        ("ACTIVE", False, 2, Condition.NOT_READY),
        ("ACTIVE", False, None, Condition.NOT_READY),
        ("DISABLED", False, 1, Condition.DISABLED),
        ("FAILED", False, 1, Condition.FAILED),
        ("STARTING", False, 1, Condition.STARTING),
        ("DEGRADED", True, 1, Condition.DEGRADED),
        ("PAUSED_BY_SOMEONE", True, 1, Condition.UNRECOGNISED),
    ],
)
def test_condition_of_state(state: str, ready: bool, min_replicas: int | None, expected: Condition) -> None:
    """ACTIVE+ready is up; ACTIVE not ready is scaled to zero only with minReplicas 0; others by state."""
    assert condition_of(state, ready, min_replicas) is expected


def test_not_expected_to_serve_is_idle_and_no_data_is_unknown() -> None:
    """DISABLED and scaled to zero are idle (excluded); no data and unreachable are unknown, never up."""
    assert LOOKS[Condition.DISABLED].kind is Kind.IDLE
    assert LOOKS[Condition.SCALED_TO_ZERO].kind is Kind.IDLE
    assert LOOKS[Condition.UNKNOWN].kind is Kind.UNKNOWN
    assert LOOKS[Condition.UNREACHABLE].kind is Kind.UNKNOWN
    assert [c for c in Condition if LOOKS[c].kind is Kind.UP] == [Condition.UP]


def test_every_condition_has_a_word_and_a_symbol() -> None:
    """State is never shown by colour alone: each condition has a label and a distinct symbol."""
    symbols = [LOOKS[c].symbol for c in Condition]
    assert all(LOOKS[c].label for c in Condition)
    assert len(set(symbols)) == len(symbols)


def test_record_condition_waits_for_an_answer_of_this_run() -> None:
    """A record restored from the last run is unknown until this run has had an answer for it."""
    started = MIDNIGHT + 10
    assert condition_of_record(record(last_success=MIDNIGHT), started) is Condition.UNKNOWN
    assert condition_of_record(record(last_success=started + 1), started) is Condition.UP
    assert condition_of_record(record(last_success=started + 1, found=False), started) is Condition.NOT_FOUND
    assert condition_of_record(record(unreachable=True), started) is Condition.UNREACHABLE


def test_event_conditions() -> None:
    """Events say the condition they cause; a removal and a state-less recovery say nothing."""
    assert condition_of_event(event(EventType.NOT_FOUND, 1), 1) is Condition.NOT_FOUND
    assert condition_of_event(event(EventType.UNREACHABLE, 1, new_state="ACTIVE"), 1) is Condition.UNREACHABLE
    changed = event(EventType.CHANGED, 1, old_state="ACTIVE", new_state="ACTIVE", ready=False)
    assert condition_of_event(changed, 0) is Condition.SCALED_TO_ZERO
    assert condition_of_event(changed, 1) is Condition.NOT_READY
    assert condition_of_event(event(EventType.RECOVERED, 1), 1) is None
    assert condition_of_event(event(EventType.REMOVED, 1, new_state="ACTIVE"), 1) is None


def test_problems_are_down_or_unreachable() -> None:
    """Problems-first sorting lifts down and unreachable deployments, not idle or up ones."""
    assert is_problem(Condition.FAILED)
    assert is_problem(Condition.UNREACHABLE)
    assert not is_problem(Condition.DISABLED)
    assert not is_problem(Condition.UP)
