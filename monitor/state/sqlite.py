"""The SQLite backend of the state ports: the last snapshot and watch state per deployment, and an outbox.

Every write happens in one worker thread (SQLite connections are not shared across threads, and blocking
calls must not stall the event loop). A poll's new record and the events it caused are written in one
transaction, so a crash at any point either keeps both or neither. Once open, the file failing (a full
disk, a file locked longer than the busy timeout, an I/O error) is ``StateUnavailable``, as a database that
does not answer is for the other backends: the service holds its events and tries again.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import structlog

from monitor.state import sqlite_history
from monitor.state.ports import Loaded, OutboxEvent, RecordWrite, StateUnavailable
from monitor.state.sqlite_history import SqliteHistory

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: SQLite's errors (by name; extended codes start with them) that say the file cannot be used now, not that
#: it is corrupt.
_NOT_CORRUPT = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_PERM",
    "SQLITE_NOMEM",
    "SQLITE_INTERRUPT",
)

SCHEMA_VERSION = 3
#: Forward migrations: index i holds the statements that take the schema from version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        "CREATE TABLE deployments (rid TEXT PRIMARY KEY, record TEXT NOT NULL)",
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,"
        " body TEXT NOT NULL, created REAL NOT NULL)",
        "CREATE TABLE cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    ),
    # 2: when each deployment's record was last written (for operators reading the file).
    ("ALTER TABLE deployments ADD COLUMN updated REAL",),
    # 3: the status page's condition history (per-day durations, change points, transitions).
    sqlite_history.MIGRATION,
)


class SqliteState:
    """The SQLite state file (a ``State``): ``open()`` migrates it forward or moves a corrupt one aside."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        #: How long a write waits for another process's lock on the file before it fails.
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        #: The status history, in the same file, on the same connection and worker thread.
        self.history = SqliteHistory(self._with_connection)

    async def _run(self, func: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(func, limiter=self._limiter)

    async def _use(self, func: Callable[[], T]) -> T:
        """``func`` in the worker thread, on the open file; the file failing is ``StateUnavailable``."""
        try:
            return await self._run(func)
        except sqlite3.Error as exc:
            raise StateUnavailable(f"state file {self._path}: {type(exc).__name__}: {exc}") from exc

    async def _with_connection(self, func: Callable[[sqlite3.Connection], T]) -> T:
        return await self._use(lambda: func(self._conn()))

    async def open(self) -> Loaded:
        """Open (creating or migrating) and load; a corrupt file is moved aside and a fresh one started.

        A file that cannot be used now (locked by another process past the busy timeout, a full disk, an I/O
        error, no permission) is not corrupt: it is left as it is, and the open fails as ``StateUnavailable``.
        """
        try:
            return await self._run(self._open)
        except sqlite3.DatabaseError as exc:
            if not (exc.sqlite_errorname or "").startswith(_NOT_CORRUPT):
                return await self._start_afresh()
            await self._run(self._close_quietly)
            raise StateUnavailable(f"state file {self._path}: {type(exc).__name__}: {exc}") from exc
        except StateUnavailable:
            return await self._start_afresh()

    async def _start_afresh(self) -> Loaded:
        """The file that failed to open moved aside (logged, with the error), and a fresh one opened."""
        aside = await self._run(self._move_aside)
        log.exception("state_file_unusable", path=str(self._path), moved_to=str(aside))
        return await self._run(self._open)

    def _move_aside(self) -> Path:
        self._close_quietly()
        aside = self._path.with_name(f"{self._path.name}.corrupt-{int(self._clock())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self._path) + suffix)
            if source.exists():
                source.replace(Path(str(aside) + suffix))
        return aside

    def _close_quietly(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None

    def _open(self) -> Loaded:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StateUnavailable("integrity check failed")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateUnavailable(f"schema version {version} is newer than this monitor's {SCHEMA_VERSION}")
        for target in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[target]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={target + 1}")
            db.execute("COMMIT")
            log.info("state_schema_migrated", to_version=target + 1)
        row = db.execute("SELECT value FROM meta WHERE key='digest_key'").fetchone()
        if row is None:
            key = secrets.token_bytes(32)
            db.execute("INSERT INTO meta (key, value) VALUES ('digest_key', ?)", (key,))
        else:
            key = bytes(row[0])
        records = {rid: json.loads(text) for rid, text in db.execute("SELECT rid, record FROM deployments")}
        last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        return Loaded(digest_key=key, records=records, last_seq=int(last))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateUnavailable("state file is not open")
        return self._db

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        """Append events to the outbox and write records (None deletes), in one transaction."""

        def write() -> list[int]:
            db = self._conn()
            now = self._clock()
            db.execute("BEGIN IMMEDIATE")
            try:
                for rid, record in records:
                    if record is None:
                        db.execute("DELETE FROM deployments WHERE rid=?", (rid,))
                    else:
                        db.execute(
                            "INSERT INTO deployments (rid, record, updated) VALUES (?, ?, ?)"
                            " ON CONFLICT(rid) DO UPDATE"
                            " SET record=excluded.record, updated=excluded.updated",
                            (rid, json.dumps(record, separators=(",", ":")), now),
                        )
                seqs = []
                for event in events:
                    db.execute(
                        "INSERT OR IGNORE INTO outbox (event_id, body, created) VALUES (?, ?, ?)",
                        (event["event_id"], json.dumps(event, separators=(",", ":")), now),
                    )
                    query = "SELECT seq FROM outbox WHERE event_id=?"
                    row = db.execute(query, (event["event_id"],)).fetchone()
                    seqs.append(int(row[0]))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a COMMIT that failed (disk full, I/O error) may have rolled back
                    db.execute("ROLLBACK")
                raise
            return seqs

        return await self._use(write)

    async def pending(self, sink: str, *, after: int | None = None, limit: int = 500) -> list[OutboxEvent]:
        """Events after the sink's cursor (or, with ``after``, after that seq), oldest first."""

        def read() -> list[OutboxEvent]:
            db = self._conn()
            start = after
            if start is None:
                row = db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()
                start = row[0] if row else 0
            rows = db.execute(
                "SELECT seq, event_id, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (start, limit)
            ).fetchall()
            return [OutboxEvent(seq, event_id, json.loads(body)) for seq, event_id, body in rows]

        return await self._use(read)

    async def last_seq(self) -> int:
        """The newest event's seq, 0 for an empty outbox."""

        def read() -> int:
            return int(self._conn().execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])

        return await self._use(read)

    async def acknowledge(self, sink: str, seq: int) -> None:
        """The sink has had every event up to ``seq``."""

        def write() -> None:
            self._conn().execute(
                "INSERT INTO cursors (sink, seq) VALUES (?, ?)"
                " ON CONFLICT(sink) DO UPDATE SET seq=MAX(seq, excluded.seq)",
                (sink, seq),
            )

        await self._use(write)

    async def prune(self, *, older_than: float, sinks: Sequence[str]) -> tuple[int, int]:
        """Delete events older than ``older_than``, delivered or not; returns (deleted, undelivered)."""

        def write() -> tuple[int, int]:
            db = self._conn()
            if not sinks:
                floor = db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
            else:
                marks = [
                    (db.execute("SELECT seq FROM cursors WHERE sink=?", (s,)).fetchone() or (0,))[0]
                    for s in sinks
                ]
                floor = min(marks)
            undelivered = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE seq > ? AND created < ?", (floor, older_than)
            ).fetchone()[0]
            cursor = db.execute("DELETE FROM outbox WHERE created < ?", (older_than,))
            return cursor.rowcount, undelivered

        return await self._use(write)

    async def close(self) -> None:
        await self._run(self._close_quietly)
