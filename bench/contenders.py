"""One benchmark contender per process: polls the simulator and prints its own CPU, wall time and RSS as JSON.

    python -m bench.contenders {bare,sdk,monitor} --base URL --rids FILE --polls N --concurrency C

Each contender polls the same RIDs round-robin until N polls are done. CPU is this process's own user+system
time over the polling loop only (start-up and imports excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

TOKEN = "bench-token"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def drive(rids: list[str], polls: int, concurrency: int, poll: Callable[[str], Awaitable[None]]) -> int:
    """Call ``poll`` ``polls`` times over ``rids`` round-robin, ``concurrency`` at once; count failures."""
    failures = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, failures
        while next_index < polls:
            rid = rids[next_index % len(rids)]
            next_index += 1
            try:
                await poll(rid)
            except Exception:
                failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


async def bare(base: str, rids: list[str], polls: int, concurrency: int) -> dict[str, Any]:
    """The floor for this stack: aiohttp GET and json.loads, nothing else."""
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def poll(rid: str) -> None:
            async with session.get(
                f"{base}/api/v2/models/liveDeployments/{rid}?preview=true", headers=headers
            ) as r:
                json.loads(await r.read())

        return await measure(lambda: drive(rids, polls, concurrency, poll))


async def sdk(base: str, rids: list[str], polls: int, concurrency: int) -> dict[str, Any]:
    """What a user would write instead: the official SDK's async client, decode only."""
    from foundry_sdk import AsyncFoundryClient, Config, UserTokenAuth

    client = AsyncFoundryClient(
        auth=UserTokenAuth(TOKEN),
        hostname=base.removeprefix("http://"),
        config=Config(scheme="http"),
        preview=True,
    )

    async def poll(rid: str) -> None:
        await client.models.LiveDeployment.get(rid, preview=True)

    return await measure(lambda: drive(rids, polls, concurrency, poll))


async def monitor(base: str, rids: list[str], polls: int, concurrency: int) -> dict[str, Any]:
    """The monitor's full pipeline: scheduler, client, decode, diff, tracker, metrics, events to a file."""
    import anyio

    from monitor.auth import StaticToken
    from monitor.breaker import CircuitBreaker
    from monitor.budget import RequestBudget
    from monitor.client import FoundryClient, open_session
    from monitor.config import BreakerConfig, PollingConfig, TimeoutsConfig
    from monitor.config.model import FileSinkConfig
    from monitor.decode import Decoder
    from monitor.logs import configure_logging
    from monitor.metrics import MetricsView, ProcessMetrics
    from monitor.scheduler import Scheduler
    from monitor.sinks import EventBus, FileSink
    from monitor.state import MemoryState
    from monitor.tracker import Target, Tracker

    # As the bench configures the service: its log (the scheduler's request demand) goes to stderr, at
    # warning, and stdout carries only this contender's figures.
    configure_logging("warning", "json")
    metrics = ProcessMetrics()
    counting = CountingObserver(metrics)
    tracker = Tracker()
    with tempfile.TemporaryDirectory() as tmp:
        # Events go straight to the bus here, in no outbox: the sink's outbox only has nothing to replay.
        outbox = MemoryState()
        sink = FileSink(metrics, outbox, FileSinkConfig(path=str(Path(tmp) / "events.jsonl")))
        bus = EventBus([sink], metrics)
        budget = RequestBudget(requests_per_second=1e9, concurrency=concurrency)
        session = open_session(timeouts=TimeoutsConfig(), limit=concurrency)
        client = FoundryClient(
            session=session,
            base_url=base,
            tokens=StaticToken(TOKEN),
            decoder=Decoder(secrets.token_bytes(32)),
            gate=budget,
            observer=counting,
        )
        # Interval 0: every deployment is due again as soon as its poll ends, so the loop saturates.
        scheduler = Scheduler(
            reader=client,
            tracker=tracker,
            bus=bus,
            metrics=metrics,
            breaker=CircuitBreaker(BreakerConfig(min_polls=1_000_000)),
            # One GET per poll (no list batching) and a budget that never stretches the intervals: the
            # per-poll pipeline at full speed.
            cadence=PollingConfig(
                interval=1e-6, fast_interval=1e-6, jitter=0.0, requests_per_second=1e6, batch="off"
            ),
            concurrency=concurrency,
        )
        for rid in rids:
            scheduler.add(Target(rid, rid[-8:]))
        view = MetricsView(metrics, tracker, label_names=(), staleness=1e9)

        def done() -> int:
            return counting.answered

        async def run() -> int:
            await outbox.open()
            async with anyio.create_task_group() as tg:
                await tg.start(sink.run)
                await tg.start(scheduler.run)
                while done() < polls:
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
            view.render(openmetrics=False)
            return 0

        try:
            result = await measure(run)
        finally:
            await session.close()
        result["polls"] = done()
        return result


class CountingObserver:
    """Forwards to the monitor's metrics and counts answers, so the harness need not collect the registry."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.answered = 0

    def request_done(self, code: str, seconds: float) -> None:
        self.answered += code == "200"
        self._inner.request_done(code, seconds)


async def measure(body: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    (user0, sys0), wall0 = cpu_seconds(), time.perf_counter()
    failures = await body()
    (user1, sys1), wall1 = cpu_seconds(), time.perf_counter()
    return {
        "cpu_s": (user1 - user0) + (sys1 - sys0),
        "user_s": user1 - user0,
        "sys_s": sys1 - sys0,
        "wall_s": wall1 - wall0,
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("bare", "sdk", "monitor"))
    parser.add_argument("--base", required=True)
    parser.add_argument("--rids", required=True)
    parser.add_argument("--polls", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop (if installed)")
    args = parser.parse_args()
    rids = Path(args.rids).read_text().split()
    func = {"bare": bare, "sdk": sdk, "monitor": monitor}[args.kind]
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(func(args.base, rids, args.polls, args.concurrency))
    result.setdefault("polls", args.polls)
    result["rss_bytes"] = rss_bytes()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
