"""The soak run: the monitor watches a large churning fleet for a long time while its footprint is sampled.

    python -m bench.soak [--minutes 30] [--size 10000] [--every 30] [--interval 30s] ...

The simulator (with its lifecycle on, ``--churn``) and the monitor each run in a process of their own. Every
``--every`` seconds the monitor's RSS, open file descriptors and threads are read from /proc, and /metrics
gives the p99 of ``foundry_monitor_schedule_lag_seconds`` over the window since the previous sample and the
polls per second. A table row is printed per sample; at the end, the drift of each figure: the median of the
last quarter of the samples minus that of the first. asyncio tasks cannot be seen from outside the process
(``tests/test_soak.py`` counts them in-process on a small fleet). Not part of CI: ``make soak``.
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.run import PY, TOKEN, free_port, http_json, process, wait_for

LAG = "foundry_monitor_schedule_lag_seconds"


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts of one histogram, by upper bound (``+Inf`` last), and its count."""

    buckets: tuple[tuple[float, float], ...]
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        if not earlier.buckets:
            return self
        return Histogram(
            tuple(
                (bound, now - then)
                for (bound, now), (_, then) in zip(self.buckets, earlier.buckets, strict=True)
            ),
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float:
        """As PromQL's ``histogram_quantile``: linear within the bucket; NaN without observations."""
        if self.count <= 0 or not self.buckets:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower


def parse_histogram(text: str, name: str) -> Histogram:
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(name + "_count "):
            count = float(line.rsplit(" ", 1)[1])
    return Histogram(tuple(sorted(buckets)), count)


@dataclass(frozen=True, slots=True)
class Sample:
    """The monitor process at one moment, and its polling over the window before it."""

    minute: float
    rss_mb: float
    fds: int
    threads: int
    lag_p99_ms: float
    polls_per_s: float


#: Table columns: heading, width, how a sample shows it.
COLUMNS: tuple[tuple[str, int, Callable[[Sample], str]], ...] = (
    ("minute", 8, lambda s: f"{s.minute:.1f}"),
    ("RSS MB", 9, lambda s: f"{s.rss_mb:.1f}"),
    ("fds", 6, lambda s: str(s.fds)),
    ("threads", 8, lambda s: str(s.threads)),
    ("lag p99 ms", 11, lambda s: f"{s.lag_p99_ms:.1f}"),
    ("polls/s", 9, lambda s: f"{s.polls_per_s:.0f}"),
)
#: The figures whose drift is reported.
DRIFTING: tuple[tuple[str, Callable[[Sample], float]], ...] = (
    ("RSS MB", lambda s: s.rss_mb),
    ("fds", lambda s: s.fds),
    ("threads", lambda s: s.threads),
    ("lag p99 ms", lambda s: s.lag_p99_ms),
    ("polls/s", lambda s: s.polls_per_s),
)


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        text: str = response.read().decode()
    return text


def row(cells: Sequence[str]) -> str:
    return "".join(cell.rjust(width) for cell, (_, width, _) in zip(cells, COLUMNS, strict=True))


def drift(samples: Sequence[Sample]) -> None:
    """Median of the last quarter minus median of the first, per figure (NaN windows left out)."""
    quarter = max(1, len(samples) // 4)
    print(f"\ndrift over {len(samples)} samples (last-quarter median - first-quarter median):")
    print(f"{'figure':<12}{'first':>12}{'last':>12}{'drift':>12}")
    for name, value in DRIFTING:
        first = [v for v in map(value, samples[:quarter]) if not math.isnan(v)]
        last = [v for v in map(value, samples[-quarter:]) if not math.isnan(v)]
        if not first or not last:
            print(f"{name:<12}{'n/a':>12}{'n/a':>12}{'n/a':>12}")
            continue
        a, b = statistics.median(first), statistics.median(last)
        print(f"{name:<12}{a:>12.1f}{b:>12.1f}{b - a:>+12.1f}")


def write_config(
    path: Path,
    base: str,
    rids: Sequence[str],
    args: argparse.Namespace,
    port: int,
    *,
    polling: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> None:
    """The monitor's configuration for a bench run; ``polling`` adds settings, ``state`` replaces SQLite's."""
    config: dict[str, Any] = {
        "foundry": {"base_url": base, "auth": {"token": TOKEN}},
        "deployments": list(rids),
        "polling": {
            "interval": args.interval,
            "fast_interval": args.fast_interval,
            "concurrency": args.concurrency,
            "requests_per_second": args.rps,
            **(polling or {}),
        },
        "server": {"listen": f"127.0.0.1:{port}"},
        "sinks": {"stdout": False, "file": {"path": str(path.parent / "events.jsonl")}},
        "state": dict(state) if state is not None else {"path": str(path.parent / "monitor.sqlite3")},
        "logging": {"level": "warning", "format": "json"},
    }
    path.write_text(yaml.safe_dump(config))


def soak(args: argparse.Namespace, tmp: Path) -> list[Sample]:
    sim_port, port = free_port(), free_port()
    simulate = [PY, "-m", "monitor", "simulate", "--port", str(sim_port), "--size", str(args.size)]
    simulate += ["--token", TOKEN, "--churn", str(args.churn)]
    with process(simulate, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        base = f"http://127.0.0.1:{sim_port}"
        wait_for(base + "/_sim/health")
        rids = http_json(base + "/_sim/deployments")["rids"]
        config = tmp / "monitor.yaml"
        write_config(config, base, rids, args, port)
        stderr = tmp / "monitor.stderr"
        url = f"http://127.0.0.1:{port}"
        samples: list[Sample] = []
        with (
            stderr.open("wb") as err,
            process(
                [PY, "-m", "monitor", "run", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=err
            ) as monitor,
        ):
            wait_for(url + "/readyz", timeout=600)
            print(
                f"soak: {len(rids)} deployments, interval {args.interval}, churn {args.churn}, "
                f"{args.minutes:g} min, a sample every {args.every:g} s (asyncio tasks: not visible "
                "from outside the process)",
                flush=True,
            )
            print(row([name for name, _, _ in COLUMNS]), flush=True)
            started = time.monotonic()
            previous = parse_histogram(scrape(url + "/metrics"), LAG)
            previous_at = started
            end = started + 60 * args.minutes
            while time.monotonic() < end:
                time.sleep(min(args.every, max(0.0, end - time.monotonic())))
                if monitor.poll() is not None:
                    sys.exit(f"the monitor exited with {monitor.returncode}:\n{stderr.read_text()[-4000:]}")
                now = time.monotonic()
                lag = parse_histogram(scrape(url + "/metrics"), LAG)
                window = lag.minus(previous)
                status = proc_status(monitor.pid)
                sample = Sample(
                    minute=(now - started) / 60,
                    rss_mb=int(status["VmRSS"].split()[0]) / 1024,
                    fds=len(list(Path(f"/proc/{monitor.pid}/fd").iterdir())),
                    threads=int(status["Threads"]),
                    lag_p99_ms=1000 * window.quantile(0.99),
                    polls_per_s=window.count / (now - previous_at),
                )
                samples.append(sample)
                print(row([show(sample) for _, _, show in COLUMNS]), flush=True)
                previous, previous_at = lag, now
            monitor.send_signal(signal.SIGTERM)
            code = monitor.wait(timeout=30)
        if code != 0:
            sys.exit(f"the monitor exited with {code} on SIGTERM:\n{stderr.read_text()[-4000:]}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default: 30)")
    parser.add_argument("--size", type=int, default=10_000, help="simulated deployments (default: 10000)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples (default: 30)")
    parser.add_argument(
        "--churn", type=float, default=1.0, help="simulator lifecycle multiplier (default: 1)"
    )
    parser.add_argument("--interval", default="30s", help="polling.interval (default: 30s)")
    parser.add_argument("--fast-interval", default="5s", help="polling.fast_interval (default: 5s)")
    parser.add_argument("--concurrency", type=int, default=64, help="polling.concurrency (default: 64)")
    parser.add_argument(
        "--rps", type=float, default=2000.0, help="polling.requests_per_second (default: 2000)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        samples = soak(args, Path(tmp))
    if samples:
        drift(samples)


if __name__ == "__main__":
    main()
