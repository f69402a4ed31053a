"""Issue 11's bench: replicas of the monitor on SQLite and on one PostgreSQL, against one churning simulator.

    python -m bench.replicas [--size 100000] [--replicas 4] [--minutes M] [--interval S] [--quick]

Contenders, one after the other on the same simulator process: (a) one replica on SQLite, the baseline;
(b) one replica on PostgreSQL; (c) ``--replicas`` replicas on one PostgreSQL, then a SIGKILL of one of them
and the time until the survivors own its deployments. (c) needs the lease partition
(``monitor/partition/leased.py``): without it every replica would poll the whole fleet, so its row says
"needs leases" instead of a figure. PostgreSQL is a private server on 127.0.0.1 in a temporary directory,
started as ``tests/pg.py`` starts the tests' (as the ``postgres`` user when run as root, fsync off).

The interval: unless ``--interval`` is given, a calibration replica (SQLite) polls the fleet once with
nothing else due; its rate over that saturated first round, at half utilisation, gives the interval every
contender then uses (rounded up to 10 s). Each replica is measured over whole intervals once its first round
is done: CPU from ``/proc/<pid>/stat`` (utime+stime) over its poll count (the count of
``foundry_monitor_poll_duration_seconds``), RSS (VmRSS), polls/s against the interval's demand, and the p99 of
its schedule lag, and its requests/s; PostgreSQL's transactions/s (``xact_commit + xact_rollback`` of
``pg_stat_database``), size (``pg_database_size``) and rows written/s by table (``pg_stat_user_tables``); the
SQLite files' size; the simulator's CPU. Only the head of ``/metrics`` (the process's own families) is read,
and the connection closed before the per-deployment series (one debug line in the service's log).

Prints one table and writes ``bench/results/replicas.json``. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import PY, ROOT, free_port, http_json, process, rss_of, simulator_process
from bench.soak import LAG, Histogram, parse_histogram, write_config

POLLS = "foundry_monitor_poll_duration_seconds_count"
OWNED = "foundry_monitor_owned_deployments"
REQUESTS = "foundry_monitor_requests_total"
LEASED = ROOT / "monitor" / "partition" / "leased.py"
TICK = os.sysconf("SC_CLK_TCK")
#: The share of one replica's saturated rate the calibrated interval asks for.
UTILISATION = 0.5
DATABASE_PASSWORD = "DB_PASSWORD"


# --- figures (pure) ---------------------------------------------------------------------------------------


def cpu_seconds(stat: str) -> float:
    """utime + stime of a ``/proc/<pid>/stat`` line, in seconds (the command name may hold spaces or ')')."""
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state, the 3rd field of the line: utime and stime are the 14th and 15th.
    return (int(fields[11]) + int(fields[12])) / TICK


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (any labels) in an exposition text; NaN when there is none."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else math.nan


@dataclass(frozen=True, slots=True)
class Probe:
    """One replica at one moment: its CPU so far, RSS, polls and requests done, deployments owned, and its
    lag histogram."""

    at: float
    cpu_s: float
    rss_bytes: int
    polls: float
    requests: float
    owned: float
    lag: Histogram


@dataclass(frozen=True, slots=True)
class ReplicaFigures:
    """One replica over a window."""

    cpu_ms_per_1000_polls: float
    cpu_share: float
    rss_mb: float
    polls_per_s: float
    requests_per_s: float
    lag_p99_s: float
    owned: float


def replica_figures(first: Probe, last: Probe) -> ReplicaFigures:
    seconds, polls, cpu = last.at - first.at, last.polls - first.polls, last.cpu_s - first.cpu_s
    return ReplicaFigures(
        cpu_ms_per_1000_polls=1e6 * cpu / polls if polls > 0 else math.nan,
        cpu_share=cpu / seconds,
        rss_mb=last.rss_bytes / 1e6,
        polls_per_s=polls / seconds,
        requests_per_s=(last.requests - first.requests) / seconds,
        lag_p99_s=last.lag.minus(first.lag).quantile(0.99),
        owned=last.owned,
    )


@dataclass(frozen=True, slots=True)
class DatabaseProbe:
    """PostgreSQL's transactions so far, the database's size, and the rows written so far (inserted, updated
    or deleted: ``pg_stat_user_tables``) by table, at one moment."""

    at: float
    transactions: int
    size_bytes: int
    rows: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DatabaseFigures:
    transactions_per_s: float
    size_mb: float
    rows_per_s: Mapping[str, float] = field(default_factory=dict)


def database_figures(first: DatabaseProbe, last: DatabaseProbe) -> DatabaseFigures:
    seconds = last.at - first.at
    rows = {t: (n - first.rows.get(t, 0)) / seconds for t, n in sorted(last.rows.items())}
    return DatabaseFigures(
        (last.transactions - first.transactions) / seconds,
        last.size_bytes / 1e6,
        {table: rate for table, rate in rows.items() if rate > 0},
    )


def takeover_seconds(killed_at: float, rounds: Sequence[tuple[float, float]], size: int) -> float | None:
    """Seconds from the kill to the first round of samples in which the survivors own the whole fleet."""
    for at, owned in rounds:
        if at >= killed_at and owned >= size:
            return at - killed_at
    return None


def calibrated_interval(size: int, saturated_per_s: float, utilisation: float = UTILISATION) -> float:
    """The interval at which ``size`` polls a round ask for ``utilisation`` of the saturated rate, in 10 s."""
    return max(10.0, 10.0 * math.ceil(size / (utilisation * saturated_per_s) / 10.0))


def window_seconds(minutes: float, interval: float) -> float:
    """Whole intervals covering at least ``minutes``: every deployment is polled as often in any of them."""
    return interval * max(1, math.ceil(60.0 * minutes / interval))


def window_start(first_poll: float, ready: float, interval: float) -> float:
    """Midway through the gap between the end of the first round and the start of the second: the window's
    ends then fall between rounds, and each whole interval in it holds one poll of every deployment."""
    return ready + max(0.0, (first_poll + interval - ready) / 2)


@dataclass(frozen=True, slots=True)
class Result:
    """A contender's figures, or why it has none (``status``)."""

    name: str
    status: str = "measured"
    replicas: tuple[ReplicaFigures, ...] = ()
    database: DatabaseFigures | None = None
    sqlite_mb: float | None = None
    simulator_share: float | None = None
    takeover_s: float | None = None
    notes: tuple[str, ...] = field(default=())


