"""The service with its state in PostgreSQL, end to end: the bundled simulator over loopback, a real
PostgreSQL server, the file sink, and a restart on the same database."""

from __future__ import annotations

from pathlib import Path

import anyio

from monitor.config import load_config
from monitor.service import Running, Service
from monitor.simulator.server import SimulatorHandle
from tests.pg import PgDatabase
from tests.test_restart import file_events, sim, until, write_config

__all__ = ["sim"]  # the simulator fixture of the restart tests


async def test_the_service_keeps_records_and_events_in_postgres_and_observes_nothing_again_after_a_restart(
    sim: SimulatorHandle, pg_database: PgDatabase, tmp_path: Path
) -> None:
    """With state.backend postgres (password from ${VAR}): the first run writes every deployment's record
    and its events to the database and the file sink gets them, the file sink's cursor is kept there; after
    a restart on the same database, a change made while down is reported once and nothing is observed
    again; no event_id reaches the file twice, and no SQLite file is made."""
    rids = list(sim.fleet.rids)
    state = {
        "backend": "postgres",
        "dsn": pg_database.dsn,
        "password": "${DB_PASSWORD}",
        "path": str(tmp_path / "unused.sqlite3"),
    }
    path = write_config(tmp_path / "monitor.yaml", sim, rids, state=state)
    config = load_config(path, environ={"DB_PASSWORD": pg_database.password})
    psql = pg_database.server.psql

    def stored_events() -> list[str]:
        return psql("SELECT event_id FROM outbox ORDER BY seq", pg_database.name).split()

    def file_cursor() -> str:
        return psql("SELECT seq FROM cursors WHERE sink = 'file'", pg_database.name)

    async with anyio.create_task_group() as tg:
        running: Running = await tg.start(Service(config).run)
        await until(running.scheduler.first_round_done.is_set)
        await until(lambda: len(file_events(tmp_path)) >= len(rids))
        await until(lambda: psql("SELECT COUNT(*) FROM deployments", pg_database.name) == str(len(rids)))
        await until(lambda: file_cursor() == str(len(stored_events())))
        tg.cancel_scope.cancel()

    first_run = file_events(tmp_path)
    assert sorted(e["rid"] for e in first_run if e["type"] == "deployment.observed") == sorted(rids)
    assert sorted(stored_events()) == sorted(e["event_id"] for e in first_run)

    sim.fleet.set_status(rids[0], "FAILED", False)  # while the monitor is down
    async with anyio.create_task_group() as tg:
        running = await tg.start(Service(config).run)
        await until(running.scheduler.first_round_done.is_set)
        await until(lambda: any(e.get("new_state") == "FAILED" for e in file_events(tmp_path)))
        tg.cancel_scope.cancel()

    events = file_events(tmp_path)
    assert sorted(e["rid"] for e in events if e["type"] == "deployment.observed") == sorted(rids)
    down = [e for e in events if e["rid"] == rids[0] and e["type"] == "deployment.changed"]
    assert [(e["old_state"], e["new_state"]) for e in down] == [("ACTIVE", "FAILED")]
    assert len({e["event_id"] for e in events}) == len(events)
    assert not (tmp_path / "unused.sqlite3").exists()
