"""Tests for monitor.status.routes over a real loopback server: pages, history API, badges, feeds, and
hostile input answered with a 4xx."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import replace
from xml.etree import ElementTree as ET

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.events import EventType
from monitor.status.conditions import Condition
from monitor.status.history import ChangePoint, day_of
from monitor.status.routes import add_status_routes
from monitor.status.store import DayIncrement, HistoryBatch, MemoryHistory
from monitor.status.writer import HistoryWriter
from monitor.tracker import Target, Tracker
from tests.status.helpers import MIDNIGHT, event, snapshot

pytestmark = pytest.mark.anyio

NOW = MIDNIGHT + 12 * 3600
RIDS = [f"ri.foundry-ml-live.main.live-deployment.0000000{i}-0000-4000-8000-000000000000" for i in range(3)]


class Site:
    def __init__(self, server: TestServer, writer: HistoryWriter, tracker: Tracker) -> None:
        self.server = server
        self.writer = writer
        self.tracker = tracker

    async def get(self, path: str) -> tuple[int, str, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.server.make_url(path), allow_redirects=False) as response,
        ):
            return response.status, response.headers.get("Content-Type", ""), await response.text()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    tracker = Tracker()
    store = MemoryHistory()
    clock = [NOW - 7200]
    writer = HistoryWriter(store, tracker, clock=lambda: clock[0])
    states = [("ACTIVE", True), ("FAILED", False), ("ACTIVE", False)]
    for i, (rid, (state, ready)) in enumerate(zip(RIDS, states, strict=True)):
        tracker.add(Target(rid=rid, name=f"dep-{i}", labels=(("team", "risk" if i < 2 else "growth"),)))
        env = (("API_KEY", "digest-of-secret"),) if i == 0 else None
        snap = snapshot(state, ready, min_replicas=0 if i == 2 else 1, rid=rid)
        if env:
            snap = replace(snap, runtime=replace(snap.runtime, environment=env))
        tracker.observe(rid, snap, NOW - 3600)
    writer.publish(
        [
            event(EventType.OBSERVED, NOW - 3600, rid=rid, new_state=s, ready=r)
            for rid, (s, r) in zip(RIDS, states, strict=True)
        ]
    )
    await store.write(
        HistoryBatch(
            days=(DayIncrement(RIDS[0], day_of(NOW) - 5, {Condition.FAILED: 60_000, Condition.UP: 1000}),),
            points=((RIDS[0], ChangePoint(NOW - 10 * 86_400, Condition.UP)),),
        )
    )
    clock[0] = NOW
    await writer.flush()
    app = web.Application()
    add_status_routes(app, tracker=tracker, history=writer, clock=lambda: NOW, page_size=2)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Site(server, writer, tracker)
    finally:
        await server.close()


async def test_fleet_page_lists_problems_first_with_counts_and_feed_link(site: Site) -> None:
    """The fleet page counts conditions, puts the failed deployment first, lists the latest transitions
    and announces its Atom feed."""
    status, ctype, body = await site.get("/")
    assert status == 200
    assert ctype.startswith("text/html")
    assert '<link rel="alternate" type="application/atom+xml"' in body
    names = re.findall(r'class="tile-name" title="[^"]*">([^<]+)<', body)
    assert names == ["dep-1", "dep-0"]  # page size 2: the failed one first, then by name
    assert "Page 1 of 2" in body
    assert "Scaled to zero" in body  # counted though on page 2
    assert body.count('<li><time datetime="2026-12-01T11:00:00Z"') == 3  # the latest transitions


async def test_fleet_filters_search_and_grouping(site: Site) -> None:
    """state, label and q filter the tiles; group=team heads each group with its label value."""
    _, _, body = await site.get("/?state=failed")
    assert re.findall(r'class="tile-name" title="[^"]*">([^<]+)<', body) == ["dep-1"]
    _, _, body = await site.get("/?label=team%3Dgrowth")
    assert re.findall(r'class="tile-name" title="[^"]*">([^<]+)<', body) == ["dep-2"]
    _, _, body = await site.get("/?q=00000002-0000")
    assert re.findall(r'class="tile-name" title="[^"]*">([^<]+)<', body) == ["dep-2"]
    _, _, body = await site.get("/?group=team")
    assert "team = risk" in body


async def test_deployment_page_shows_bar_availability_badge_and_env_names_only(site: Site) -> None:
    """The page has 90 cells with the FAILED day in place, availability, the badge snippet, the shields
    link and environment variable names but never their digests."""
    status, _, body = await site.get(f"/deployments/{RIDS[0]}")
    assert status == 200
    cells = re.findall(r'data-day="([0-9-]+)" data-condition="([a-z_]+)"', body)
    assert len(cells) == 90
    assert cells[-6][1] == "failed"
    assert "API_KEY" in body
    assert "digest-of-secret" not in body
    assert f"/api/v1/shields/deployments/{RIDS[0]}" in body
    assert "[![dep-0 status](" in body
    assert "over the full 24 h" in body or "observed so far" in body


async def test_pages_show_history_not_yet_written(site: Site) -> None:
    """A change published after the last flush is already on the page: in the transitions and today's cell."""
    failed = event(EventType.CHANGED, NOW, rid=RIDS[0], old_state="ACTIVE", new_state="FAILED", ready=False)
    site.writer.publish([failed])
    _, _, body = await site.get(f"/deployments/{RIDS[0]}")
    assert "ACTIVE → FAILED (not ready)" in body
    _, _, body = await site.get(f"/api/v1/deployments/{RIDS[0]}/history?days=1")
    assert json.loads(body)["days"][0]["seconds"]["up"] == 3600.0
    _, _, feed = await site.get("/feeds/fleet.atom")
    assert "scorer: ACTIVE → FAILED" in feed