def keeps_up(figures: ReplicaFigures, demand_per_s: float | None, interval: float) -> bool:
    """It polled at least 95% of the demand (None: polls are lists too, so only the lag tells) and its lag
    p99 stayed under a tenth of the interval."""
    polled = demand_per_s is None or figures.polls_per_s >= 0.95 * demand_per_s
    return polled and not figures.lag_p99_s > interval / 10


#: Table columns: heading, width, how a replica's row shows it (the contender's own cells come after).
REPLICA_COLUMNS: tuple[tuple[str, int, Callable[[ReplicaFigures], str]], ...] = (
    ("CPU ms/1k polls", 16, lambda f: f"{f.cpu_ms_per_1000_polls:.0f}"),
    ("CPU %core", 10, lambda f: f"{100 * f.cpu_share:.0f}"),
    ("RSS MB", 8, lambda f: f"{f.rss_mb:.0f}"),
    ("polls/s", 9, lambda f: f"{f.polls_per_s:.0f}"),
    ("req/s", 7, lambda f: f"{f.requests_per_s:.0f}"),
    ("lag p99 s", 10, lambda f: f"{f.lag_p99_s:.2f}"),
    ("owned", 8, lambda f: f"{f.owned:.0f}"),
)
CONTENDER_COLUMNS: tuple[tuple[str, int, Callable[[Result], str]], ...] = (
    ("db tx/s", 9, lambda r: "-" if r.database is None else f"{r.database.transactions_per_s:.0f}"),
    (
        "db MB",
        8,
        lambda r: (
            f"{r.database.size_mb:.0f}"
            if r.database
            else "-"
            if r.sqlite_mb is None
            else f"{r.sqlite_mb:.0f}"
        ),
    ),
    ("sim %core", 10, lambda r: "-" if r.simulator_share is None else f"{100 * r.simulator_share:.0f}"),
    ("takeover s", 11, lambda r: "-" if r.takeover_s is None else f"{r.takeover_s:.1f}"),
)
NAME_WIDTH = 24


