"""Issue 11's bench (``bench/replicas.py``): its figure arithmetic from /proc, /metrics and pg_stat samples and
its table, without servers; and a smoke run of its SQLite and single-PostgreSQL contenders on a small fleet."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.replicas import (
    LAG,
    POLLS,
    TICK,
    DatabaseFigures,
    DatabaseProbe,
    Probe,
    ReplicaFigures,
    Result,
    calibrated_interval,
    cpu_seconds,
    database_figures,
    metric_sum,
    needs_leases,
    replica_figures,
    table,
    takeover_seconds,
    window_seconds,
    window_start,
)
from bench.soak import Histogram, parse_histogram
from tests.pg import require_postgres

ROOT = Path(__file__).resolve().parents[1]

#: A /proc/<pid>/stat line whose command name holds a space and a ')': utime 300 and stime 100 ticks.
STAT = "4242 (py thon) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 300 100 0 0 20 0 3 0 123 456789 1234"


def lag(counts: tuple[float, ...]) -> Histogram:
    bounds = (0.01, 0.1, 1.0, math.inf)
    return Histogram(tuple(zip(bounds, counts, strict=True)), counts[-1])


def test_cpu_seconds_reads_utime_and_stime_after_the_command_name_whatever_it_holds() -> None:
    """utime + stime are the 14th and 15th fields, counted after the last ')' and in clock ticks."""
    assert cpu_seconds(STAT) == pytest.approx(400 / TICK)


def test_metric_sum_adds_every_labelled_sample_of_one_name_and_no_longer_name() -> None:
    """Samples of the name with and without labels add up; a name it is a prefix of does not; NaN if absent."""
    text = (
        "# HELP foundry_monitor_requests_total x\n"
        'foundry_monitor_requests_total{code="200"} 7.0\n'
        'foundry_monitor_requests_total{code="503"} 2.0\n'
        "foundry_monitor_requests_total_extra 100.0\n"
        f"{POLLS} 12.0\n"
    )
    assert metric_sum(text, "foundry_monitor_requests_total") == 9.0
    assert metric_sum(text, POLLS) == 12.0
    assert math.isnan(metric_sum(text, "foundry_monitor_owned_deployments"))


def test_replica_figures_are_cpu_per_thousand_polls_rate_share_and_the_windows_lag() -> None:
    """2 s of CPU over 10,000 polls in 20 s: 200 ms per 1,000 polls, 500 polls/s, 10% of a core; 2,000
    requests (lists refresh many deployments at once): 100/s; the lag p99 is that of the window's
    observations only (the earlier ones, all slow, subtracted)."""
    first = Probe(
        at=100.0,
        cpu_s=5.0,
        rss_bytes=10**8,
        polls=1000.0,
        requests=1100.0,
        owned=500.0,
        lag=lag((0, 0, 0, 50)),
    )
    last = Probe(
        at=120.0,
        cpu_s=7.0,
        rss_bytes=2 * 10**8,
        polls=11000.0,
        requests=3100.0,
        owned=500.0,
        lag=lag((100, 100, 100, 150)),
    )
    figures = replica_figures(first, last)
    assert figures.cpu_ms_per_1000_polls == pytest.approx(200.0)
    assert figures.polls_per_s == pytest.approx(500.0)
    assert figures.cpu_share == pytest.approx(0.1)
    assert figures.requests_per_s == pytest.approx(100.0)
    assert figures.rss_mb == pytest.approx(200.0)
    assert figures.lag_p99_s <= 0.01
    assert figures.owned == 500.0


def test_a_replica_that_polled_nothing_has_no_cpu_per_poll() -> None:
    """No polls in the window: NaN, not a division by zero."""
    probe = Probe(at=1.0, cpu_s=1.0, rss_bytes=1, polls=5.0, requests=5.0, owned=0.0, lag=lag((0, 0, 0, 0)))
    later = Probe(at=2.0, cpu_s=1.5, rss_bytes=1, polls=5.0, requests=5.0, owned=0.0, lag=lag((0, 0, 0, 0)))
    assert math.isnan(replica_figures(probe, later).cpu_ms_per_1000_polls)


def test_the_lag_histogram_of_a_metrics_head_is_read_by_the_soaks_parser() -> None:
    """The bench reads the schedule lag under the name the service exports it."""
    text = f'{LAG}_bucket{{le="0.1"}} 3.0\n{LAG}_bucket{{le="+Inf"}} 4.0\n{LAG}_count 4.0\n'
    assert parse_histogram(text, LAG).count == 4.0


def test_database_figures_are_transactions_and_rows_per_second_between_samples_and_the_last_size() -> None:
    """pg_stat_database's commits+rollbacks: 3,000 more in 60 s is 50 per second; the size is the last one;
    rows written per table over the window, a table new in the window counted from 0, an idle one left out."""
    first = DatabaseProbe(10.0, 1000, 8 * 10**6, {"outbox": 600, "cursors": 5})
    last = DatabaseProbe(70.0, 4000, 9 * 10**6, {"outbox": 1200, "cursors": 5, "leases": 120})
    assert database_figures(first, last) == DatabaseFigures(
        transactions_per_s=50.0, size_mb=9.0, rows_per_s={"leases": 2.0, "outbox": 10.0}
    )


def test_takeover_is_the_first_round_after_the_kill_in_which_the_survivors_own_the_fleet() -> None:
    """Rounds before the kill do not count; partial rounds do not; no full round: None."""
    rounds = [(9.0, 100.0), (11.0, 70.0), (14.0, 99.0), (26.5, 100.0), (27.0, 100.0)]
    assert takeover_seconds(10.0, rounds, 100) == pytest.approx(16.5)
    assert takeover_seconds(10.0, rounds[:3], 100) is None


def test_the_calibrated_interval_asks_for_half_the_saturated_rate_in_whole_tens_of_seconds() -> None:
    """100,000 at 2,000/s saturated: 100 s; 100,000 at 1,900/s: 105.3 s, so 110 s; never under 10 s."""
    assert calibrated_interval(100_000, 2000.0) == 100.0
    assert calibrated_interval(100_000, 1900.0) == 110.0
    assert calibrated_interval(50, 5000.0) == 10.0


def test_the_window_is_whole_intervals_covering_the_minutes_asked() -> None:
    """4 minutes at 100 s: 300 s; at 600 s: one interval."""
    assert window_seconds(4.0, 100.0) == 300.0
    assert window_seconds(4.0, 600.0) == 600.0


def figures(polls_per_s: float, lag_p99_s: float = 0.05) -> ReplicaFigures:
    return ReplicaFigures(
        cpu_ms_per_1000_polls=150.0,
        cpu_share=0.2,
        rss_mb=900.0,
        polls_per_s=polls_per_s,
        requests_per_s=polls_per_s,
        lag_p99_s=lag_p99_s,
        owned=100000.0,
    )


def test_the_table_shows_each_replica_the_contenders_database_and_the_rows_without_figures() -> None:
    """The baseline's SQLite size, PostgreSQL's transactions and size, the interval and demand in the
    title; a contender that cannot run yet says why instead of showing a figure."""
    rows = [
        Result("(a) 1 x SQLite", replicas=(figures(1000.0),), sqlite_mb=321.0, simulator_share=0.4),
        Result(
            "(b) 1 x PostgreSQL",
            replicas=(figures(1001.0),),
            database=DatabaseFigures(42.0, 654.0, {"deployments": 90.0}),
        ),
        needs_leases(4),
    ]
    text = table(rows, size=100_000, interval=100.0, window=300.0)
    lines = text.splitlines()
    assert "interval 100 s = fast_interval (demand 1000 deployments/s" in lines[0]
    sqlite = next(line for line in lines if line.startswith("(a)")).split()
    assert sqlite[4:9] == ["150", "20", "900", "1000", "1000"]
    assert "321" in sqlite
    assert "40" in sqlite
    postgres = next(line for line in lines if line.startswith("(b)")).split()
    assert postgres[-4:-2] == ["42", "654"]
    assert "rows written/s: deployments 90" in text
    assert "needs leases" in next(line for line in lines if line.startswith("(c)"))
    assert "FALLS BEHIND" not in text


def test_the_table_flags_a_replica_below_its_share_of_the_demand_or_late() -> None:
    """Two replicas share 1,000 polls/s: one at 400/s falls behind; one on time but with a lag p99 over a
    tenth of the interval does too."""
    slow = Result("(c) 2 x PostgreSQL", replicas=(figures(500.0), figures(400.0)))
    assert "FALLS BEHIND (replicas [1])" in table([slow], size=100_000, interval=100.0, window=300.0)
    late = Result("(b) 1 x PostgreSQL", replicas=(figures(1000.0, lag_p99_s=12.0),))
    assert "FALLS BEHIND (replicas [0])" in table([late], size=100_000, interval=100.0, window=300.0)


@pytest.mark.slow
def test_a_small_run_of_the_sqlite_and_postgres_contenders_measures_both(tmp_path: Path) -> None:
    """300 deployments, a 5 s interval, 10 s windows: both contenders poll at their demand, the PostgreSQL
    one commits transactions, the SQLite one has a file, and the JSON holds the printed table."""
    require_postgres()
    out = tmp_path / "replicas.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.replicas",
            "--size",
            "300",
            "--minutes",
            "0.15",
            "--interval",
            "5",
            "--only",
            "sqlite,postgres",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    sqlite, postgres = results["contenders"]
    assert results["interval_s"] == 5.0
    assert results["size"] == 300
    for contender in (sqlite, postgres):
        (replica,) = contender["replicas"]
        assert replica["polls_per_s"] >= 0.9 * 300 / 5
        assert 0 < replica["cpu_ms_per_1000_polls"] < 10_000
        assert replica["owned"] == 300
    assert sqlite["sqlite_mb"] > 0
    assert sqlite["database"] is None
    assert postgres["database"]["transactions_per_s"] > 0
    assert postgres["database"]["size_mb"] > 0
    assert results["table"] in done.stdout


def test_the_window_starts_midway_between_the_first_round_and_the_second() -> None:
    """First poll at 0, ready at 40, interval 100: the second round runs from 100 to 140, so the window
    starts at 70; a first round longer than the interval leaves no gap: it starts when ready."""
    assert window_start(0.0, 40.0, 100.0) == 70.0
    assert window_start(0.0, 120.0, 100.0) == 120.0


def test_batched_polls_are_judged_by_their_lag_alone() -> None:
    """With batching a poll may be a list of many deployments: 350 polls/s for a demand of 1,000
    deployments/s is no shortfall, but a lag p99 over a tenth of the interval still is."""
    lists = Result("(a) 1 x SQLite", replicas=(figures(350.0),))
    assert "FALLS BEHIND" not in table([lists], size=100_000, interval=100.0, window=300.0, batched=True)
    late = Result("(a) 1 x SQLite", replicas=(figures(350.0, lag_p99_s=12.0),))
    assert "FALLS BEHIND" in table([late], size=100_000, interval=100.0, window=300.0, batched=True)
