"""Tests for monitor.status.badges: what deployment and group badges say, and that the SVG is well formed."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from monitor.status.badges import Badge, deployment_badge, group_badge
from monitor.status.conditions import Condition


def test_deployment_badge_says_the_condition_in_words_and_symbol() -> None:
    """A failed deployment's badge reads '✕ failed' in red, for shields.io as for the SVG."""
    badge = deployment_badge("scorer", Condition.FAILED)
    assert badge.shields() == {"schemaVersion": 1, "label": "scorer", "message": "✕ failed", "color": "red"}
    assert "✕ failed" in badge.svg()


def test_group_badge_counts_those_expected_to_serve() -> None:
    """A group of up, failed and disabled deployments reads 1/2 up (disabled left out), coloured by the failure."""
    badge = group_badge("team=risk", [Condition.UP, Condition.FAILED, Condition.DISABLED])
    assert (badge.message, badge.color) == ("✕ 1/2 up", "red")
    assert group_badge("team=risk", [Condition.UP, Condition.SCALED_TO_ZERO]).message == "✓ 1/1 up"


def test_group_badge_of_idle_or_empty_groups() -> None:
    """A group that is only disabled says so; an empty group says it has no deployments."""
    assert group_badge("t=x", [Condition.DISABLED]).message == "‖ disabled"
    assert group_badge("t=x", []).message == "no deployments"


def test_svg_escapes_its_text_and_parses() -> None:
    """Markup in a name is escaped: the SVG stays well formed and has no injected element."""
    svg = Badge(label='<script>"x"</script>', message="✓ up", color="brightgreen").svg()
    root = ET.fromstring(svg)  # noqa: S314 (our own output)
    assert not [el for el in root.iter() if el.tag.endswith("script")]
    assert root.get("width") is not None
