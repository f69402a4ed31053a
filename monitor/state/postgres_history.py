"""The status history in the PostgreSQL state database: its tables (one numbered migration of the schema)
and its queries, each call on a pooled connection, every write in one transaction.

The same tables as the SQLite file's, keyed by rid through ``status_deployments``; ids are looked up per
call rather than cached, so that processes sharing the database never hold an id another rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from monitor.state.sqlite_history import _millis, _points, _transition, _transition_body
from monitor.status.conditions import Condition
from monitor.status.history import ChangePoint, DayDurations
from monitor.status.store import POINTS_KEPT, TRANSITIONS_KEPT, HistoryBatch, OpenInterval, Transition

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

#: A connection lent by the pool.
Db: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
#: Lends a pooled connection for a block, with database errors translated to ``StateUnavailable``.
Lender = Callable[[], AbstractAsyncContextManager[Db]]

_CONDITIONS = tuple(Condition)
_COLUMNS = ", ".join(c.value for c in _CONDITIONS)

#: The statements that add the history tables to the schema (one migration step).
MIGRATION: tuple[str, ...] = (
    "CREATE TABLE status_deployments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " rid text NOT NULL UNIQUE, condition text, since double precision, accounted double precision)",
    "CREATE TABLE status_days (dep bigint NOT NULL REFERENCES status_deployments (id), day integer NOT NULL, "
    + ", ".join(f"{c.value} bigint NOT NULL DEFAULT 0" for c in _CONDITIONS)
    + ", PRIMARY KEY (dep, day))",
    "CREATE TABLE status_points (dep bigint NOT NULL REFERENCES status_deployments (id),"
    " time double precision NOT NULL, condition text NOT NULL, PRIMARY KEY (dep, time))",
    "CREATE TABLE status_transitions (dep bigint NOT NULL REFERENCES status_deployments (id),"
    " time double precision NOT NULL, event_id text NOT NULL, body json NOT NULL,"
    " PRIMARY KEY (dep, time, event_id))",
    "CREATE INDEX status_transitions_by_time ON status_transitions (time)",
)

# The column names come from Condition's fixed values, never from input.
_PLACEHOLDERS = ", ".join(f"${i + 3}" for i in range(len(_CONDITIONS)))
_ADDITIONS = ", ".join(f"{c.value} = status_days.{c.value} + excluded.{c.value}" for c in _CONDITIONS)
_ADD_DAY = (
    f"INSERT INTO status_days (dep, day, {_COLUMNS}) VALUES ($1, $2, {_PLACEHOLDERS})"  # noqa: S608
    f" ON CONFLICT (dep, day) DO UPDATE SET {_ADDITIONS}"
)
_DAYS = (
    f"SELECT d.day, {', '.join(f'd.{c.value}' for c in _CONDITIONS)} FROM status_days d"  # noqa: S608
    " JOIN status_deployments s ON s.id = d.dep WHERE s.rid = $1 AND d.day BETWEEN $2 AND $3 ORDER BY d.day"
)
_POINTS = (
    "(SELECT p.time, p.condition FROM status_points p JOIN status_deployments s ON s.id = p.dep"
    " WHERE s.rid = $1 AND p.time < $2 ORDER BY p.time DESC LIMIT 1)"
    " UNION ALL (SELECT p.time, p.condition FROM status_points p JOIN status_deployments s ON s.id = p.dep"
    " WHERE s.rid = $1 AND p.time >= $2 ORDER BY p.time)"
)
_TRANSITIONS = (
    "SELECT s.rid, t.time, t.event_id, t.body FROM status_transitions t"
    " JOIN status_deployments s ON s.id = t.dep WHERE $1::text IS NULL OR s.rid = $1"
    " ORDER BY t.time DESC LIMIT $2"
)
_TRIM = (
    "DELETE FROM {table} WHERE dep = $1 AND time < (SELECT time FROM {table}"
    " WHERE dep = $1 ORDER BY time DESC LIMIT 1 OFFSET $2)"
)


class PostgresHistory:
    """``HistoryStore`` over PostgreSQL, on connections ``lend`` hands out."""

    def __init__(self, lend: Lender) -> None:
        self._lend = lend

    async def load_open(self) -> dict[str, OpenInterval]:
        async with self._lend() as db:
            rows = await db.fetch(
                "SELECT rid, condition, since, accounted FROM status_deployments WHERE condition IS NOT NULL"
            )
        opened = {}
        for rid, condition, since, accounted in rows:
            try:
                opened[rid] = OpenInterval(rid, Condition(condition), float(since), float(accounted))
            except (ValueError, TypeError):
                continue
        return opened

    async def write(self, batch: HistoryBatch) -> None:
        rids = {inc.rid for inc in batch.days} | {rid for rid, _ in batch.points}
        rids |= {t.rid for t in batch.transitions} | {o.rid for o in batch.open}
        async with self._lend() as db, db.transaction():
            ids = await _ids(db, sorted(rids))
            await _many(
                db,
                _ADD_DAY,
                [(ids[i.rid], i.day, *(i.millis.get(c, 0) for c in _CONDITIONS)) for i in batch.days],
            )
            await _many(
                db,
                "INSERT INTO status_points (dep, time, condition) VALUES ($1, $2, $3)"
                " ON CONFLICT (dep, time) DO UPDATE SET condition = excluded.condition",
                [(ids[rid], p.time, p.condition.value) for rid, p in batch.points],
            )
            await _many(
                db,
                "INSERT INTO status_transitions (dep, time, event_id, body) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING",
                [(ids[t.rid], t.time, t.event_id, _transition_body(t)) for t in batch.transitions],
            )
            touched = sorted({ids[t.rid] for t in batch.transitions})
            trim = _TRIM.format(table="status_transitions")
            await _many(db, trim, [(dep, TRANSITIONS_KEPT - 1) for dep in touched])
            await _many(
                db,
                "UPDATE status_deployments SET condition = $1, since = $2, accounted = $3 WHERE id = $4",
                [(o.condition.value, o.since, o.accounted, ids[o.rid]) for o in batch.open],
            )
            if batch.closed:
                await db.execute(
                    "UPDATE status_deployments SET condition = NULL WHERE rid = ANY($1::text[])",
                    list(batch.closed),
                )

    async def days(self, rid: str, first: int, last: int) -> list[DayDurations]:
        async with self._lend() as db:
            rows = await db.fetch(_DAYS, rid, first, last)
        return [DayDurations(int(row[0]), _millis(row[1:])) for row in rows]

    async def points(self, rid: str, since: float) -> list[ChangePoint]:
        async with self._lend() as db:
            rows = await db.fetch(_POINTS, rid, since)
        return list(_points((row[0], row[1]) for row in rows))

    async def transitions(self, rid: str | None, limit: int) -> list[Transition]:
        async with self._lend() as db:
            rows = await db.fetch(_TRANSITIONS, rid, max(0, limit))
        return [t for t in (_transition(*row) for row in rows) if t is not None]

    async def prune(self, *, before_day: int, points_before: float) -> None:
        async with self._lend() as db, db.transaction():
            await db.execute("DELETE FROM status_days WHERE day < $1", before_day)
            await db.execute(
                "DELETE FROM status_points WHERE time < $1 AND (dep, time) NOT IN"
                " (SELECT dep, MAX(time) FROM status_points WHERE time < $1 GROUP BY dep)",
                points_before,
            )
            crowded = await db.fetch(
                "SELECT dep FROM status_points GROUP BY dep HAVING COUNT(*) > $1", POINTS_KEPT
            )
            trim = _TRIM.format(table="status_points")
            await _many(db, trim, [(row[0], POINTS_KEPT - 1) for row in crowded])


async def _ids(db: Db, rids: list[str]) -> dict[str, int]:
    """The id of each of ``rids``, creating the missing ones."""
    if not rids:
        return {}
    await db.execute(
        "INSERT INTO status_deployments (rid) SELECT unnest($1::text[]) ON CONFLICT (rid) DO NOTHING", rids
    )
    rows = await db.fetch("SELECT rid, id FROM status_deployments WHERE rid = ANY($1::text[])", rids)
    return {row[0]: int(row[1]) for row in rows}


async def _many(db: Db, query: str, args: list[tuple[object, ...]]) -> None:
    if args:
        await db.executemany(query, args)