def table(
    results: Sequence[Result], *, size: int, interval: float, window: float, batched: bool = False
) -> str:
    """The comparison table: a row per replica, the contender's database, simulator and takeover figures
    on its first row; a contender without figures gets one row saying why. ``batched``: a poll may be a
    list refreshing many deployments, so the demand (in deployments) is no bar for the polls."""
    demand = size / interval
    heading = "contender".ljust(NAME_WIDTH) + "".join(
        name.rjust(width) for name, width, _ in (*REPLICA_COLUMNS, *CONTENDER_COLUMNS)
    )
    lines = [
        f"{size} deployments, interval {interval:g} s = fast_interval (demand {demand:.0f} deployments/s for "
        f"the fleet), {'batched' if batched else 'one GET a poll'}, measured over {window:g} s",
        heading,
    ]
    for result in results:
        if not result.replicas:
            lines.append(result.name.ljust(NAME_WIDTH) + result.status)
            lines.extend(f"{'':<{NAME_WIDTH}}{note}" for note in result.notes)
            continue
        for index, figures in enumerate(result.replicas):
            name = result.name if index == 0 else f"  replica {index}"
            cells = [show(figures).rjust(width) for _, width, show in REPLICA_COLUMNS]
            if index == 0:
                cells += [show(result).rjust(width) for _, width, show in CONTENDER_COLUMNS]
            lines.append(name.ljust(NAME_WIDTH) + "".join(cells))
        share = None if batched else demand / len(result.replicas)
        behind = [i for i, f in enumerate(result.replicas) if not keeps_up(f, share, interval)]
        if behind:
            lines.append(f"{'':<{NAME_WIDTH}}FALLS BEHIND (replicas {behind}): below 95% of demand or lag")
        lines.extend(f"{'':<{NAME_WIDTH}}{note}" for note in result.notes)
        if result.database is not None and result.database.rows_per_s:
            written = ", ".join(f"{t} {n:.0f}" for t, n in result.database.rows_per_s.items())
            lines.append(f"{'':<{NAME_WIDTH}}rows written/s: {written}")
    return "\n".join(lines)


# --- processes ---------------------------------------------------------------------------------------------


def head(url: str) -> str:
    """The process's own families at the head of ``/metrics``: the connection is closed before the
    per-deployment series, whose rendering would cost the replica more than the polls measured."""
    lines = []
    with urllib.request.urlopen(url + "/metrics", timeout=120) as response:
        for raw in response:
            line = raw.decode()
            if line.startswith(("# HELP foundry_live", "# TYPE foundry_live", "foundry_live")):
                break
            lines.append(line)
    return "".join(lines)


@dataclass(frozen=True, slots=True)
class Replica:
    """A monitor process and where its HTTP server listens."""

    proc: subprocess.Popen[bytes]
    url: str
    directory: Path

    def probe(self) -> Probe:
        text = head(self.url)
        return Probe(
            at=time.monotonic(),
            cpu_s=cpu_seconds(Path(f"/proc/{self.proc.pid}/stat").read_text()),
            rss_bytes=rss_of(self.proc.pid),
            polls=metric_sum(text, POLLS),
            requests=metric_sum(text, REQUESTS),
            owned=metric_sum(text, OWNED),
            lag=parse_histogram(text, LAG),
        )

    def alive(self) -> None:
        if self.proc.poll() is not None:
            stderr = (self.directory / "stderr").read_text()[-4000:]
            raise RuntimeError(f"replica {self.url} exited with {self.proc.returncode}:\n{stderr}")


@contextmanager
def replica(
    directory: Path,
    base: str,
    rids: Sequence[str],
    args: argparse.Namespace,
    *,
    interval: float,
    state: dict[str, Any] | None = None,
) -> Iterator[Replica]:
    directory.mkdir(parents=True)
    port = free_port()
    settings = argparse.Namespace(
        interval=f"{interval:g}s",
        # Deployments in transition, or changed at their last poll, are not polled faster: the demand is
        # exactly the fleet over the interval, whatever the simulator's churn.
        fast_interval=f"{interval:g}s",
        concurrency=args.concurrency,
        rps=1e6,  # the interval, not the request budget, is what is measured
    )
    config = directory / "monitor.yaml"
    write_config(config, base, rids, settings, port, polling={"batch": args.batch}, state=state)
    env = {**os.environ, DATABASE_PASSWORD: args.password}
    with (
        (directory / "stderr").open("wb") as err,
        process(
            [PY, "-m", "monitor", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        ) as proc,
    ):
        yield Replica(proc, f"http://127.0.0.1:{port}", directory)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as response:
            return bool(response.status == 200)
    except OSError:  # 503 until the first round is done, or not listening yet
        return False


def first_round(replicas: Sequence[Replica], size: int) -> tuple[float, float]:
    """Waits until every replica's first round is done (``/readyz``), bounded by the fleet's size; returns
    when the first poll was seen (to a second) and when the last replica was ready."""
    deadline = time.monotonic() + 300 + size / 50
    first: float | None = None
    waiting = list(replicas)
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"first round not done by {[one.url for one in waiting]}")
        for one in list(waiting):
            one.alive()
            if first is None:
                try:
                    if metric_sum(head(one.url), POLLS) > 0:
                        first = time.monotonic()
                except OSError:
                    pass
            if ready(one.url):
                waiting.remove(one)
        time.sleep(0.5)
    done = time.monotonic()
    return (done if first is None else first), done


