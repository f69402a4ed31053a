"""The request-budget benchmark: detection latency and requests spent at Foundry's per-user budget.

    python -m bench.budget [--deployments 10000] [--models 2000] [--pinned 0.2] [--rps 83]
                           [--window 180] [--grace 170] [--change-rate 1.0]

One simulator holds a fleet of ``--deployments`` over ``--models`` models, ``--pinned`` of them pinned to a
version (no branch), the rest direct on ``master``, all ACTIVE. Four contenders watch all of it at once, each
with its own budget of ``--rps`` requests a second: the monitor with list batching and with ``batch: off``
(both at a 30 s interval), the monitor with batching at a 110 s interval (where its detection latency matches
the per-RID loop's), and a per-RID loop over the official SDK's async client. Once every contender has been
round the fleet, the bench changes ``--change-rate`` random deployments a second (ACTIVE to FAILED, each one
once) for ``--window`` seconds, waits ``--grace`` seconds, and prints one table: detection latency (change to
event), missed changes, requests per deployment-hour over the observation and the largest schedule lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import (
    PY,
    ROOT,
    TOKEN,
    http_json,
    listen_of,
    monitor_config,
    percentile,
    process,
    simulator,
    wait_for,
)

INTERVAL = "30s"
FAST_INTERVAL = "5s"
CONCURRENCY = 32


def build_fleet(base: str, deployments: int, models: int, pinned: float) -> list[str]:
    """Add the fleet through the control API: per model, its direct deployments then its pinned ones."""
    per_model = deployments // models
    pinned_per_model = round(per_model * pinned)

    def add(body: dict[str, Any]) -> str:
        rid: str = http_json(
            base + "/_sim/deployments", "POST", {"state": "ACTIVE", "isReady": True, **body}
        )["rid"]
        return rid

    def model(_: int) -> list[str]:
        first = add({"branch": "master"})
        model_rid = http_json(f"{base}/_sim/deployments/{first}")["modelRid"]
        rest = [
            add(
                {"modelRid": model_rid, "branch": None if i >= per_model - pinned_per_model - 1 else "master"}
            )
            for i in range(per_model - 1)
        ]
        return [first, *rest]

    with ThreadPoolExecutor(8) as pool:
        return [rid for rids in pool.map(model, range(models)) for rid in rids]


def scrape(url: str) -> dict[str, float]:
    """The monitor's request count and schedule-lag buckets."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    out: dict[str, float] = {"requests": 0.0}
    for line in text.splitlines():
        if line.startswith("foundry_monitor_requests_total{"):
            out["requests"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("foundry_monitor_schedule_lag_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out["lag_le_" + bound] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("foundry_monitor_effective_interval_seconds{"):
            cadence = line.split('cadence="', 1)[1].split('"', 1)[0]
            out["effective_" + cadence] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("foundry_monitor_request_demand_ratio "):
            out["demand_ratio"] = float(line.rsplit(" ", 1)[1])
    return out


def largest_lag(before: dict[str, float], after: dict[str, float]) -> str:
    """The upper bound of the highest schedule-lag bucket that grew between two scrapes."""
    bounds = sorted((float(k[7:]), k) for k in after if k.startswith("lag_le_"))
    below = 0.0
    largest = "0"
    for bound, key in bounds:
        grown = after[key] - before.get(key, 0.0)
        if grown > below:
            largest = "+Inf" if bound == float("inf") else f"{bound:g}"
        below = grown
    return largest


def event_times(path: Path) -> dict[str, list[float]]:
    seen: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "deployment.changed":
            stamp = datetime.fromisoformat(event["time"]).replace(tzinfo=UTC).timestamp()
            seen.setdefault(event["rid"], []).append(stamp)
    return seen


def detections(made: dict[str, float], seen: dict[str, list[float]]) -> tuple[list[float], int]:
    latencies = []
    for rid, at in made.items():
        after = [t for t in seen.get(rid, ()) if t >= at - 0.5]
        if after:
            latencies.append(max(0.0, min(after) - at))
    return latencies, len(made) - len(latencies)


async def sdk_loop(base: str, rids: list[str], rps: float, out: Path, seconds: float) -> None:
    """What a user would script: every RID in turn through the SDK's async client, within the budget."""
    from foundry_sdk import AsyncFoundryClient, Config, UserTokenAuth

    from monitor.budget import TokenBucket

    client = AsyncFoundryClient(
        auth=UserTokenAuth(TOKEN),
        hostname=base.removeprefix("http://"),
        config=Config(scheme="http"),
        preview=True,
    )
    bucket = TokenBucket(rps)
    last: dict[str, Any] = {}
    changed: dict[str, list[float]] = {}
    requests: list[float] = []
    started: dict[str, float] = {}
    lags: list[float] = []
    cursor = 0
    deadline = time.monotonic() + seconds
    stop = out.with_suffix(".stop")

    async def worker() -> None:
        nonlocal cursor
        while time.monotonic() < deadline and not stop.exists():
            rid = rids[cursor % len(rids)]
            cursor += 1
            await bucket.acquire()
            now = time.time()
            if rid in started:
                lags.append(now - started[rid])
            started[rid] = now
            try:
                answer = (await client.models.LiveDeployment.get(rid, preview=True)).model_dump()
            except Exception:
                continue
            finally:
                requests.append(time.time())
            if rid in last and last[rid] != answer:
                changed.setdefault(rid, []).append(time.time())
            last[rid] = answer

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    out.write_text(
        json.dumps({"changed": changed, "requests": requests, "cycle_max": max(lags, default=0.0)})
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=2_000)
    parser.add_argument("--pinned", type=float, default=0.2)
    parser.add_argument("--rps", type=float, default=83.0)
    parser.add_argument("--window", type=float, default=180.0, help="seconds during which changes are made")
    parser.add_argument("--grace", type=float, default=170.0, help="seconds to wait for the last detections")
    parser.add_argument("--change-rate", type=float, default=1.0, help="changes a second, fleet-wide")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--sdk-loop", nargs=4, metavar=("BASE", "RIDS", "OUT", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.sdk_loop:
        base, rids_file, out, seconds = args.sdk_loop
        rids = Path(rids_file).read_text().split()
        asyncio.run(sdk_loop(base, rids, args.rps, Path(out), float(seconds)))
        return
    bench(args)


#: The monitor contenders: label, ``polling.batch``, ``polling.interval``. The last one asks for the interval
#: at which batching matches the per-RID loop's detection latency, to show what that costs in requests.
MONITORS = (
    ("monitor, batch: auto", "auto", INTERVAL),
    ("monitor, batch: off", "off", INTERVAL),
    ("monitor, auto, 110s", "auto", "110s"),
)


def bench(args: argparse.Namespace) -> None:
    clock0 = time.monotonic()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp_name, simulator(1) as base, ExitStack() as running:
        tmp = Path(tmp_name)
        rids = build_fleet(base, args.deployments, args.models, args.pinned)
        print(f"fleet of {len(rids)} built in {time.monotonic() - clock0:.0f}s", file=sys.stderr)
        rids_file = tmp / "rids.txt"
        rids_file.write_text("\n".join(rids))
        quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        urls, events = [], []
        for index, (_, batch, interval) in enumerate(MONITORS):
            events.append(tmp / f"events-{index}.jsonl")
            config = tmp / f"monitor-{index}.yaml"
            monitor_config(
                config,
                base,
                rids,
                interval=interval,
                fast=FAST_INTERVAL,
                events=events[index],
                rps=args.rps,
                concurrency=CONCURRENCY,
                batch=batch,
            )
            urls.append(listen_of(config))
            running.enter_context(process([PY, "-m", "monitor", "run", "--config", str(config)], **quiet))
        sdk_out = tmp / "sdk.json"
        # The SDK loop runs until told to stop, within a bound.
        sdk_cmd = [PY, "-m", "bench.budget", "--rps", str(args.rps), "--sdk-loop", base]
        sdk = running.enter_context(process([*sdk_cmd, str(rids_file), str(sdk_out), "900"], **quiet))
        began = time.time()
        for url in urls:
            wait_for(url + "/readyz", timeout=600)
        first_round = time.time() - began
        # Let the schedules settle into their steady (stretched) rounds, the SDK loop finish its first.
        time.sleep(max(60.0, len(rids) / args.rps + 10 - first_round))
        start = [scrape(url) for url in urls]
        window_start = time.time()
        made: dict[str, float] = {}
        for rid in rng.sample(rids, int(args.window * args.change_rate)):
            made[rid] = time.time()
            http_json(f"{base}/_sim/deployments/{rid}/status", "PUT", {"state": "FAILED", "isReady": False})
            time.sleep(max(0.0, window_start + len(made) / args.change_rate - time.time()))
        middle = [scrape(url) for url in urls]
        time.sleep(args.grace)
        end = [scrape(url) for url in urls]
        window_end = time.time()
        sdk_out.with_suffix(".stop").touch()
        sdk.wait(timeout=120)
        sdk_result = json.loads(sdk_out.read_text())
        hours = (window_end - window_start) / 3600
        rows = []
        for index, (label, _, _) in enumerate(MONITORS):
            latencies, missed = detections(made, event_times(events[index]))
            requests = end[index]["requests"] - start[index]["requests"]
            rows.append(
                {
                    "contender": label,
                    "p50": percentile(latencies, 50),
                    "p99": percentile(latencies, 99),
                    "missed": missed,
                    "requests_per_deployment_hour": requests / len(rids) / hours,
                    "largest_lag": f"<= {largest_lag(start[index], end[index])}s; "
                    f"last {args.grace:.0f}s: <= {largest_lag(middle[index], end[index])}s",
                    "effective_interval": end[index].get("effective_interval", float("nan")),
                    "demand_ratio": end[index].get("demand_ratio", float("nan")),
                }
            )
        latencies, missed = detections(made, sdk_result["changed"])
        sdk_requests = sum(1 for t in sdk_result["requests"] if window_start <= t <= window_end)
        rows.append(
            {
                "contender": "SDK per-RID loop",
                "p50": percentile(latencies, 50),
                "p99": percentile(latencies, 99),
                "missed": missed,
                "requests_per_deployment_hour": sdk_requests / len(rids) / hours,
                "largest_lag": f"no schedule (longest round {sdk_result['cycle_max']:.0f}s)",
                "effective_interval": float("nan"),
                "demand_ratio": float("nan"),
            }
        )
    print_table(args, rows, len(made), window_end - window_start, time.monotonic() - clock0)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "budget.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


def print_table(
    args: argparse.Namespace, rows: list[dict[str, Any]], changes: int, observed: float, took: float
) -> None:
    print(
        f"{args.deployments} deployments over {args.models} models ({args.pinned:.0%} pinned), budget "
        f"{args.rps:g} requests/s each, {changes} changes at {args.change_rate:g}/s, "
        f"observed {observed:.0f}s (bench took {took / 60:.1f} min)"
    )
    print(
        f"{'contender':<22}{'p50 s':>7}{'p99 s':>7}{'missed':>7}{'req/dep-h':>10}"
        f"{'interval':>9}{'demand':>7}  largest schedule lag (observation; its last part)"
    )
    for row in rows:
        print(
            f"{row['contender']:<22}{row['p50']:>7.1f}{row['p99']:>7.1f}{row['missed']:>7}"
            f"{row['requests_per_deployment_hour']:>10.1f}{row['effective_interval']:>9.1f}"
            f"{row['demand_ratio']:>7.2f}  {row['largest_lag']}"
        )
    batched, _, slow, sdk = rows
    per_rid = sdk["requests_per_deployment_hour"]
    print(
        f"\nbatching at 30s: p99 {batched['p99']:.1f}s (target <= 60s), "
        f"{batched['requests_per_deployment_hour'] / per_rid:.2f} of the per-RID loop's requests; "
        f"at 110s: p99 {slow['p99']:.1f}s (per-RID {sdk['p99']:.1f}s), "
        f"{slow['requests_per_deployment_hour'] / per_rid:.2f} of its requests (target <= 0.5)"
    )


if __name__ == "__main__":
    main()
