"""The status history in the SQLite state file: its tables (one numbered migration of the state file) and its
queries, run on the state file's connection in its worker thread.

Bytes per deployment-year (measured in tests/status/test_sqlite_history.py): a day row holds one integer
per condition, zeros cost a header byte each, so a year is 365 rows of ~26 bytes: 9.4 KB measured, bounded
at 16 KiB by the test. Change points (at most 31 days, at most 2,000 per deployment) and transitions (the
last 50) are bounded per deployment whatever its age.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import structlog

from monitor.status.conditions import Condition
from monitor.status.history import ChangePoint, DayDurations
from monitor.status.store import POINTS_KEPT, TRANSITIONS_KEPT, HistoryBatch, OpenInterval, Transition

T = TypeVar("T")

log = structlog.get_logger(__name__)

_CONDITIONS = tuple(Condition)
_COLUMNS = ", ".join(c.value for c in _CONDITIONS)

# The column names come from Condition's fixed values, never from input.
_DAY_COLUMNS_SQL = f"SELECT day, {_COLUMNS} FROM status_days"  # noqa: S608

#: The statements that add the history tables to a schema (one migration step of the state file).
MIGRATION: tuple[str, ...] = (
    "CREATE TABLE status_deployments (id INTEGER PRIMARY KEY, rid TEXT NOT NULL UNIQUE,"
    " condition TEXT, since REAL, accounted REAL)",
    "CREATE TABLE status_days (dep INTEGER NOT NULL, day INTEGER NOT NULL, "
    + ", ".join(f"{c.value} INTEGER NOT NULL DEFAULT 0" for c in _CONDITIONS)
    + ", PRIMARY KEY (dep, day)) WITHOUT ROWID",
    "CREATE TABLE status_points (dep INTEGER NOT NULL, time REAL NOT NULL, condition TEXT NOT NULL,"
    " PRIMARY KEY (dep, time)) WITHOUT ROWID",
    "CREATE TABLE status_transitions (dep INTEGER NOT NULL, time REAL NOT NULL, event_id TEXT NOT NULL,"
    " body TEXT NOT NULL, PRIMARY KEY (dep, time, event_id)) WITHOUT ROWID",
    "CREATE INDEX status_transitions_by_time ON status_transitions (time)",
)

_PLACEHOLDERS = ", ".join("?" * len(_CONDITIONS))
_ADDITIONS = ", ".join(f"{c.value} = {c.value} + excluded.{c.value}" for c in _CONDITIONS)
_ADD_DAY = f"INSERT INTO status_days (dep, day, {_COLUMNS}) VALUES (?, ?, {_PLACEHOLDERS})"  # noqa: S608
_ADD_DAY += " ON CONFLICT (dep, day) DO UPDATE SET " + _ADDITIONS


class ConnectionRunner(Protocol):
    """Runs ``func`` with the connection, in the one thread that uses it, and returns its result."""

    async def __call__(self, func: Callable[[sqlite3.Connection], T]) -> T: ...


class SqliteHistory:
    """``HistoryStore`` over SQLite; every call runs through ``run`` on the caller's connection."""

    def __init__(self, run: ConnectionRunner) -> None:
        self._run = run
        self._ids: dict[str, int] = {}

    def _id(self, db: sqlite3.Connection, rid: str) -> int:
        found = self._ids.get(rid)
        if found is None:
            db.execute("INSERT OR IGNORE INTO status_deployments (rid) VALUES (?)", (rid,))
            row = db.execute("SELECT id FROM status_deployments WHERE rid=?", (rid,)).fetchone()
            found = self._ids[rid] = int(row[0])
        return found

    def _known(self, db: sqlite3.Connection, rid: str) -> int | None:
        found = self._ids.get(rid)
        if found is None:
            row = db.execute("SELECT id FROM status_deployments WHERE rid=?", (rid,)).fetchone()
            if row is None:
                return None
            found = self._ids[rid] = int(row[0])
        return found

    async def load_open(self) -> dict[str, OpenInterval]:
        def read(db: sqlite3.Connection) -> dict[str, OpenInterval]:
            rows = db.execute(
                "SELECT id, rid, condition, since, accounted FROM status_deployments"
                " WHERE condition IS NOT NULL"
            ).fetchall()
            opened = {}
            for dep, rid, condition, since, accounted in rows:
                self._ids[rid] = int(dep)
                try:
                    opened[rid] = OpenInterval(rid, Condition(condition), float(since), float(accounted))
                except (ValueError, TypeError):
                    continue
            return opened

        return await self._run(read)

    async def write(self, batch: HistoryBatch) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._write(db, batch)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT may have rolled back already
                    db.execute("ROLLBACK")
                # Ids handed out in the rolled-back transaction are gone with it.
                self._ids.clear()
                raise

        await self._run(write)

    def _write(self, db: sqlite3.Connection, batch: HistoryBatch) -> None:
        db.executemany(
            _ADD_DAY,
            [
                (self._id(db, inc.rid), inc.day, *(inc.millis.get(c, 0) for c in _CONDITIONS))
                for inc in batch.days
            ],
        )
        db.executemany(
            "INSERT OR REPLACE INTO status_points (dep, time, condition) VALUES (?, ?, ?)",
            [(self._id(db, rid), p.time, p.condition.value) for rid, p in batch.points],
        )
        touched = set()
        for t in batch.transitions:
            dep = self._id(db, t.rid)
            touched.add(dep)
            db.execute(
                "INSERT OR IGNORE INTO status_transitions (dep, time, event_id, body) VALUES (?, ?, ?, ?)",
                (dep, t.time, t.event_id, _transition_body(t)),
            )
        for dep in touched:
            db.execute(
                "DELETE FROM status_transitions WHERE dep=? AND time < (SELECT time FROM status_transitions"
                " WHERE dep=? ORDER BY time DESC LIMIT 1 OFFSET ?)",
                (dep, dep, TRANSITIONS_KEPT - 1),
            )
        db.executemany(
            "UPDATE status_deployments SET condition=?, since=?, accounted=? WHERE id=?",
            [(o.condition.value, o.since, o.accounted, self._id(db, o.rid)) for o in batch.open],
        )
        db.executemany(
            "UPDATE status_deployments SET condition=NULL WHERE rid=?", [(rid,) for rid in batch.closed]
        )

    async def days(self, rid: str, first: int, last: int) -> list[DayDurations]:
        def read(db: sqlite3.Connection) -> list[DayDurations]:
            dep = self._known(db, rid)
            if dep is None:
                return []
            rows = db.execute(
                _DAY_COLUMNS_SQL + " WHERE dep=? AND day BETWEEN ? AND ? ORDER BY day",
                (dep, first, last),
            ).fetchall()
            return [
                DayDurations(
                    int(row[0]), {c: int(ms) for c, ms in zip(_CONDITIONS, row[1:], strict=True) if ms}
                )
                for row in rows
            ]

        return await self._run(read)

    async def points(self, rid: str, since: float) -> list[ChangePoint]:
        def read(db: sqlite3.Connection) -> list[ChangePoint]:
            dep = self._known(db, rid)
            if dep is None:
                return []
            lead = db.execute(
                "SELECT time, condition FROM status_points WHERE dep=? AND time < ?"
                " ORDER BY time DESC LIMIT 1",
                (dep, since),
            ).fetchall()
            rest = db.execute(
                "SELECT time, condition FROM status_points WHERE dep=? AND time >= ? ORDER BY time",
                (dep, since),
            ).fetchall()
            return list(_points(lead + rest))

        return await self._run(read)

    async def transitions(self, rid: str | None, limit: int) -> list[Transition]:
        def read(db: sqlite3.Connection) -> list[Transition]:
            query = (
                "SELECT d.rid, t.time, t.event_id, t.body FROM status_transitions t"
                " JOIN status_deployments d ON d.id = t.dep"
            )
            if rid is None:
                rows = db.execute(query + " ORDER BY t.time DESC LIMIT ?", (limit,)).fetchall()
            else:
                dep = self._known(db, rid)
                if dep is None:
                    return []
                rows = db.execute(
                    query + " WHERE t.dep=? ORDER BY t.time DESC LIMIT ?", (dep, limit)
                ).fetchall()
            return [t for t in (_transition(*row) for row in rows) if t is not None]

        return await self._run(read)

    async def prune(self, *, before_day: int, points_before: float) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM status_days WHERE day < ?", (before_day,))
                db.execute(
                    "DELETE FROM status_points WHERE time < ? AND (dep, time) NOT IN"
                    " (SELECT dep, MAX(time) FROM status_points WHERE time < ? GROUP BY dep)",
                    (points_before, points_before),
                )
                crowded = db.execute(
                    "SELECT dep FROM status_points GROUP BY dep HAVING COUNT(*) > ?", (POINTS_KEPT,)
                ).fetchall()
                for (dep,) in crowded:
                    db.execute(
                        "DELETE FROM status_points WHERE dep=? AND time < (SELECT time FROM status_points"
                        " WHERE dep=? ORDER BY time DESC LIMIT 1 OFFSET ?)",
                        (dep, dep, POINTS_KEPT - 1),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT may have rolled back already
                    db.execute("ROLLBACK")
                raise

        await self._run(write)


def _millis(values: Iterable[int]) -> dict[Condition, int]:
    return {c: int(ms) for c, ms in zip(_CONDITIONS, values, strict=True) if ms}


def _points(rows: Iterable[tuple[float, str]]) -> Iterable[ChangePoint]:
    for at, condition in rows:
        try:
            yield ChangePoint(float(at), Condition(condition))
        except ValueError:
            continue


def _transition_body(t: Transition) -> str:
    body = {
        "name": t.name,
        "type": t.type,
        "old_state": t.old_state,
        "new_state": t.new_state,
        "ready": t.ready,
        "changes": [list(c) for c in t.changes],
        "error": t.error,
    }
    return json.dumps({k: v for k, v in body.items() if v not in (None, [])}, separators=(",", ":"))


def _transition(rid: str, at: float, event_id: str, body: str) -> Transition | None:
    try:
        data = json.loads(body)
        changes = tuple((str(p), str(o), str(n)) for p, o, n in data.get("changes", ()))
    except (ValueError, TypeError, AttributeError):
        return None
    return Transition(
        event_id=event_id,
        rid=rid,
        name=str(data.get("name", "")),
        time=float(at),
        type=str(data.get("type", "")),
        old_state=data.get("old_state"),
        new_state=data.get("new_state"),
        ready=data.get("ready"),
        changes=changes,
        error=data.get("error"),
    )
