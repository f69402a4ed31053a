"""Leases in the PostgreSQL state database: the replicas' heartbeats and the leases on deployments (and on
sinks) that share the work among them. One numbered migration of the schema, and its statements.

Every time is the database's (``now()``), never a replica's, so the replicas' clocks need not agree. A lease
carries a fencing token from one sequence: it increases whenever the lease changes owner, so a write that
presents an older token is one from a replica that lost the lease since.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor.state.postgres_history import Lender

#: The statements that add heartbeats and leases to the schema (one migration step).
MIGRATION: tuple[str, ...] = (
    "CREATE TABLE replicas (id text PRIMARY KEY, started timestamptz NOT NULL DEFAULT now(),"
    " heartbeat timestamptz NOT NULL DEFAULT now())",
    "CREATE SEQUENCE lease_tokens",
    # name: a deployment's RID, or sink:<name> for a sink's delivery. owner NULL: released.
    "CREATE TABLE leases (name text PRIMARY KEY, owner text, token bigint NOT NULL,"
    " expires timestamptz NOT NULL)",
)

#: Lease names of sinks are apart from deployment RIDs (which start with ``ri.``).
SINK_PREFIX = "sink:"


@dataclass(frozen=True, slots=True)
class Holding:
    """A live lease as the database holds it: its owner, fencing token, and seconds until it expires."""

    owner: str
    token: int
    remaining: float


class PostgresLeases:
    """Heartbeats and leases on the state database's pool (``lender``), each call one statement."""

    def __init__(self, lender: Lender) -> None:
        self._connection = lender

    async def heartbeat(self, replica: str, *, within: float) -> list[str]:
        """Record ``replica``'s heartbeat; the replicas whose last one is less than ``within`` seconds old."""
        async with self._connection() as db:
            await db.execute(
                "INSERT INTO replicas (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET heartbeat = now()",
                replica,
            )
            rows = await db.fetch(
                "SELECT id FROM replicas WHERE heartbeat > now() - make_interval(secs => $1) ORDER BY id",
                within,
            )
        return [str(row[0]) for row in rows]

    async def live(self) -> dict[str, Holding]:
        """Every lease not expired nor released, by name."""
        async with self._connection() as db:
            rows = await db.fetch(
                "SELECT name, owner, token, EXTRACT(EPOCH FROM expires - now())::float8 FROM leases"
                " WHERE owner IS NOT NULL AND expires > now()"
            )
        return {str(name): Holding(str(owner), int(token), float(left)) for name, owner, token, left in rows}

    async def renew(self, replica: str, held: Mapping[str, int], *, lease: float) -> dict[str, int]:
        """Extend, in one statement, every lease of ``held`` (name -> token) that ``replica`` still holds
        with that token; returns those renewed. The others are lost. One that expired while nobody claimed
        it (the database was out of reach for everyone) is renewed too: nobody else wrote for it."""
        if not held:
            return {}
        async with self._connection() as db:
            rows = await db.fetch(
                "UPDATE leases l SET expires = now() + make_interval(secs => $2)"
                " FROM unnest($3::text[], $4::bigint[]) AS h (name, token)"
                " WHERE l.name = h.name AND l.token = h.token AND l.owner = $1"
                " RETURNING l.name, l.token",
                replica,
                lease,
                list(held),
                list(held.values()),
            )
        return {str(name): int(token) for name, token in rows}

    async def claim(self, replica: str, names: Sequence[str], *, lease: float) -> dict[str, int]:
        """Take, in one statement, those of ``names`` that nobody holds (never leased, released or expired);
        returns the ones taken with their new tokens. Rows are taken in name order, so two replicas claiming
        at once wait for each other instead of deadlocking."""
        if not names:
            return {}
        async with self._connection() as db:
            rows = await db.fetch(
                "INSERT INTO leases (name, owner, token, expires)"
                " SELECT n, $1, nextval('lease_tokens'), now() + make_interval(secs => $2)"
                " FROM unnest($3::text[]) AS n ORDER BY n"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token,"
                " expires = excluded.expires WHERE leases.owner IS NULL OR leases.expires <= now()"
                " RETURNING name, token",
                replica,
                lease,
                sorted(set(names)),
            )
        return {str(name): int(token) for name, token in rows}

    async def release(self, replica: str, held: Mapping[str, int]) -> None:
        """Give up the leases of ``held`` (name -> token) that ``replica`` still holds with that token."""
        if not held:
            return
        async with self._connection() as db:
            await db.execute(
                "UPDATE leases l SET owner = NULL, expires = now()"
                " FROM unnest($2::text[], $3::bigint[]) AS h (name, token)"
                " WHERE l.name = h.name AND l.token = h.token AND l.owner = $1",
                replica,
                list(held),
                list(held.values()),
            )

    async def leave(self, replica: str) -> None:
        """``replica`` stops: its leases are released and its heartbeat removed, in one transaction."""
        async with self._connection() as db, db.transaction():
            await db.execute("UPDATE leases SET owner = NULL, expires = now() WHERE owner = $1", replica)
            await db.execute("DELETE FROM replicas WHERE id = $1", replica)