def sleep_alive(replicas: Sequence[Replica], seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(5.0, left))
        for one in replicas:
            one.alive()


def simulator_cpu(pid: int) -> float:
    return cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


@dataclass(frozen=True, slots=True)
class Bench:
    """What every contender shares: the simulator, its fleet, the options, the interval, the scratch space."""

    base: str
    simulator_pid: int
    rids: tuple[str, ...]
    args: argparse.Namespace
    interval: float
    window: float
    tmp: Path


def measure(
    bench: Bench, replicas: Sequence[Replica], database: Callable[[], DatabaseProbe] | None
) -> tuple[tuple[ReplicaFigures, ...], DatabaseFigures | None, float]:
    """Every replica, the database and the simulator over one window, once the first rounds are done."""
    started, done = first_round(replicas, len(bench.rids))
    time.sleep(window_start(started, done, bench.interval) - done)
    firsts = [one.probe() for one in replicas]
    db_first = database() if database else None
    sim_first, sim_at = simulator_cpu(bench.simulator_pid), time.monotonic()
    sleep_alive(replicas, bench.window)
    sim_share = (simulator_cpu(bench.simulator_pid) - sim_first) / (time.monotonic() - sim_at)
    db = database_figures(db_first, database()) if database and db_first else None
    figures = tuple(replica_figures(first, one.probe()) for first, one in zip(firsts, replicas, strict=True))
    return figures, db, sim_share


def calibrate(base: str, rids: Sequence[str], args: argparse.Namespace, tmp: Path) -> float:
    """Polls per second of one SQLite replica over the middle of its first round, when every deployment is
    due at once and nothing else is: its saturated rate on this machine, simulator included."""
    with replica(tmp / "calibration", base, rids, args, interval=86_400.0) as one:
        samples: list[tuple[float, float]] = []
        deadline = time.monotonic() + 300 + len(rids) / 50
        while time.monotonic() < deadline:
            one.alive()
            try:
                polls = metric_sum(head(one.url), POLLS)
            except OSError:
                time.sleep(0.5)
                continue
            samples.append((time.monotonic(), 0.0 if math.isnan(polls) else polls))
            if polls >= 0.9 * len(rids):
                break
            time.sleep(1.0)
    middle = [(at, n) for at, n in samples if 0.1 * len(rids) <= n <= 0.9 * len(rids)]
    if len(middle) < 2:
        middle = samples[-2:]
    (t0, n0), (t1, n1) = middle[0], middle[-1]
    return (n1 - n0) / (t1 - t0)


def sqlite_contender(bench: Bench) -> Result:
    directory = bench.tmp / "sqlite"
    with replica(directory / "r0", bench.base, bench.rids, bench.args, interval=bench.interval) as one:
        figures, _, sim = measure(bench, [one], None)
    files = directory.glob("r0/monitor.sqlite3*")
    return Result(
        "(a) 1 x SQLite",
        replicas=figures,
        sqlite_mb=sum(f.stat().st_size for f in files) / 1e6,
        simulator_share=sim,
    )


def postgres_contender(bench: Bench, server: Any, count: int) -> Result:
    """``count`` replicas on a fresh database of ``server``; with more than one, a SIGKILL and takeover."""
    name = f"bench_{count}"
    server.psql(f"CREATE DATABASE {name} OWNER monitor")
    state = {"backend": "postgres", "dsn": server.dsn(name), "password": "${" + DATABASE_PASSWORD + "}"}

    def database() -> DatabaseProbe:
        row = server.psql(
            f"SELECT xact_commit + xact_rollback, pg_database_size('{name}') FROM pg_stat_database "
            f"WHERE datname = '{name}'"
        )
        transactions, size = row.split("|")
        written = server.psql(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables", name
        )
        rows = {table: int(n) for table, n in (line.split("|") for line in written.splitlines())}
        return DatabaseProbe(time.monotonic(), int(transactions), int(size), rows)

    label = f"({'b' if count == 1 else 'c'}) {count} x PostgreSQL"
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                replica(
                    bench.tmp / name / f"r{i}",
                    bench.base,
                    bench.rids,
                    bench.args,
                    interval=bench.interval,
                    state=state,
                )
            )
            for i in range(count)
        ]
        figures, db, sim = measure(bench, replicas, database)
        takeover = kill_one(replicas, len(bench.rids), bench.interval) if count > 1 else None
    return Result(label, replicas=figures, database=db, simulator_share=sim, takeover_s=takeover)


