"""Server time of the status page at fleet scale: 10,000 deployments with 90 days of history in SQLite.

    python -m bench.status [--size 10000] [--days 90] [--requests 15]

Prints one table: the median, 90th percentile and slowest handler time (measured inside the server by a
middleware, so the client's parsing is left out) for the fleet page, a filtered fleet page, a deployment
page and the history JSON. One run; the issue asks for both pages under 200 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import anyio
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.events import Event, EventType
from monitor.model import LiveDeployment, RuntimeConfiguration
from monitor.state import SqliteState, opened
from monitor.status.conditions import Condition
from monitor.status.history import DAY, ChangePoint, day_of
from monitor.status.routes import add_status_routes
from monitor.status.store import DayIncrement, HistoryBatch, Transition
from monitor.status.writer import HistoryWriter
from monitor.tracker import Target, Tracker

STATES = (
    [("ACTIVE", True)] * 90 + [("FAILED", False)] * 4 + [("DEGRADED", True)] * 3 + [("DISABLED", False)] * 3
)


def rid_of(i: int) -> str:
    return f"ri.foundry-ml-live.main.live-deployment.{i:08d}-0000-4000-8000-000000000000"


async def seed(writer: HistoryWriter, tracker: Tracker, size: int, days: int, now: float) -> None:
    rng = random.Random(12)
    events = []
    for i in range(size):
        rid = rid_of(i)
        tracker.add(Target(rid=rid, name=f"model-{i:05d}", labels=(("team", f"team-{i % 40}"),)))
        state, ready = rng.choice(STATES)
        snapshot = LiveDeployment(
            rid=rid,
            model_rid="ri.models.main.model.m",
            model_version_rid=f"ri.models.main.model-version.{i:08d}",
            runtime=RuntimeConfiguration(min_replicas=1, max_replicas=4, environment=(("API_KEY", "d"),)),
            state=state,
            is_ready=ready,
        )
        tracker.observe(rid, snapshot, now - 60)
        events.append(
            Event(EventType.OBSERVED, rid, f"model-{i:05d}", (), now - 60, 1, new_state=state, ready=ready)
        )
    writer.publish(events)
    today = day_of(now)
    for start in range(0, size, 500):
        increments, points, transitions = [], [], []
        for i in range(start, min(size, start + 500)):
            rid = rid_of(i)
            for day in range(today - days + 1, today):
                millis = {Condition.UP: 86_400_000}
                if rng.random() < 0.05:
                    millis = {Condition.UP: 85_000_000, Condition.FAILED: 1_400_000}
                increments.append(DayIncrement(rid, day, millis))
            points.append((rid, ChangePoint(now - days * DAY, Condition.UP)))
            for n in range(20):
                at = now - (n + 1) * 3 * DAY
                points.append((rid, ChangePoint(at, Condition.FAILED)))
                points.append((rid, ChangePoint(at + 600, Condition.UP)))
                transitions.append(
                    Transition(
                        f"{i}-{n}",
                        rid,
                        f"model-{i:05d}",
                        at,
                        "deployment.changed",
                        "ACTIVE",
                        "FAILED",
                        False,
                        (("status.state", "ACTIVE", "FAILED"),),
                        None,
                    )
                )
        await writer.store.write(
            HistoryBatch(days=tuple(increments), points=tuple(points), transitions=tuple(transitions))
        )
    await writer.flush()


async def run(size: int, days: int, requests: int) -> None:
    timings: dict[str, list[float]] = {}

    @web.middleware
    async def timed(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        timings.setdefault(request.headers["X-Bench"], []).append((time.perf_counter() - started) * 1000)
        return response

    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        async with opened(SqliteState(Path(tmp) / "monitor.sqlite3")) as state:
            store = state.history
            tracker = Tracker()
            writer = HistoryWriter(store, tracker, clock=lambda: now)
            writer._recorder = type(writer._recorder)(
                started=now - 120
            )  # the seeded observations are this run's
            t0 = time.perf_counter()
            await seed(writer, tracker, size, days, now)
            print(f"seeded {size} deployments x {days} days in {time.perf_counter() - t0:.1f} s")
            app = web.Application(middlewares=[timed])
            add_status_routes(app, tracker=tracker, history=writer)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            pages = {
                "fleet page /": "/",
                "fleet page ?state=failed&q=model-0": "/?state=failed&q=model-0",
                "fleet page ?group=team&page=40": "/?group=team&page=40",
                "deployment page": f"/deployments/{rid_of(size // 2)}",
                "history JSON ?days=400": f"/api/v1/deployments/{rid_of(size // 2)}/history?days=400",
            }
            try:
                async with aiohttp.ClientSession() as session:
                    for name, path in pages.items():
                        for _ in range(requests):
                            async with session.get(
                                server.make_url(path), headers={"X-Bench": name}
                            ) as response:
                                assert response.status == 200, (path, response.status)
                                await response.read()
            finally:
                await server.close()
    print(f"\n{'request':<38}{'median ms':>10}{'p90 ms':>9}{'max ms':>9}{'n':>4}")
    for name, values in timings.items():
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
        print(f"{name:<38}{statistics.median(values):>10.1f}{p90:>9.1f}{max(values):>9.1f}{len(values):>4}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--requests", type=int, default=15)
    args = parser.parse_args()
    anyio.run(run, args.size, args.days, args.requests)


if __name__ == "__main__":
    main()
