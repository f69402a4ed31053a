"""A real PostgreSQL server for the tests: Debian's binaries, run as the ``postgres`` user in a temporary
directory, listening on 127.0.0.1 on a free port; one server per test session, a fresh database per test."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The superuser's and the monitor role's passwords: sentinels the secrecy tests look for.
SUPERUSER_PASSWORD = "super-sentinel-5b0e"
MONITOR_PASSWORD = "monitor-sentinel-9f3c"
_TIMEOUT = 60


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    """The server refuses to run as root: as root, run it as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class PgServer:
    """A running server: where it lives, its port, and the pid it is stopped by."""

    bin: Path
    root: Path
    port: int
    pid: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs ``sql`` as the superuser over the server's unix socket; returns psql's output."""
        done = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.root),
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=True,
        )
        return done.stdout.strip()

    def dsn(self, database: str, user: str = "monitor") -> str:
        """A DSN of ``database`` over TCP on loopback, without a password."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def start_server() -> PgServer:
    """initdb and start a server (password authentication over TCP, trust only on its own socket)."""
    bin_dir = _bin_dir()
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="monitor-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pwfile = root / "pwfile"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    port = free_port()
    data = root / "data"
    subprocess.run(
        _as_postgres(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"]
        ),
        capture_output=True,
        timeout=_TIMEOUT,
        check=True,
    )
    server = _pg_ctl_start(bin_dir, root, port)
    server.psql(f"CREATE ROLE monitor LOGIN PASSWORD '{MONITOR_PASSWORD}'")
    return server


def _pg_ctl_start(bin_dir: Path, root: Path, port: int) -> PgServer:
    """Start the server of ``root``'s data directory on ``port`` and wait until it accepts connections."""
    data = root / "data"
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} -c fsync=off"
    subprocess.run(
        _as_postgres(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options,
             "-w", "-t", str(_TIMEOUT), "start"]
        ),
        capture_output=True,
        timeout=_TIMEOUT + 10,
        check=True,
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return PgServer(bin_dir, root, port, pid)


def halt_server(server: PgServer) -> None:
    """Stops the server by its pid (SIGINT, a fast shutdown: clients are disconnected) and returns once it
    is gone (its pid file removed), within a bound; its files stay for ``resume_server``."""
    os.kill(server.pid, signal.SIGINT)
    deadline = time.monotonic() + _TIMEOUT
    while (server.data / "postmaster.pid").exists():
        assert time.monotonic() < deadline, "PostgreSQL did not stop"
        time.sleep(0.05)


def resume_server(server: PgServer) -> PgServer:
    """Starts a server ``halt_server`` stopped again, on the same port and data; it has a new pid."""
    return _pg_ctl_start(server.bin, server.root, server.port)


def stop_server(server: PgServer) -> None:
    """Stops the server (fast shutdown, bounded; SIGKILL by its pid if that fails) and removes its files."""
    try:
        subprocess.run(
            _as_postgres(
                [str(server.bin / "pg_ctl"), "-D", str(server.data), "stop", "-m", "fast", "-w", "-t", "30"]
            ),
            capture_output=True,
            timeout=40,
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGKILL)
    shutil.rmtree(server.root, ignore_errors=True)


_numbers = itertools.count(1)


@dataclass(frozen=True, slots=True)
class PgDatabase:
    """A fresh database owned by the ``monitor`` role, with its DSN (no password) and the password."""

    server: PgServer
    name: str
    password: str = MONITOR_PASSWORD

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)


def require_postgres() -> None:
    """Skips the test when PostgreSQL is missing, except in CI, which must run it."""
    if _bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql), and CI must run its tests")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the session; skipped when PostgreSQL is missing, except in CI."""
    require_postgres()
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_database(pg_server: PgServer) -> PgDatabase:
    """A new, empty database for this test."""
    name = f"test_{os.getpid()}_{next(_numbers)}"
    pg_server.psql(f"CREATE DATABASE {name} OWNER monitor")
    return PgDatabase(pg_server, name)