def kill_one(replicas: Sequence[Replica], size: int, interval: float) -> float | None:
    """SIGKILL the first replica; seconds until the survivors' owned deployments add up to the fleet."""
    victim, survivors = replicas[0], replicas[1:]
    os.kill(victim.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.proc.wait()
    rounds: list[tuple[float, float]] = []
    deadline = killed_at + 120 + 2 * interval
    while time.monotonic() < deadline:
        started = time.monotonic()
        owned = sum(metric_sum(head(one.url), OWNED) for one in survivors)
        rounds.append((started, owned))
        if owned >= size:
            break
        time.sleep(0.5)
    return takeover_seconds(killed_at, rounds, size)


def needs_leases(count: int) -> Result:
    return Result(
        f"(c) {count} x PostgreSQL",
        status="needs leases",
        notes=(f"{LEASED.relative_to(ROOT)} is not in this tree: each replica would poll the whole fleet",),
    )


@contextmanager
def postgres() -> Iterator[Any]:
    """A private PostgreSQL server as the tests start theirs (tests/pg.py), stopped by its pid at the end."""
    from tests.pg import start_server, stop_server

    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.pg import MONITOR_PASSWORD

    args.password = MONITOR_PASSWORD
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args).copy()}
    del results["args"]["password"]
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        base, sim = stack.enter_context(simulator_process(args.size, static=False, churn=args.churn))
        rids = tuple(http_json(base + "/_sim/deployments")["rids"][: args.size])
        if args.interval is None:
            saturated = calibrate(base, rids, args, tmp)
            interval = calibrated_interval(len(rids), saturated)
            results["calibration"] = {"saturated_polls_per_s": saturated, "utilisation": UTILISATION}
            print(f"calibration: {saturated:.0f} polls/s saturated, interval {interval:g} s", flush=True)
        else:
            interval = args.interval
        window = window_seconds(args.minutes, interval)
        bench = Bench(base, sim.pid, rids, args, interval, window, tmp)
        contenders: list[Result] = []
        if "sqlite" in args.only:
            contenders.append(sqlite_contender(bench))
            print(f"done: {contenders[-1].name}", flush=True)
        if {"postgres", "replicas"} & set(args.only):
            server = stack.enter_context(postgres())
            if "postgres" in args.only:
                contenders.append(postgres_contender(bench, server, 1))
                print(f"done: {contenders[-1].name}", flush=True)
            if "replicas" in args.only:
                has_leases = LEASED.exists()
                contenders.append(
                    postgres_contender(bench, server, args.replicas)
                    if has_leases
                    else needs_leases(args.replicas)
                )
    results.update(size=len(rids), interval_s=interval, window_s=window, leases=LEASED.exists())
    results["contenders"] = [asdict(r) for r in contenders]
    batched = args.batch != "off"
    for entry in results["contenders"]:
        share = None if batched else len(rids) / interval / len(entry["replicas"] or [0])
        for figures in entry["replicas"]:
            figures["keeps_up"] = keeps_up(ReplicaFigures(**figures), share, interval)
    results["table"] = table(contenders, size=len(rids), interval=interval, window=window, batched=batched)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000, help="simulated deployments (default: 100000)")
    parser.add_argument("--replicas", type=int, default=4, help="replicas of contender (c) (default: 4)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=4.0,
        help="each contender's window, rounded up to whole intervals (default: 4)",
    )
    parser.add_argument("--interval", type=float, default=None, help="seconds; default: calibrated")
    parser.add_argument(
        "--churn", type=float, default=0.1, help="simulator lifecycle multiplier (default: 0.1)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="polling.concurrency (default: 64)")
    parser.add_argument("--batch", default="off", help="polling.batch (default: off, one GET a poll)")
    parser.add_argument(
        "--only",
        default="sqlite,postgres,replicas",
        type=lambda text: tuple(text.split(",")),
        help="contenders to run, of sqlite,postgres,replicas (default: all)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replicas.json")
    parser.add_argument("--quick", action="store_true", help="5,000 deployments, 1 minute: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.size, args.minutes = min(args.size, 5000), min(args.minutes, 1.0)
    results = run(args)
    print(results["table"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
