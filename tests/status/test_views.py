"""Tests for monitor.status.views: query parsing, problems first, grouping, pages, and tile names."""

from __future__ import annotations

import pytest

from monitor.status.conditions import Condition
from monitor.status.views import BadQuery, FleetQuery, fleet_view, parse_fleet_query
from monitor.tracker import Record, Target

RID = "ri.foundry-ml-live.main.live-deployment.{:08d}-0000-4000-8000-000000000000"


def records(n: int) -> list[Record]:
    return [
        Record(target=Target(rid=RID.format(i), name=f"d{i:03d}", labels=(("team", "ab"[i % 2]),)))
        for i in range(n)
    ]


def failing_every_tenth(rid: str) -> tuple[Condition, float]:
    return (Condition.FAILED if int(rid.split(".")[-1][:8]) % 10 == 0 else Condition.UP, 0.0)


def test_parse_fleet_query_and_links_round_trip() -> None:
    """A parsed query writes itself back as a link; a new filter resets the page to 1."""
    query = parse_fleet_query(
        {"state": "failed", "label": "team=a", "q": " d0 ", "group": "team", "page": "3"}
    )
    assert query == FleetQuery(Condition.FAILED, ("team", "a"), "d0", "team", 3)
    assert query.link() == "?state=failed&label=team%3Da&q=d0&group=team&page=3"
    assert "page" not in query.link(state="up")
    assert query.link(page=4).endswith("page=4")


@pytest.mark.parametrize(
    "query", [{"state": "nope"}, {"label": "x"}, {"page": "0"}, {"page": "1e3"}, {"q": "x" * 201}]
)
def test_bad_queries_are_refused(query: dict[str, str]) -> None:
    """Unknown conditions, labels without '=', pages out of range and huge text raise BadQuery."""
    with pytest.raises(BadQuery):
        parse_fleet_query(query)


def test_problems_first_then_pages() -> None:
    """The failed deployments come first on page 1; 25 deployments at 10 a page make 3 pages."""
    view = fleet_view(records(25), failing_every_tenth, FleetQuery(), page_size=10)
    first = [t.name for g in view.groups for t in g.tiles]
    assert first[:3] == ["d000", "d010", "d020"]
    assert (view.pages, view.matched) == (3, 25)
    assert dict(view.counts) == {Condition.FAILED: 3, Condition.UP: 22}
    last = fleet_view(records(25), failing_every_tenth, FleetQuery(page=3), page_size=10)
    assert len(last.groups[0].tiles) == 5


def test_grouping_puts_the_group_with_a_problem_first() -> None:
    """Grouped by team, the group holding the failed deployments leads (team a: the even ones)."""
    view = fleet_view(records(6), failing_every_tenth, FleetQuery(group="team"))
    assert [g.value for g in view.groups] == ["a", "b"]
    assert view.groups[0].tiles[0].name == "d000"


def test_discovered_deployments_get_a_short_title() -> None:
    """A deployment named by its RID is titled by the start of its id; a named one by its name."""
    rid = RID.format(7)
    view = fleet_view([Record(target=Target(rid=rid, name=rid))], lambda r: None, FleetQuery())
    assert view.groups[0].tiles[0].title == "deployment 00000007"
    assert view.groups[0].tiles[0].condition is Condition.UNKNOWN
