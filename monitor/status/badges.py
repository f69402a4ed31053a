"""Status badges: a flat SVG (self-contained, no fonts or images fetched) and the shields.io endpoint JSON."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from monitor.status.conditions import LOOKS, Condition, Kind

#: shields.io's named colours, as the SVG badge paints them.
_HEX = {
    "brightgreen": "#2e8540",
    "red": "#c62828",
    "orange": "#c25400",
    "yellow": "#8a6d00",
    "purple": "#7b3fa0",
    "lightgrey": "#6b7280",
    "blue": "#1f6feb",
    "inactive": "#6b7280",
}
_LABEL_HEX = "#3b4252"
#: Average advance of an 11 px Verdana glyph: the badge is sized without measuring text.
_CHAR_WIDTH = 6.8
_PAD = 6


@dataclass(frozen=True, slots=True)
class Badge:
    """What a badge says: the left text, the right text, and the shields.io colour name."""

    label: str
    message: str
    color: str

    def shields(self) -> dict[str, Any]:
        """The shields.io endpoint body (https://shields.io/badges/endpoint-badge)."""
        return {"schemaVersion": 1, "label": self.label, "message": self.message, "color": self.color}

    def svg(self) -> str:
        # Imported with the first badge asked for (~0.2 MB).
        from xml.sax.saxutils import escape, quoteattr

        left = round(len(self.label) * _CHAR_WIDTH) + 2 * _PAD
        right = round(len(self.message) * _CHAR_WIDTH) + 2 * _PAD
        width = left + right
        title = escape(f"{self.label}: {self.message}")
        colour = _HEX.get(self.color, _HEX["lightgrey"])
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img"'
            f" aria-label={quoteattr(f'{self.label}: {self.message}')}>"
            f"<title>{title}</title>"
            f'<clipPath id="r"><rect width="{width}" height="20" rx="3"/></clipPath>'
            f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="{_LABEL_HEX}"/>'
            f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/></g>'
            '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
            f'<text x="{left / 2}" y="14">{escape(self.label)}</text>'
            f'<text x="{left + right / 2}" y="14">{escape(self.message)}</text></g></svg>'
        )


def deployment_badge(name: str, condition: Condition) -> Badge:
    look = LOOKS[condition]
    return Badge(label=name, message=f"{look.symbol} {look.label.lower()}", color=look.shield)


def group_badge(label: str, conditions: Iterable[Condition]) -> Badge:
    """A group's badge: how many of those expected to serve are up, coloured by the worst of them."""
    members = list(conditions)
    if not members:
        return Badge(label=label, message="no deployments", color="lightgrey")
    expected = [c for c in members if LOOKS[c].kind in (Kind.UP, Kind.DOWN)]
    up = sum(1 for c in expected if c is Condition.UP)
    worst = max(members, key=lambda c: LOOKS[c].severity if LOOKS[c].kind is not Kind.IDLE else 0)
    look = LOOKS[worst]
    if not expected:
        return Badge(label=label, message=f"{look.symbol} {look.label.lower()}", color=look.shield)
    symbol = LOOKS[Condition.UP].symbol if up == len(expected) else look.symbol
    color = LOOKS[Condition.UP].shield if up == len(expected) else look.shield
    return Badge(label=label, message=f"{symbol} {up}/{len(expected)} up", color=color)
