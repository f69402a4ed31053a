"""The service through a PostgreSQL outage, end to end: the bundled simulator over loopback with states
changing, a real PostgreSQL server stopped by its pid for ``OUTAGE_SECONDS`` and started again, the file
sink, which must then have every change once, and a webhook receiver, which must have them all too."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio
import pytest

from monitor.config import load_config
from monitor.service import Running, Service
from monitor.simulator.server import SimulatorHandle
from tests.pg import (
    MONITOR_PASSWORD,
    PgServer,
    halt_server,
    require_postgres,
    resume_server,
    start_server,
    stop_server,
)
from tests.test_restart import file_events, sim, until, write_config
from tests.test_sinks import Receiver, serving

__all__ = ["sim"]  # the simulator fixture of the restart tests

#: How long PostgreSQL stays down (the issue's figure): a measured interval of the test, not a wait.
OUTAGE_SECONDS = 20.0
#: The states each deployment goes through, round and round, with its readiness in each.
CYCLE = (("DEGRADED", True), ("FAILED", False), ("STARTING", False), ("ACTIVE", True))


@pytest.fixture
def own_pg_server() -> Iterator[list[PgServer]]:
    """A PostgreSQL server of this test's own (the session's stays up for the others), in a list so that
    the test can put the restarted server (its new pid) in its place; stopped and removed at the end."""
    require_postgres()
    servers = [start_server()]
    try:
        yield servers
    finally:
        stop_server(servers[0])


def changes_told(tmp_path: Path) -> list[tuple[str, str, str]]:
    """The file sink's ``deployment.changed`` events as (rid, from, to), in the file's order."""
    return [
        (e["rid"], e["old_state"], e["new_state"])
        for e in file_events(tmp_path)
        if e["type"] == "deployment.changed"
    ]


def gauge(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


async def scrape(session: aiohttp.ClientSession, port: int, path: str = "/metrics") -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_through_a_database_outage_metrics_stay_served_and_every_change_reaches_the_file_once(
    sim: SimulatorHandle, own_pg_server: list[PgServer], tmp_path: Path
) -> None:
    """States keep changing while PostgreSQL is stopped for 20 s: /metrics answers throughout with
    database_up 0 and the changes held in memory, /readyz stays 200 and says the database is down; after
    the restart every transition the simulator made reaches the file sink exactly once and in order (no
    event_id twice, the same events as the outbox) and the webhook, database_up is 1 again and nothing was
    dropped."""
    server = own_pg_server[0]
    server.psql("CREATE DATABASE outage OWNER monitor")
    rids = list(sim.fleet.rids)
    state = {"backend": "postgres", "dsn": server.dsn("outage"), "password": MONITOR_PASSWORD}
    hook = Receiver()
    made: list[tuple[str, str, str]] = []
    churning = True

    async with (
        serving(hook.handle) as url,
        anyio.create_task_group() as tg,
        aiohttp.ClientSession() as session,
    ):
        sinks = {
            "stdout": False,
            "file": {"path": str(tmp_path / "events.jsonl")},
            "webhooks": [{"url": url}],
        }
        config = load_config(write_config(tmp_path / "monitor.yaml", sim, rids, state=state, sinks=sinks))
        running: Running = await tg.start(Service(config).run)
        await until(running.scheduler.first_round_done.is_set)

        def seen(rid: str, wanted: str) -> bool:
            snapshot = running.tracker.records[rid].snapshot
            return snapshot is not None and snapshot.state == wanted

        async def churn() -> None:
            # One deployment at a time, each change once the monitor has polled the last: so every
            # transition the simulator makes is one the monitor can see, during the outage as before it.
            current = dict.fromkeys(rids, "ACTIVE")
            step = 0
            while churning:
                rid = rids[step % len(rids)]
                new, ready = CYCLE[(step // len(rids)) % len(CYCLE)]
                sim.fleet.set_status(rid, new, ready)
                made.append((rid, current[rid], new))
                current[rid] = new
                step += 1
                await until(lambda rid=rid, new=new: seen(rid, new))

        tg.start_soon(churn)
        await until(lambda: len(made) >= 6)

        await anyio.to_thread.run_sync(halt_server, server)
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        before = len(made)
        metrics_status, text = await scrape(session, running.port)
        while gauge(text, "foundry_monitor_database_up") != 0.0:
            assert metrics_status == 200
            assert time.monotonic() < outage_ends, "database_up never went to 0"
            metrics_status, text = await scrape(session, running.port)
        ready_status, ready_body = await scrape(session, running.port, "/readyz")
        assert ready_status == 200
        assert '"up": false' in ready_body
        # The rest of the outage: the monitor keeps polling and answering while nothing can be written.
        held = 0.0
        while time.monotonic() < outage_ends:
            metrics_status, text = await scrape(session, running.port)
            assert metrics_status == 200
            assert gauge(text, "foundry_monitor_database_up") == 0.0
            held = gauge(text, "foundry_monitor_state_buffered_events") or 0.0
            await anyio.sleep(min(0.5, max(0.0, outage_ends - time.monotonic())))
        changed_during = len(made) - before
        own_pg_server[0] = server = await anyio.to_thread.run_sync(resume_server, server)
        churning = False
        await until(lambda: len(changes_told(tmp_path)) >= len(made), timeout=60.0)
        on_file = {e["event_id"] for e in file_events(tmp_path)}
        await until(lambda: {str(body["event_id"]) for body in hook.bodies} >= on_file, timeout=60.0)
        metrics_status, text = await scrape(session, running.port)
        await until(lambda: running.metrics.registry.get_sample_value("foundry_monitor_database_up") == 1)
        tg.cancel_scope.cancel()

    assert changed_during >= 10, "the states hardly changed during the outage"
    assert held > 0
    told = changes_told(tmp_path)
    for rid in rids:
        assert [t for t in told if t[0] == rid] == [m for m in made if m[0] == rid]
    assert sorted(told) == sorted(made)
    ids = [e["event_id"] for e in file_events(tmp_path)]
    assert len(ids) == len(set(ids))
    stored = server.psql("SELECT event_id FROM outbox ORDER BY seq", "outage").split()
    assert sorted(stored) == sorted(ids)
    assert gauge(text, "foundry_monitor_state_dropped_events_total") == 0.0
    assert (gauge(text, 'foundry_monitor_database_errors_total{operation="append"}') or 0.0) > 0
