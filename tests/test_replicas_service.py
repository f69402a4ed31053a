"""Two services in one process sharing a real PostgreSQL and the bundled simulator: they split the fleet,
each exports only its own deployments, the Alertmanager sink fires from the whole fleet's records, and a
replica stopping hands its deployments over without a change or an observation being reported."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio

from monitor.config import load_config
from monitor.service import Running, Service
from monitor.simulator.server import SimulatorHandle
from tests.pg import PgDatabase
from tests.test_alertmanager import FakeAlertmanager, serving
from tests.test_restart import file_events, metrics_text, sim, until, write_config

__all__ = ["sim"]  # the simulator fixture of the restart tests


def owned(running: Running) -> float:
    return running.metrics.registry.get_sample_value("foundry_monitor_owned_deployments") or 0.0


async def series_rids(running: Running) -> set[str]:
    text = await metrics_text(running)
    return set(re.findall(r'^foundry_live_deployment_up\{(?:[^}]*,)?rid="([^"]+)"', text, re.MULTILINE))


def failed_in(post: list[dict[str, Any]]) -> set[str]:
    return {
        a["labels"]["rid"]
        for a in post
        if a["labels"]["alertname"] == "FoundryDeploymentFailed" and "endsAt" not in a
    }


async def test_two_replicas_split_the_fleet_alert_for_all_of_it_and_hand_over_without_a_report(
    sim: SimulatorHandle, pg_database: PgDatabase, tmp_path: Path
) -> None:
    """Two replicas on one database take three deployments each, export series of their own only, and
    observe each deployment once between them. With every deployment FAILED, the Alertmanager sink (one
    replica holds it) resends a firing set naming all six, the other replica's too. One replica stops: the
    other owns all six within two leases, reporting nothing for the move, and a change after it once."""
    rids = list(sim.fleet.rids)
    fake = FakeAlertmanager()
    posts = fake.posts
    async with serving(fake) as am_url:
        state = {
            "backend": "postgres",
            "dsn": pg_database.dsn,
            "password": "${DB_PASSWORD}",
            "lease": "2s",
            "heartbeat": "500ms",
        }
        sinks = {
            "stdout": False,
            "file": {"path": str(tmp_path / "events.jsonl")},
            "alertmanager": {"url": am_url, "resend_interval": "300ms"},
        }
        path = write_config(tmp_path / "monitor.yaml", sim, rids, state=state, sinks=sinks)
        config = load_config(path, environ={"DB_PASSWORD": pg_database.password})
        async with anyio.create_task_group() as tg:
            first: Running = await tg.start(Service(config).run)
            async with anyio.create_task_group() as second:
                other: Running = await second.start(Service(config).run)
                await until(lambda: owned(first) == owned(other) == 3, timeout=20)
                a, b = await series_rids(first), await series_rids(other)
                assert len(a) == len(b) == 3
                assert a | b == set(rids)
                await until(lambda: len(file_events(tmp_path)) >= len(rids))

                for rid in rids:
                    sim.fleet.set_status(rid, "FAILED", False)
                await until(
                    lambda: len([e for e in file_events(tmp_path) if e["type"] == "deployment.changed"]) == 6
                )
                await until(lambda: set().union(*map(failed_in, posts)) == set(rids))
                settled = len(posts)
                # Events have all been sent: a later post naming all six is a firing set of the whole fleet.
                await until(lambda: any(failed_in(p) == set(rids) for p in posts[settled:]), timeout=10)

                before = file_events(tmp_path)
                second.cancel_scope.cancel()
            await until(lambda: owned(first) == 6, timeout=8)
            assert await series_rids(first) == set(rids)
            assert file_events(tmp_path) == before  # the move reported nothing
            sim.fleet.set_status(rids[0], "ACTIVE", True)
            await until(lambda: len(file_events(tmp_path)) > len(before))
            tg.cancel_scope.cancel()

    events = file_events(tmp_path)
    assert [(e["rid"], e["old_state"], e["new_state"]) for e in events[len(before) :]] == [
        (rids[0], "FAILED", "ACTIVE")
    ]
    assert sorted(e["rid"] for e in events if e["type"] == "deployment.observed") == sorted(rids)
    assert len({e["event_id"] for e in events}) == len(events)