async def test_history_api(site: Site) -> None:
    """The history JSON has one entry per day asked for, with seconds per condition."""
    status, ctype, body = await site.get(f"/api/v1/deployments/{RIDS[0]}/history?days=7")
    assert status == 200
    assert ctype.startswith("application/json")
    data = json.loads(body)
    assert len(data["days"]) == 7
    assert data["days"][1]["seconds"] == {"failed": 60.0, "up": 1.0}


async def test_badges_shields_and_feeds(site: Site) -> None:
    """A deployment badge and a group badge are SVG; the shields endpoint is schemaVersion 1; feeds are Atom."""
    status, ctype, svg = await site.get(f"/badges/deployments/{RIDS[1]}.svg")
    assert (status, ctype.split(";")[0]) == (200, "image/svg+xml")
    assert "failed" in svg
    ET.fromstring(svg)  # noqa: S314 (our own output)
    _, _, group = await site.get("/badges/groups/team/risk.svg")
    assert "1/2 up" in group
    _, _, shields = await site.get(f"/api/v1/shields/deployments/{RIDS[0]}")
    assert json.loads(shields) == {
        "schemaVersion": 1,
        "label": "dep-0",
        "message": "✓ up",
        "color": "brightgreen",
    }
    status, ctype, feed = await site.get("/feeds/fleet.atom")
    assert (status, ctype.split(";")[0]) == (200, "application/atom+xml")
    root = ET.fromstring(feed)  # noqa: S314 (our own output)
    assert len(root.findall("{http://www.w3.org/2005/Atom}entry")) == 3
    status, _, feed = await site.get(f"/feeds/deployments/{RIDS[1]}.atom")
    assert "first seen FAILED" in feed


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/deployments/not-a-rid", 400),
        ("/deployments/" + RIDS[0][:-1] + "9", 404),
        (f"/api/v1/deployments/{RIDS[0]}/history?days=100000000000000000000", 400),
        (f"/api/v1/deployments/{RIDS[0]}/history?days=-1", 400),
        (f"/api/v1/deployments/{RIDS[0]}/history?days=%F0%9F%92%A5", 400),
        ("/?state=exploded", 400),
        ("/?page=0", 400),
        ("/?page=99999999999999999999", 400),
        ("/?label=novalue", 400),
        ("/?q=" + "x" * 5000, 400),
        ("/badges/deployments/%00.svg", 400),
        ("/feeds/deployments/ri.x.svg.atom", 400),
        ("/static/status/..%2F..%2Fpyproject.toml", 404),
    ],
)
async def test_hostile_input_gets_a_4xx(site: Site, path: str, status: int) -> None:
    """Malformed RIDs, numbers, states, pages and paths are refused with a 4xx, never a 500."""
    got, _, body = await site.get(path)
    assert got == status
    assert "Traceback" not in body


async def test_static_files_are_served_from_the_package(site: Site) -> None:
    """The stylesheet and script ship in the package and are served with their types."""
    status, ctype, css = await site.get("/static/status/status.css")
    assert (status, ctype.split(";")[0]) == (200, "text/css")
    assert "prefers-color-scheme: dark" in css
    status, ctype, _ = await site.get("/static/status/status.js")
    assert (status, ctype.split(";")[0]) == (200, "text/javascript")


#: Starts what the ``run`` command imports, mounts the status page, then asks for the fleet page.
_FIRST_PAGE = textwrap.dedent(
    """
    import sys
    import aiohttp, anyio
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    import monitor.cli
    from monitor.status.routes import add_status_routes
    from monitor.status.store import MemoryHistory
    from monitor.status.writer import HistoryWriter
    from monitor.tracker import Tracker

    async def main() -> None:
        tracker = Tracker()
        app = web.Application()
        add_status_routes(app, tracker=tracker, history=HistoryWriter(MemoryHistory(), tracker))
        mounted = "jinja2" in sys.modules
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/")) as response:
                print(mounted, response.status, "jinja2" in sys.modules)

    anyio.run(main)
    """
)


def test_the_template_engine_is_imported_with_the_first_page() -> None:
    """jinja2 is loaded when a page is first asked for, not when the monitor starts and mounts the routes:
    a monitor whose status page nobody opens does not carry it (about 2 MB)."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_PAGE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "200", "True"]
