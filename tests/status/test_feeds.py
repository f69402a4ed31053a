"""Tests for monitor.status.feeds: entry titles and a well-formed Atom document."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from monitor.status.feeds import atom_feed, headline
from monitor.status.store import Transition

ATOM = "{http://www.w3.org/2005/Atom}"


def transition(kind: str, **fields: object) -> Transition:
    values: dict[str, object] = {
        "event_id": "abc",
        "rid": "ri.x",
        "name": "scorer",
        "time": 1_796_083_200.0,
        "type": f"deployment.{kind}",
        "old_state": None,
        "new_state": None,
        "ready": None,
        "changes": (),
        "error": None,
    }
    values.update(fields)
    return Transition(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("item", "title"),
    [
        (
            transition("changed", old_state="ACTIVE", new_state="FAILED", ready=False),
            "ACTIVE → FAILED (not ready)",
        ),
        (
            transition(
                "changed",
                old_state="ACTIVE",
                new_state="ACTIVE",
                changes=(("runtimeConfiguration.cpu", "1", "2"),),
            ),
            "changed: cpu",
        ),
        (transition("observed", new_state="ACTIVE", ready=True), "first seen ACTIVE (ready)"),
        (transition("unreachable", error="timeout"), "unreachable (timeout)"),
        (transition("not_found"), "not found"),
        (transition("removed"), "removed"),
    ],
)
def test_headline(item: Transition, title: str) -> None:
    """Each kind of transition has a one-line summary."""
    assert headline(item) == title


def test_feed_is_atom_with_one_entry_per_transition() -> None:
    """The feed has its id, self link and updated time; each entry links its deployment page."""
    changed = transition(
        "changed", old_state="ACTIVE", new_state="FAILED", changes=(("status.state", "ACTIVE", "FAILED"),)
    )
    body = atom_feed(
        title="t",
        feed_id="http://h/feeds/fleet.atom",
        self_url="http://h/feeds/fleet.atom",
        page_url="http://h/",
        base="http://h",
        entries=[changed],
        now=0.0,
    )
    root = ET.fromstring(body)  # noqa: S314 (our own output)
    assert root.find(f"{ATOM}updated").text == "2026-12-01T00:00:00Z"  # type: ignore[union-attr]
    (entry,) = root.findall(f"{ATOM}entry")
    assert entry.find(f"{ATOM}link").get("href") == "http://h/deployments/ri.x"  # type: ignore[union-attr]
    assert "status.state: ACTIVE → FAILED" in entry.find(f"{ATOM}content").text  # type: ignore[union-attr,operator]
