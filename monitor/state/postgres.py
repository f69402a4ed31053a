"""The PostgreSQL backend of the state ports, on asyncpg: records, the outbox with per-sink cursors, the
digest key and the status history in one database that several processes may share.

A pool of connections on the event loop (asyncpg is native asyncio, so nothing blocks and no worker thread
is needed). A poll's records and the events they caused are written in one transaction. The schema is
versioned in ``schema_version`` and migrated forward under an advisory lock, so that processes starting at
once migrate it once. Every database or network error leaves this module as ``StateUnavailable``, and the
password is never part of a message, a log line or a repr: it is kept apart from the DSN.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import structlog

from monitor.state import postgres_history, postgres_leases
from monitor.state.ports import Fence, LeaseLost, Loaded, OutboxEvent, RecordWrite, StateUnavailable
from monitor.state.postgres_history import Db, PostgresHistory
from monitor.state.postgres_leases import PostgresLeases

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 3
#: Forward migrations: index i holds the statements that take the schema from version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key text PRIMARY KEY, value bytea NOT NULL)",
        "CREATE TABLE deployments (rid text PRIMARY KEY, record json NOT NULL,"
        " updated double precision NOT NULL)",
        "CREATE TABLE outbox (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " event_id text NOT NULL UNIQUE, body json NOT NULL, created double precision NOT NULL)",
        "CREATE INDEX outbox_by_created ON outbox (created)",
        "CREATE TABLE cursors (sink text PRIMARY KEY, seq bigint NOT NULL)",
    ),
    # 2: the status page's condition history (per-day durations, change points, transitions).
    postgres_history.MIGRATION,
    # 3: the replicas' heartbeats and the leases sharing the work among them.
    postgres_leases.MIGRATION,
)

#: Advisory lock keys (any fixed bigints, the same in every process): one serialises migrations, the
#: other appends, so that the outbox's seqs become visible in order and a cursor never passes a seq that a
#: slower transaction commits later.
_MIGRATION_LOCK = 0x666D6F6E_00000001
_APPEND_LOCK = 0x666D6F6E_00000002
#: Errors of the database or of the way to it (the client's own too: no host of the kind the DSN asks for, a
#: garbled protocol); anything else (a body that is not JSON) is the caller's.
_DATABASE_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
_CLOSE_TIMEOUT = 5.0


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def split_password(dsn: str) -> tuple[str, str | None]:
    """``dsn`` without its password, and the password (None if it had none)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn, None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{hosts}")), parts.password


