"""The benchmark: the monitor against the official SDK and a bare aiohttp loop, all on the bundled simulator.

    python -m bench.run [--size 1000] [--polls 20000] [--rounds 3] [--quick]

Prints one comparison table and writes ``bench/results/latest.json``. The simulator runs in its own process;
each contender runs in a fresh process of its own, rounds interleaved, and medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


def wait_for(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


@contextmanager
def process(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, cwd=ROOT, **kwargs)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def simulator(size: int, *, static: bool = True) -> Iterator[str]:
    with simulator_process(size, static=static) as (base, _):
        yield base


@contextmanager
def simulator_process(
    size: int, *, static: bool = True, churn: float | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The simulator in a process of its own: its base URL, and the process (whose CPU a bench may read)."""
    port = free_port()
    args = [PY, "-m", "monitor", "simulate", "--port", str(port), "--size", str(size), "--token", TOKEN]
    if static:
        args.append("--static")
    if churn is not None:
        args += ["--churn", str(churn)]
    with process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/_sim/health")
        yield base, proc


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def contender(kind: str, base: str, rids_file: Path, polls: int, concurrency: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            PY,
            "-m",
            "bench.contenders",
            kind,
            "--base",
            base,
            "--rids",
            str(rids_file),
            "--polls",
            str(polls),
            "--concurrency",
            str(concurrency),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def monitor_config(
    path: Path,
    base: str,
    rids: list[str],
    *,
    interval: str,
    fast: str,
    events: Path,
    rps: float = 5000,
    concurrency: int = 64,
    batch: str = "auto",
) -> None:
    lines = [
        "foundry:",
        f"  base_url: {base}",
        f"  auth: {{token: {TOKEN}}}",
        "deployments:",
        *[f"  - {rid}" for rid in rids],
        "polling:",
        f"  interval: {interval}",
        f"  fast_interval: {fast}",
        "  jitter: 0.1",
        f"  concurrency: {concurrency}",
        f"  requests_per_second: {rps}",
        f"  batch: {batch}",
        "server:",
        f"  listen: 127.0.0.1:{free_port()}",
        "sinks:",
        "  stdout: false",
        f"  file: {{path: {events}}}",
        f"state: {{path: {events.with_suffix('.sqlite3')}}}",
        "logging: {level: warning, format: json}",
    ]
    path.write_text("\n".join(lines) + "\n")


def listen_of(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.strip().startswith("listen:"):
            return "http://" + line.split(":", 1)[1].strip()
    raise ValueError("no listen address")


def measure_footprint(size: int, tmp: Path) -> dict[str, Any]:
    """RSS after the first round of polls of ``size`` deployments, and /metrics time and size."""
    with simulator(size) as base:
        rids = http_json(base + "/_sim/deployments")["rids"][:size]
        config = tmp / f"footprint-{size}.yaml"
        monitor_config(config, base, rids, interval="10m", fast="10m", events=tmp / f"events-{size}.jsonl")
        with process(
            [PY, "-m", "monitor", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc:
            url = listen_of(config)
            wait_for(url + "/readyz", timeout=300)
            time.sleep(1.0)  # let the allocator settle after the burst of first polls
            rss = rss_of(proc.pid)
            plain = scrape_timings(url + "/metrics", gzip=False)
            zipped = scrape_timings(url + "/metrics", gzip=True)
            # Prometheus scrapes it from then on: the footprint that counts includes what a scrape keeps.
            time.sleep(1.0)
            scraped = rss_of(proc.pid)
    return {
        "rss_bytes": rss,
        "rss_scraped_bytes": scraped,
        "metrics_seconds": plain[0],
        "metrics_bytes": plain[1],
        "metrics_gzip_seconds": zipped[0],
        "metrics_gzip_bytes": zipped[1],
    }


def scrape_timings(url: str, *, gzip: bool, rounds: int = 7) -> tuple[float, int]:
    """Median seconds to fetch ``url`` whole (as Prometheus does, with gzip or without) and its size."""
    headers = {"Accept-Encoding": "gzip"} if gzip else {}
    timings, length = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            length = len(response.read())
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), length


def detection_latency(tmp: Path, *, interval: float, fast: float, changes: int) -> dict[str, float]:
    """Simulator change to event, for deployments on the normal interval and on the fast one."""
    with simulator(200) as base:
        rids = http_json(base + "/_sim/deployments")["rids"][:200]
        events = tmp / f"latency-{interval}.jsonl"
        config = tmp / f"latency-{interval}.yaml"
        monitor_config(config, base, rids, interval=f"{interval}s", fast=f"{fast}s", events=events)
        with process(
            [PY, "-m", "monitor", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ):
            wait_for(listen_of(config) + "/readyz", timeout=120)
            active = [
                r
                for r in rids
                if http_json(f"{base}/_sim/deployments/{r}")["deployment"]["status"]["state"] == "ACTIVE"
            ][:changes]
            slow: dict[str, float] = {}
            fast_made: dict[str, float] = {}
            # Normal interval: ACTIVE -> FAILED on deployments that are steady.
            for rid in active[: changes // 2]:
                slow[rid] = time.time()
                http_json(
                    f"{base}/_sim/deployments/{rid}/status", "PUT", {"state": "FAILED", "isReady": False}
                )
                time.sleep(interval / changes)
            # Fast interval: deployments put in STARTING first (watched fast), then made ACTIVE.
            starting = active[changes // 2 :]
            for rid in starting:
                http_json(
                    f"{base}/_sim/deployments/{rid}/status", "PUT", {"state": "STARTING", "isReady": False}
                )
            time.sleep(interval * 1.5)
            for rid in starting:
                fast_made[rid] = time.time()
                http_json(
                    f"{base}/_sim/deployments/{rid}/status", "PUT", {"state": "ACTIVE", "isReady": True}
                )
                time.sleep(fast / changes)
            time.sleep(interval + 2)
    seen: dict[tuple[str, str], float] = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "deployment.changed":
            stamp = datetime.fromisoformat(event["time"]).replace(tzinfo=UTC).timestamp()
            seen.setdefault((event["rid"], event["new_state"]), stamp)
    slow_lat = [seen[(rid, "FAILED")] - t for rid, t in slow.items() if (rid, "FAILED") in seen]
    fast_lat = [seen[(rid, "ACTIVE")] - t for rid, t in fast_made.items() if (rid, "ACTIVE") in seen]
    return {
        "normal_p50": percentile(slow_lat, 50),
        "normal_p99": percentile(slow_lat, 99),
        "normal_missed": len(slow) - len(slow_lat),
        "fast_p50": percentile(fast_lat, 50),
        "fast_p99": percentile(fast_lat, 99),
        "fast_missed": len(fast_made) - len(fast_lat),
    }


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1000, help="deployments polled by the throughput runs")
    parser.add_argument("--polls", type=int, default=20000, help="polls per contender run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="smaller figures for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.polls, args.rounds = 2000, 1
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with simulator(args.size) as base:
            rids = http_json(base + "/_sim/deployments")["rids"]
            rids_file = tmp / "rids.txt"
            rids_file.write_text("\n".join(rids))
            runs: dict[str, list[dict[str, Any]]] = {"bare": [], "sdk": [], "monitor": []}
            for _ in range(args.rounds):
                for kind in runs:
                    polls = args.polls if kind != "sdk" else max(1000, args.polls // 5)
                    runs[kind].append(contender(kind, base, rids_file, polls, args.concurrency))
        summary = {}
        for kind, items in runs.items():
            summary[kind] = {
                "cpu_ms_per_1000": statistics.median(1000 * 1000 * r["cpu_s"] / r["polls"] for r in items),
                "polls_per_s": statistics.median(r["polls"] / r["wall_s"] for r in items),
                "failures": sum(r["failures"] for r in items),
            }
        results["throughput"] = summary
        footprint = {n: measure_footprint(n, tmp) for n in ((100, 1000) if args.quick else (1000, 10000))}
        results["footprint"] = footprint
        interval, fast = (4.0, 1.0) if args.quick else (10.0, 2.0)
        results["latency"] = detection_latency(
            tmp, interval=interval, fast=fast, changes=20 if args.quick else 40
        )
        results["latency"].update(interval=interval, fast_interval=fast)
    print_table(results)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))


def print_table(results: dict[str, Any]) -> None:
    t = results["throughput"]
    bare, sdk, mon = t["bare"], t["sdk"], t["monitor"]
    rows = [
        ("CPU ms per 1,000 polls", *(f"{t[k]['cpu_ms_per_1000']:.0f}" for k in ("monitor", "sdk", "bare"))),
        ("polls per second (saturated)", *(f"{t[k]['polls_per_s']:.0f}" for k in ("monitor", "sdk", "bare"))),
        ("failed polls", *(str(t[k]["failures"]) for k in ("monitor", "sdk", "bare"))),
    ]
    print(f"{'figure':<34}{'monitor':>12}{'SDK async':>12}{'bare aiohttp':>14}")
    for name, *cells in rows:
        print(f"{name:<34}{cells[0]:>12}{cells[1]:>12}{cells[2]:>14}")
    print(
        f"\nmonitor CPU / SDK CPU:  {mon['cpu_ms_per_1000'] / sdk['cpu_ms_per_1000']:.3f}   (target <= 0.10)"
    )
    print(
        f"monitor CPU / bare CPU: {mon['cpu_ms_per_1000'] / bare['cpu_ms_per_1000']:.2f}    (target <= 1.5)"
    )
    f = results["footprint"]
    small, large = sorted(f, key=int)
    per = (f[large]["rss_bytes"] - f[small]["rss_bytes"]) / (int(large) - int(small))
    print(
        f"\nRSS at {small} deployments: {f[small]['rss_bytes'] / 1e6:.1f} MB; at {large}: "
        f"{f[large]['rss_bytes'] / 1e6:.1f} MB (target < 100 MB at 10k); {per:.0f} bytes per deployment"
    )
    print(
        f"RSS after /metrics scrapes: {f[small]['rss_scraped_bytes'] / 1e6:.1f} MB at {small}; "
        f"{f[large]['rss_scraped_bytes'] / 1e6:.1f} MB at {large}"
    )
    print(
        f"/metrics at {large}: {1000 * f[large]['metrics_seconds']:.0f} ms median (target < 200 ms), "
        f"{f[large]['metrics_bytes'] / 1e6:.1f} MB; gzip (as Prometheus asks): "
        f"{1000 * f[large]['metrics_gzip_seconds']:.0f} ms, {f[large]['metrics_gzip_bytes'] / 1e6:.1f} MB"
    )
    lat = results["latency"]
    print(
        f"\ndetection latency, interval {lat['interval']:.0f}s: p50 {lat['normal_p50']:.2f}s p99 "
        f"{lat['normal_p99']:.2f}s (target p99 < {lat['interval'] + 1:.0f}s), missed {lat['normal_missed']}"
    )
    print(
        f"detection latency, fast interval {lat['fast_interval']:.0f}s: p50 {lat['fast_p50']:.2f}s p99 "
        f"{lat['fast_p99']:.2f}s, missed {lat['fast_missed']}"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
