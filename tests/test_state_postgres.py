"""The PostgreSQL state backend on a real server: its schema and migrations, what processes sharing one
database agree on, and its errors, which are StateUnavailable and never show the password."""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import asyncpg
import pytest

from monitor.state import StateUnavailable
from monitor.state.postgres import SCHEMA_VERSION, PostgresState
from tests.conftest import rendered
from tests.logcapture import configured_logging
from tests.pg import MONITOR_PASSWORD, SUPERUSER_PASSWORD, PgDatabase, free_port

WRONG_PASSWORD = "wrong-sentinel-0d77"


def state(db: PgDatabase, **kwargs: object) -> PostgresState:
    return PostgresState(db.dsn, password=db.password, **kwargs)  # type: ignore[arg-type]


def versions(db: PgDatabase) -> list[str]:
    return db.server.psql("SELECT version FROM schema_version ORDER BY version", db.name).split()


async def test_an_empty_database_is_migrated_to_the_current_schema_and_reopened_as_is(
    pg_database: PgDatabase,
) -> None:
    """The first open creates every numbered step once; a second open migrates nothing and keeps the
    records, the digest key and the outbox."""
    first = state(pg_database)
    loaded = await first.open()
    assert versions(pg_database) == [str(v) for v in range(1, SCHEMA_VERSION + 1)]
    assert loaded.records == {}
    assert loaded.last_seq == 0
    seqs = await first.append([{"event_id": "e1"}], records=[("rid-1", {"a": 1})])
    await first.close()
    reopened = state(pg_database)
    again = await reopened.open()
    await reopened.close()
    assert versions(pg_database) == [str(v) for v in range(1, SCHEMA_VERSION + 1)]
    assert (again.records, again.last_seq, again.digest_key) == (
        {"rid-1": {"a": 1}},
        seqs[0],
        loaded.digest_key,
    )


async def test_processes_opening_at_once_migrate_once_and_share_one_digest_key(
    pg_database: PgDatabase,
) -> None:
    """Four stores opening an empty database concurrently apply each migration once (the advisory lock
    serialises them) and all load the same digest key, so replicas' digests agree."""
    stores = [state(pg_database) for _ in range(4)]
    keys: list[bytes] = []

    async def open_one(store: PostgresState) -> None:
        keys.append((await store.open()).digest_key)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(open_one, store)
    assert versions(pg_database) == [str(v) for v in range(1, SCHEMA_VERSION + 1)]
    assert len(keys) == 4
    assert len(set(keys)) == 1
    assert len(keys[0]) == 32
    for store in stores:
        await store.close()


async def test_an_event_appended_twice_keeps_its_first_seq_whoever_appends_it(
    pg_database: PgDatabase,
) -> None:
    """An event_id already in the outbox keeps its first seq, also when another process appends it again,
    and is stored once; a later event gets a higher seq."""
    one, two = state(pg_database), state(pg_database)
    await one.open()
    await two.open()
    first = await one.append([{"event_id": "e1", "n": 1}])
    assert await two.append([{"event_id": "e1", "n": 2}, {"event_id": "e2"}]) == [first[0], first[0] + 1]
    pending = await one.pending("file")
    assert [(p.event_id, p.body.get("n")) for p in pending] == [("e1", 1), ("e2", None)]
    await one.close()
    await two.close()


async def test_a_schema_from_a_newer_monitor_is_not_used(pg_database: PgDatabase) -> None:
    """A database whose schema_version is beyond this monitor's raises StateUnavailable and is left as is."""
    store = state(pg_database)
    await store.open()
    await store.close()
    pg_database.server.psql(
        f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION + 1})", pg_database.name
    )
    with pytest.raises(StateUnavailable, match="newer"):
        await store.open()
    assert versions(pg_database)[-1] == str(SCHEMA_VERSION + 1)


async def test_a_wrong_password_is_state_unavailable_and_no_password_is_ever_shown(
    pg_database: PgDatabase,
) -> None:
    """Connecting with a wrong password raises StateUnavailable; neither that password nor the right one
    (nor one given inside the DSN) appears in the exception chain, the store's repr or the log."""
    with configured_logging("debug") as log:
        in_dsn = PostgresState(pg_database.dsn.replace("monitor@", f"monitor:{WRONG_PASSWORD}@"))
        given = PostgresState(pg_database.dsn, password=WRONG_PASSWORD)
        for store in (in_dsn, given):
            with pytest.raises(StateUnavailable) as caught:
                await store.open()
            assert isinstance(caught.value.__cause__, asyncpg.InvalidPasswordError)
            shown = rendered(caught.value) + repr(store)
            assert WRONG_PASSWORD not in shown
            assert pg_database.name in shown  # the message says which database
        good = state(pg_database)
        await good.open()
        await good.append([{"event_id": "e1"}])
        shown = repr(good)
        await good.close()
    for secret in (WRONG_PASSWORD, MONITOR_PASSWORD, SUPERUSER_PASSWORD):
        assert secret not in shown + log.getvalue()