class PostgresState:
    """A PostgreSQL database (a ``State``), reached at ``dsn`` with ``password`` (else the file at
    ``password_file``, read for each new connection so that a rotated password needs no restart, else
    libpq's ``PGPASSWORD`` and ``~/.pgpass``)."""

    def __init__(
        self,
        dsn: str,
        *,
        password: str | None = None,
        password_file: str | None = None,
        clock: Callable[[], float] = time.time,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
    ) -> None:
        self._dsn, in_dsn = split_password(dsn)
        self._password = password if password is not None else in_dsn
        self._password_file = password_file
        self._clock = clock
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        #: A statement the server does not answer within this fails (as StateUnavailable) instead of hanging.
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        #: The status history, in the same database, on the same pool.
        self.history = PostgresHistory(self._connection)
        #: Heartbeats and leases, likewise.
        self.leases = PostgresLeases(self._connection)
        #: When set, every write for a deployment is checked against this process's lease on it.
        self.fence: Fence | None = None

    def __repr__(self) -> str:
        return f"PostgresState({self._dsn!r})"

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Db]:
        """A pooled connection for the block; a database error in it becomes ``StateUnavailable``."""
        if self._pool is None:
            raise StateUnavailable("state database is not open")
        try:
            async with self._pool.acquire() as db:
                yield db
        except _DATABASE_ERRORS as exc:
            raise StateUnavailable(f"state database {self._dsn}: {type(exc).__name__}: {exc}") from exc

    async def _read_password(self) -> str:
        """The password file's text (in a worker thread), asked by asyncpg for every connection it opens."""
        assert self._password_file is not None
        try:
            text = await anyio.Path(self._password_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise StateUnavailable(f"cannot read the password file {self._password_file}") from exc
        return text.rstrip("\r\n")

    async def open(self) -> Loaded:
        """Connect, migrate the schema forward (once, whoever starts at the same time) and load."""
        if self._pool is None:
            password: str | Callable[[], Awaitable[str]] | None = self._password
            if password is None and self._password_file is not None:
                password = self._read_password
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    password=password,
                    min_size=1,
                    max_size=self._pool_size,
                    timeout=self._connect_timeout,
                    command_timeout=self._command_timeout,
                )
            except (*_DATABASE_ERRORS, ValueError) as exc:
                raise StateUnavailable(f"cannot connect to {self._dsn}: {type(exc).__name__}: {exc}") from exc
        try:
            async with self._connection() as db:
                async with db.transaction():
                    await self._migrate(db)
                    key = await self._digest_key(db)
                rows = await db.fetch("SELECT rid, record FROM deployments")
                last = await db.fetchval("SELECT COALESCE(MAX(seq), 0) FROM outbox")
        except BaseException:
            await self.close()
            raise
        return Loaded(
            digest_key=key, records={rid: json.loads(text) for rid, text in rows}, last_seq=int(last)
        )

    async def _migrate(self, db: Db) -> None:
        await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
            " applied timestamptz NOT NULL DEFAULT now())"
        )
        version = int(await db.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        if version > SCHEMA_VERSION:
            raise StateUnavailable(f"schema version {version} is newer than this monitor's {SCHEMA_VERSION}")
        for target in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[target]:
                await db.execute(statement)
            await db.execute("INSERT INTO schema_version (version) VALUES ($1)", target + 1)
            log.info("state_schema_migrated", to_version=target + 1, database=self._dsn)

    async def _digest_key(self, db: Db) -> bytes:
        """The one key of the database, made by whoever opened it first: every process's digests agree."""
        await db.execute(
            "INSERT INTO meta (key, value) VALUES ('digest_key', $1) ON CONFLICT (key) DO NOTHING",
            secrets.token_bytes(32),
        )
        return bytes(await db.fetchval("SELECT value FROM meta WHERE key = 'digest_key'"))

    async def append(
        self, events: Sequence[dict[str, Any]], *, records: Sequence[RecordWrite] = ()
    ) -> list[int]:
        """Append events to the outbox and write records (None deletes), in one transaction."""
        now = self._clock()
        # Serialised before the transaction: a body that is not JSON fails the append and writes nothing.
        latest = {rid: None if record is None else _compact(record) for rid, record in records}
        written = [(rid, text, now) for rid, text in latest.items() if text is not None]
        deleted = [rid for rid, text in latest.items() if text is None]
        bodies = [(str(event["event_id"]), _compact(event), now) for event in events]
        async with self._connection() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
            if self.fence is not None:
                written_rids = {rid for rid, _, _ in written} | {str(event["rid"]) for event in events}
                writable = await self._writable(db, self.fence, written_rids | set(deleted))
                if refused := written_rids - writable:
                    self.fence.refused(refused)
                    raise LeaseLost(sorted(refused))  # rolls the transaction back: nothing is written
                # A deployment still in the fleet is not deleted when it moves: its next owner reads it.
                deleted = [rid for rid in deleted if rid in writable and self.fence.retired(rid)]
            if deleted:
                await db.execute("DELETE FROM deployments WHERE rid = ANY($1::text[])", deleted)
            if written:
                await db.executemany(
                    "INSERT INTO deployments (rid, record, updated) VALUES ($1, $2, $3) ON CONFLICT (rid)"
                    " DO UPDATE SET record = excluded.record, updated = excluded.updated",
                    written,
                )
            ids = [event_id for event_id, _, _ in bodies]
            seqs = await self._seqs(db, ids)
            # Only the new ones are inserted: a conflicting insert would still take a seq from the identity.
            new: dict[str, tuple[str, str, float]] = {}
            for row in bodies:
                if row[0] not in seqs:
                    new.setdefault(row[0], row)
            if new:
                await db.executemany(
                    "INSERT INTO outbox (event_id, body, created) VALUES ($1, $2, $3)"
                    " ON CONFLICT (event_id) DO NOTHING",
                    list(new.values()),
                )
                seqs = await self._seqs(db, ids)
        return [seqs[event_id] for event_id in ids]

    @staticmethod
    @staticmethod
    async def _writable(db: Db, fence: Fence, rids: set[str]) -> set[str]:
        """Which of ``rids`` this process may write for now: those whose lease it holds with its token
        (expired or not: only a claim changes the token, and nobody else writes without one), and those
        that left the fleet while no other replica holds a live lease on them. The lease rows stay locked
        to the end of the transaction, so that no replica takes one over while this write commits."""
        rows = await db.fetch(
            "SELECT name, owner, token, expires > clock_timestamp() FROM leases"
            " WHERE name = ANY($1::text[]) AND owner IS NOT NULL ORDER BY name FOR SHARE",
            sorted(rids),
        )
        holders = {str(name): ((owner, int(token)), bool(live)) for name, owner, token, live in rows}
        writable = set()
        for rid in rids:
            holder, live = holders.get(rid, (None, False))
            if holder == (fence.replica, fence.token(rid)) or (not live and fence.retired(rid)):
                writable.add(rid)
        return writable

    async def records(self, rids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """The stored records of ``rids`` (None: of every deployment) as they are now: a deployment taken
        over continues from them; the Alertmanager sink of a replica set fires from the whole fleet's."""
        if rids is not None and not rids:
            return {}
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT rid, record FROM deployments WHERE $1::text[] IS NULL OR rid = ANY($1::text[])",
                None if rids is None else list(rids),
            )
        return {str(rid): json.loads(text) for rid, text in rows}

    @staticmethod
    async def _seqs(db: Db, event_ids: list[str]) -> dict[str, int]:
        if not event_ids:
            return {}
        query = "SELECT event_id, seq FROM outbox WHERE event_id = ANY($1::text[])"
        return {event_id: int(seq) for event_id, seq in await db.fetch(query, event_ids)}

    async def pending(self, sink: str, *, after: int | None = None, limit: int = 500) -> list[OutboxEvent]:
        """Events after the sink's cursor (or, with ``after``, after that seq), oldest first."""
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT seq, event_id, body FROM outbox WHERE seq > COALESCE($2::bigint,"
                " (SELECT seq FROM cursors WHERE sink = $1), 0) ORDER BY seq LIMIT $3",
                sink,
                after,
                max(0, limit),
            )
        return [OutboxEvent(int(seq), event_id, json.loads(body)) for seq, event_id, body in rows]

    async def last_seq(self) -> int:
        """The newest event's seq, 0 for an empty outbox."""
        async with self._connection() as db:
            return int(await db.fetchval("SELECT COALESCE(MAX(seq), 0) FROM outbox"))

    async def acknowledge(self, sink: str, seq: int) -> None:
        """The sink has had every event up to ``seq``; its cursor never moves back."""
        async with self._connection() as db:
            await db.execute(
                "INSERT INTO cursors (sink, seq) VALUES ($1, $2)"
                " ON CONFLICT (sink) DO UPDATE SET seq = GREATEST(cursors.seq, excluded.seq)",
                sink,
                seq,
            )

    async def prune(self, *, older_than: float, sinks: Sequence[str]) -> tuple[int, int]:
        """Delete events older than ``older_than``, delivered or not; returns (deleted, undelivered)."""
        async with self._connection() as db, db.transaction():
            floor = await db.fetchval(
                "SELECT COALESCE((SELECT MIN(COALESCE(c.seq, 0)) FROM unnest($1::text[]) AS s (sink)"
                " LEFT JOIN cursors c ON c.sink = s.sink), (SELECT MAX(seq) FROM outbox), 0)",
                list(sinks),
            )
            row = await db.fetchrow(
                "WITH gone AS (DELETE FROM outbox WHERE created < $1 RETURNING seq)"
                " SELECT COUNT(*), COUNT(*) FILTER (WHERE seq > $2) FROM gone",
                older_than,
                floor,
            )
        assert row is not None
        return int(row[0]), int(row[1])

    async def close(self) -> None:
        """Close the pool, within a bound: connections still busy after it are terminated."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True) as scope:
            await pool.close()
        if scope.cancelled_caught:
            pool.terminate()
