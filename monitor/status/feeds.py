"""Atom feeds (RFC 4287) of transitions, for one deployment or the whole fleet."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from monitor.status.store import Transition

_ATOM = "http://www.w3.org/2005/Atom"


def headline(t: Transition) -> str:
    """One line saying what happened, as the feed's entry title and the history's summary."""
    kind = t.type.removeprefix("deployment.")
    ready = "" if t.ready is None else (" (ready)" if t.ready else " (not ready)")
    if kind == "changed" and t.old_state != t.new_state:
        return f"{t.old_state} → {t.new_state}{ready}"
    if kind == "changed":
        fields = ", ".join(path.rsplit(".", 1)[-1] for path, _, _ in t.changes[:3])
        return f"changed: {fields}" if fields else "changed"
    if kind == "observed":
        return f"first seen {t.new_state}{ready}"
    if kind == "returned":
        return f"found again, {t.new_state}{ready}"
    if kind == "unreachable":
        return f"unreachable ({t.error})" if t.error else "unreachable"
    if kind == "recovered":
        return f"reachable again, {t.new_state}{ready}" if t.new_state else "reachable again"
    if kind == "not_found":
        return "not found"
    return kind.replace("_", " ")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def atom_feed(
    *,
    title: str,
    feed_id: str,
    self_url: str,
    page_url: str,
    base: str,
    entries: Sequence[Transition],
    now: float,
) -> bytes:
    """The feed document; ``base`` is the server's origin, to link each entry to its deployment page."""
    # Imported with the first feed asked for (ElementTree and its parser: ~0.6 MB a monitor rarely needs).
    from xml.etree import ElementTree as ET

    ET.register_namespace("", _ATOM)
    feed = ET.Element(f"{{{_ATOM}}}feed")
    ET.SubElement(feed, f"{{{_ATOM}}}title").text = title
    ET.SubElement(feed, f"{{{_ATOM}}}id").text = feed_id
    ET.SubElement(feed, f"{{{_ATOM}}}updated").text = _iso(entries[0].time if entries else now)
    ET.SubElement(feed, f"{{{_ATOM}}}link", rel="self", href=self_url, type="application/atom+xml")
    ET.SubElement(feed, f"{{{_ATOM}}}link", rel="alternate", href=page_url, type="text/html")
    author = ET.SubElement(feed, f"{{{_ATOM}}}author")
    ET.SubElement(author, f"{{{_ATOM}}}name").text = "foundry-monitor"
    for t in entries:
        entry = ET.SubElement(feed, f"{{{_ATOM}}}entry")
        ET.SubElement(entry, f"{{{_ATOM}}}title").text = f"{t.name}: {headline(t)}"
        ET.SubElement(entry, f"{{{_ATOM}}}id").text = f"urn:foundry-monitor:event:{t.event_id}"
        ET.SubElement(entry, f"{{{_ATOM}}}updated").text = _iso(t.time)
        ET.SubElement(entry, f"{{{_ATOM}}}link", rel="alternate", href=f"{base}/deployments/{t.rid}")
        lines = [f"{t.name} ({t.rid}): {headline(t)} at {_iso(t.time)}"]
        lines += [f"{path}: {old} → {new}" for path, old, new in t.changes]
        ET.SubElement(entry, f"{{{_ATOM}}}content", type="text").text = "\n".join(lines)
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))