async def test_an_unreachable_database_is_state_unavailable(pg_database: PgDatabase) -> None:
    """A port nobody listens on raises StateUnavailable (caused by the OS error), not a raw driver error."""
    closed = PostgresState(
        f"postgresql://monitor@127.0.0.1:{free_port()}/x", password=MONITOR_PASSWORD, connect_timeout=5
    )
    with anyio.fail_after(20), pytest.raises(StateUnavailable) as caught:
        await closed.open()
    assert isinstance(caught.value.__cause__, OSError)
    assert MONITOR_PASSWORD not in rendered(caught.value)


async def test_no_server_of_the_kind_asked_for_is_state_unavailable(pg_database: PgDatabase) -> None:
    """A DSN asking for a kind of server none of its hosts is (``target_session_attrs``, as in a failover
    before any host accepts writes again) raises StateUnavailable, not asyncpg's own
    TargetServerAttributeNotMatched, which would escape the tasks that hold events through an outage."""
    store = PostgresState(f"{pg_database.dsn}?target_session_attrs=read-only", password=pg_database.password)
    with anyio.fail_after(20), pytest.raises(StateUnavailable) as caught:
        await store.open()
    assert isinstance(caught.value.__cause__, asyncpg.exceptions.TargetServerAttributeNotMatched)


async def test_connections_lost_while_open_are_state_unavailable(pg_database: PgDatabase) -> None:
    """When the server ends the store's connections, the next write raises StateUnavailable, not an
    asyncpg error; once the database is there again, the next write succeeds on a new connection."""
    store = state(pg_database, pool_size=1)
    await store.open()
    pg_database.server.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{pg_database.name}' AND pid <> pg_backend_pid()"
    )
    with anyio.fail_after(20):
        with pytest.raises(StateUnavailable) as caught:
            await store.append([{"event_id": "e1"}], records=[("rid-1", {"a": 1})])
        assert not isinstance(caught.value, asyncpg.PostgresError)
        await store.append([{"event_id": "e2"}])
        assert [p.event_id for p in await store.pending("file")] == ["e2"]
    await store.close()


async def test_the_password_comes_from_a_file_or_from_pgpassword(
    pg_database: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a password given, the store reads password_file (its trailing newline dropped) at open, and
    without either it uses PGPASSWORD from the environment, as libpq does."""
    secret_file = tmp_path / "password"
    secret_file.write_text(pg_database.password + "\n")
    from_file = PostgresState(pg_database.dsn, password_file=str(secret_file))
    await from_file.open()
    await from_file.close()
    monkeypatch.setenv("PGPASSWORD", pg_database.password)
    from_env = PostgresState(pg_database.dsn)
    await from_env.open()
    await from_env.close()
    monkeypatch.setenv("PGPASSWORD", WRONG_PASSWORD)
    with pytest.raises(StateUnavailable):
        await PostgresState(pg_database.dsn).open()


async def test_a_rotated_password_file_is_read_again_for_each_new_connection(
    pg_database: PgDatabase, tmp_path: Path
) -> None:
    """The role's password and the password file change while the store is open (a rotated Secret), and the
    server ends the pool's connections: the pool's next connection reads the file again and logs in with
    the new password, so writes go on without reopening the store."""
    server, role = pg_database.server, f"rotating_{pg_database.name}"
    server.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'first-sentinel-31aa'")
    server.psql(f"ALTER DATABASE {pg_database.name} OWNER TO {role}")
    secret_file = tmp_path / "password"
    secret_file.write_text("first-sentinel-31aa\n")
    store = PostgresState(
        server.dsn(pg_database.name, user=role), password_file=str(secret_file), pool_size=1
    )
    await store.open()
    try:
        await store.append([{"event_id": "e1"}])
        server.psql(f"ALTER ROLE {role} PASSWORD 'second-sentinel-77bd'")
        secret_file.write_text("second-sentinel-77bd\n")
        server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        with anyio.fail_after(20):
            # The write on the connection the server ended may fail; the one after it is on a new one.
            with contextlib.suppress(StateUnavailable):
                await store.append([{"event_id": "e2"}])
            await store.append([{"event_id": "e3"}])
        assert "e3" in [p.event_id for p in await store.pending("file")]
    finally:
        await store.close()
        server.psql(f"DROP DATABASE {pg_database.name}")
        server.psql(f"DROP ROLE {role}")


async def test_a_statement_the_server_does_not_answer_in_time_is_state_unavailable(
    pg_database: PgDatabase,
) -> None:
    """A write blocked past the command timeout (here by another session's lock on the outbox) fails as
    StateUnavailable instead of hanging the journal."""
    store = state(pg_database, command_timeout=0.5)
    await store.open()
    blocker = await asyncpg.connect(pg_database.dsn, password=pg_database.password)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            with anyio.fail_after(10), pytest.raises(StateUnavailable) as caught:
                await store.append([{"event_id": "e1"}])
            assert isinstance(caught.value.__cause__, TimeoutError)
    finally:
        await blocker.close()
    assert await store.append([{"event_id": "e1"}]) == [1]
    await store.close()
