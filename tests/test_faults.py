"""Fault tolerance of the running service against the simulator: every upstream fault is survived, counted,
kept from reporting false changes and from delaying other deployments, and recovered from within an interval.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import pytest

from monitor.config import Config, parse_config
from monitor.events import Event, EventType
from monitor.service import Running, Service
from monitor.simulator.faults import FLEET, Fault
from monitor.simulator.fleet import Rates
from monitor.simulator.server import RequestCounters, SimulatorHandle, SimulatorSettings, running_simulator

TOKEN = "faults-test-token"
CLIENT_ID = "faults-client"
CLIENT_SECRET = "faults-client-secret"
#: The normal polling interval; the fast one is half of it.
INTERVAL = 0.3
#: Slack for scheduling on a busy two-core CI machine.
MARGIN = 0.6
MAX_BODY = 65_536
POLL_ERRORS = "foundry_live_deployment_poll_errors_total"

# Marked here, not only by the root conftest's late marking, so parametrized coroutine tests keep their
# parameters (anyio's plugin rebuilds late-marked items with the backend as their only parameter).
pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for ``condition`` with a bound."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


class Arrivals:
    """When each Foundry request reached the simulator, per target (RID, model or ``token``)."""

    def __init__(self, counters: RequestCounters, monkeypatch: pytest.MonkeyPatch) -> None:
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        original = counters.arrived

        def arrived(endpoint: str, target: str) -> None:
            self.times[target].append(time.monotonic())
            original(endpoint, target)

        monkeypatch.setattr(counters, "arrived", arrived)

    def since(self, target: str, start: float, end: float = float("inf")) -> list[float]:
        return [t for t in self.times[target] if start <= t < end]

    def all_since(self, start: float, end: float = float("inf")) -> list[float]:
        return sorted(t for times in self.times.values() for t in times if start <= t < end)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_config(
    base_url: str,
    rids: Sequence[str],
    state_dir: Path,
    *,
    polling: dict[str, Any] | None = None,
    retries: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
) -> Config:
    data: dict[str, Any] = {
        "foundry": {
            "base_url": base_url,
            "auth": auth or {"token": TOKEN},
            "timeouts": {"connect": "500ms", "read": "500ms", "total": "1s"},
            "retries": {
                "attempts": 2,
                "backoff_initial": "50ms",
                "backoff_max": "100ms",
                "retry_after_max": "2s",
                **(retries or {}),
            },
            "max_body_bytes": MAX_BODY,
        },
        "deployments": [{"rid": rid, "name": f"dep-{i}"} for i, rid in enumerate(rids)],
        "polling": {
            "interval": f"{int(INTERVAL * 1000)}ms",
            "fast_interval": f"{int(INTERVAL * 500)}ms",
            "jitter": 0,
            "concurrency": 20,
            "requests_per_second": 1000,
            "unreachable_after": 2,
            "staleness": "5s",
            # Persistent errors (401, 403, 404 without envelope) back off no further than one interval, so
            # that every fault can be held to the same recovery bound.
            "error_backoff_max": f"{int(INTERVAL * 1000)}ms",
            # The breaker has its own tests; here it must not stand between a fault and its recovery.
            "breaker": {"min_polls": 1_000_000},
            # The faults strike each deployment's own GET; the list path's faults are tested on their own.
            "batch": "off",
            **(polling or {}),
        },
        "server": {"listen": "127.0.0.1:0"},
        "sinks": {"stdout": False},
        "state": {"path": str(state_dir / "monitor.sqlite3")},
    }
    return parse_config(data, environ={})


class Monitor:
    """A service running in the test's task group, and what can be read of it."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.base = f"http://127.0.0.1:{running.port}"

    def events(self, kind: EventType | None = None, rid: str | None = None) -> list[Event]:
        return [
            e
            for e in self.running.bus.recent(100_000)
            if (kind is None or e.type is kind) and (rid is None or e.rid == rid)
        ]

    def errors(self, rid: str, kind: str) -> int:
        return self.running.tracker.records[rid].errors[kind]

    def up(self, rid: str) -> bool:
        return self.running.tracker.records[rid].up

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.base + path) as response:
            return response.status, await response.text()

    async def metrics(self) -> str:
        status, text = await self.get("/metrics")
        assert status == 200
        return text


async def start(config: Config, tg: anyio.abc.TaskGroup) -> Monitor:
    running: Running = await tg.start(Service(config).run)
    monitor = Monitor(running)
    await until(running.scheduler.first_round_done.is_set)
    # Events reach the bus once the journal has written them, a moment after the polls that caused them.
    await until(lambda: len(monitor.events(EventType.OBSERVED)) == len(config.deployments))
    return monitor


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def max_gap(times: Sequence[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    """A static six-deployment fleet: any change the monitor reports was made by the test."""
    settings = SimulatorSettings(
        size=6, seed=11, rates=Rates(), tokens=(TOKEN,), clients={CLIENT_ID: CLIENT_SECRET}
    )
    async with running_simulator(settings) as handle:
        yield handle


@dataclass(frozen=True, slots=True)
class Case:
    """A fault, the error kind it must be counted as, and the longest one poll under it can take."""

    fault: Fault
    error: str
    poll_worst: float


# Polls make two attempts 50-100 ms apart; a stalled attempt ends at the 0.5 s read timeout.
CASES = {
    "500": Case(Fault(kind="status", status=500), "server_error", 0.1),
    "502": Case(Fault(kind="status", status=502), "server_error", 0.2),
    "503": Case(Fault(kind="status", status=503), "unavailable", 0.2),
    "503-retry-after": Case(Fault(kind="status", status=503, retry_after="1"), "unavailable", 1.2),
    "429-retry-after": Case(Fault(kind="status", status=429, retry_after="1"), "rate_limited", 1.2),
    "403": Case(Fault(kind="status", status=403), "permission_denied", 0.1),
    "404-without-envelope": Case(Fault(kind="status", status=404, empty=True), "api_not_found", 0.1),
    "hang": Case(Fault(kind="hang"), "timeout", 1.2),
    "delay-beyond-read-timeout": Case(Fault(kind="delay", delay=3.0), "timeout", 1.2),
    "reset": Case(Fault(kind="reset"), "connection", 0.2),
    "cut-mid-body": Case(Fault(kind="cut"), "connection", 0.2),
    "html-error-page": Case(Fault(kind="html"), "server_error", 0.2),
    "truncated-json": Case(Fault(kind="truncate"), "not_json", 0.1),
    "missing-status": Case(Fault(kind="wrong_shape", shape="missing_status"), "wrong_shape", 0.1),
    "missing-runtime": Case(Fault(kind="wrong_shape", shape="missing_runtime"), "wrong_shape", 0.1),
    "wrong-types": Case(Fault(kind="wrong_shape", shape="wrong_types"), "wrong_shape", 0.1),
    "not-an-object": Case(Fault(kind="wrong_shape", shape="not_object"), "wrong_shape", 0.1),
    "huge-body": Case(Fault(kind="huge", size=4 * MAX_BODY), "too_large", 0.1),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_a_faulted_deployment_is_counted_isolated_and_recovers(
    case: Case, sim: SimulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the fault the service keeps running, counts the error kind in /metrics, reports no change,
    goes unreachable once, keeps polling the other deployments on time, and recovers within an interval
    of the fault being cleared."""
    arrivals = Arrivals(sim.counters, monkeypatch)
    rids = list(sim.fleet.rids)
    victim, others = rids[0], rids[1:]
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim.base_url, rids, tmp_path), tg)
        faulted_at = time.monotonic()
        sim.faults.set(case.fault, victim)
        # Four polls of every other deployment make the window in which they must keep their pace.
        await until(
            lambda: (
                mon.errors(victim, case.error) >= 2
                and bool(mon.events(EventType.UNREACHABLE, victim))
                and all(len(arrivals.since(rid, faulted_at)) >= 4 for rid in others)
            )
        )
        window_end = time.monotonic()
        text = await mon.metrics()
        sim.faults.clear(victim)
        cleared_at = time.monotonic()
        await until(lambda: mon.up(victim) and bool(mon.events(EventType.RECOVERED, victim)))
        recovered_in = time.monotonic() - cleared_at
        health, _ = await mon.get("/healthz")
        tg.cancel_scope.cancel()

    assert health == 200
    counted = sample(text, POLL_ERRORS, rid=victim, error=case.error)
    assert counted is not None
    assert counted >= 2
    assert mon.events(EventType.CHANGED) == [], "a failed poll was reported as a change"
    unreachable = mon.events(EventType.UNREACHABLE, victim)
    assert [e.error for e in unreachable] == [case.error]
    assert len(mon.events(EventType.RECOVERED, victim)) == 1
    assert recovered_in <= case.poll_worst + INTERVAL + MARGIN
    for rid in others:
        seen = arrivals.since(rid, faulted_at, window_end)
        assert seen[3] - faulted_at <= 4 * INTERVAL + MARGIN, f"{rid} was slowed by the fault"
        assert max_gap(seen) <= INTERVAL + MARGIN
        assert mon.errors(rid, case.error) == 0


@pytest.mark.parametrize("status", [pytest.param(429, id="429"), pytest.param(503, id="503")])
async def test_retry_after_delays_the_retry(
    status: int, sim: SimulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single 429 or 503 with Retry-After: 1 is retried no sooner than a second later, and the poll then
    succeeds without an error or an event."""
    arrivals = Arrivals(sim.counters, monkeypatch)
    victim = sim.fleet.rids[0]
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim.base_url, [victim], tmp_path), tg)
        events_before = len(mon.events())
        # The simulator shares this event loop: the first request to arrive after this line is refused.
        refused = len(arrivals.times[victim])
        sim.faults.set(Fault(kind="status", status=status, retry_after="1", count=1), victim)
        await until(lambda: len(arrivals.times[victim]) >= refused + 2)
        refused_at, retried_at = arrivals.times[victim][refused : refused + 2]
        await until(lambda: sim.counters.statuses_of(victim).get(200, 0) >= 3)
        tg.cancel_scope.cancel()
    assert retried_at - refused_at >= 0.95
    assert sum(mon.running.tracker.records[victim].errors.values()) == 0
    assert len(mon.events()) == events_before


@pytest.mark.parametrize(
    ("retry_after", "earliest", "latest"),
    [
        pytest.param("1", 0.95, 1.0 + MARGIN, id="honoured"),
        pytest.param("30", 1.95, 2.0 + MARGIN, id="capped"),
    ],
)
async def test_retry_after_delays_the_next_poll(
    retry_after: str,
    earliest: float,
    latest: float,
    sim: SimulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a 429 with Retry-After ends a poll (no retries left), the next poll of that deployment waits for
    it too, no longer than polling.error_backoff_max (2 s here)."""
    arrivals = Arrivals(sim.counters, monkeypatch)
    victim = sim.fleet.rids[0]
    config = make_config(
        sim.base_url, [victim], tmp_path, retries={"attempts": 1}, polling={"error_backoff_max": "2s"}
    )
    async with anyio.create_task_group() as tg:
        mon = await start(config, tg)
        # Let the first poll finish, so that the fault cannot strike a request already in flight.
        await until(mon.running.scheduler.first_round_done.is_set)
        sim.faults.set(Fault(kind="status", status=429, retry_after=retry_after, count=1), victim)
        await until(lambda: mon.errors(victim, "rate_limited") == 1)
        # The 429 was answered at most one until() step before this moment.
        answered_at = time.monotonic()
        await until(lambda: bool(arrivals.since(victim, answered_at)))
        next_at = arrivals.since(victim, answered_at)[0]
        tg.cancel_scope.cancel()
    assert mon.errors(victim, "rate_limited") == 1
    assert earliest - 0.1 <= next_at - answered_at <= latest


async def test_an_unknown_state_is_a_real_change_not_an_error(sim: SimulatorHandle, tmp_path: Path) -> None:
    """A state the API does not document is reported once as a change of status.state (exported as
    UNKNOWN), counted as no error, and its end is reported once as the change back."""
    rids = list(sim.fleet.rids)
    victim = rids[0]
    original = sim.fleet.get_json(victim)["status"]["state"]  # type: ignore[index]
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim.base_url, rids, tmp_path), tg)
        sim.faults.set(Fault(kind="unknown_state", state="HIBERNATING"), victim)
        await until(lambda: bool(mon.events(EventType.CHANGED, victim)))
        text = await mon.metrics()
        polled = sim.counters.by_target[victim]
        # Further polls of the same unknown state are no new change.
        await until(lambda: sim.counters.by_target[victim] >= polled + 3)
        during = len(mon.events(EventType.CHANGED, victim))
        sim.faults.clear(victim)
        await until(lambda: len(mon.events(EventType.CHANGED, victim)) >= 2)
        tg.cancel_scope.cancel()
    assert during == 1
    there, back = mon.events(EventType.CHANGED, victim)
    assert (there.old_state, there.new_state) == (original, "HIBERNATING")
    assert [c.path for c in there.changes] == ["status.state"]
    assert (back.old_state, back.new_state) == ("HIBERNATING", original)
    assert sample(text, "foundry_live_deployment_state", rid=victim, state="UNKNOWN") == 1
    assert sample(text, "foundry_live_deployment_up", rid=victim) == 1
    assert sample(text, POLL_ERRORS, rid=victim) is None
    assert mon.events(EventType.CHANGED, rids[1]) == []
    assert mon.events(EventType.UNREACHABLE) == []


async def test_a_404_with_envelope_is_not_found_then_returned(sim: SimulatorHandle, tmp_path: Path) -> None:
    """404 LiveDeploymentNotFound is an answer: not_found once (found 0, up 1), no change and no
    unreachable; when the deployment answers again it is returned within an interval."""
    rids = list(sim.fleet.rids)
    victim = rids[0]
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim.base_url, rids, tmp_path), tg)
        sim.faults.set(Fault(kind="status", status=404), victim)
        await until(lambda: mon.errors(victim, "not_found") >= 3)
        text = await mon.metrics()
        sim.faults.clear(victim)
        cleared_at = time.monotonic()
        await until(lambda: bool(mon.events(EventType.RETURNED, victim)))
        returned_in = time.monotonic() - cleared_at
        tg.cancel_scope.cancel()
    assert len(mon.events(EventType.NOT_FOUND, victim)) == 1
    assert len(mon.events(EventType.RETURNED, victim)) == 1
    assert mon.events(EventType.CHANGED) == []
    assert mon.events(EventType.UNREACHABLE) == []
    assert sample(text, "foundry_live_deployment_found", rid=victim) == 0
    assert sample(text, "foundry_live_deployment_up", rid=victim) == 1
    assert (sample(text, POLL_ERRORS, rid=victim, error="not_found") or 0) >= 3
    assert returned_in <= INTERVAL + MARGIN


async def test_a_revoked_static_token_fails_every_poll_until_it_is_accepted_again(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """A revoked static token: every deployment counts unauthorized and goes unreachable, nothing is
    reported changed, and all recover within an interval once the token is accepted again."""
    rids = list(sim.fleet.rids)
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim.base_url, rids, tmp_path), tg)
        sim.tokens.revoke(TOKEN)
        await until(lambda: len(mon.events(EventType.UNREACHABLE)) == len(rids))
        text = await mon.metrics()
        sim.tokens.add_static(TOKEN)
        accepted_at = time.monotonic()
        await until(lambda: len(mon.events(EventType.RECOVERED)) == len(rids))
        recovered_in = time.monotonic() - accepted_at
        health, _ = await mon.get("/healthz")
        tg.cancel_scope.cancel()
    assert health == 200
    for rid in rids:
        assert (sample(text, POLL_ERRORS, rid=rid, error="unauthorized") or 0) >= 2
    assert {e.error for e in mon.events(EventType.UNREACHABLE)} == {"unauthorized"}
    assert mon.events(EventType.CHANGED) == []
    assert recovered_in <= 0.1 + INTERVAL + MARGIN


@pytest.mark.parametrize("how", ["expired", "revoked"])
async def test_an_expired_or_revoked_oauth_token_is_replaced_without_a_failed_poll(
    how: str, sim: SimulatorHandle, tmp_path: Path
) -> None:
    """With client credentials, a token the server expires or revokes early gets a 401, a new token is
    fetched and the request retried: no poll fails, nothing is reported."""
    rids = list(sim.fleet.rids)
    auth = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim.base_url, rids, tmp_path, auth=auth), tg)
        fetched = sim.counters.by_target["token"]
        events_before = len(mon.events())
        if how == "expired":
            assert sim.tokens.expire() >= 1
        else:
            assert sim.tokens.revoke_all() >= 1
        polled = {rid: sim.counters.by_target[rid] for rid in rids}
        await until(lambda: all(sim.counters.by_target[rid] >= polled[rid] + 3 for rid in rids))
        tg.cancel_scope.cancel()
    assert sim.counters.by_status[401] >= 1, "the stale token was never sent"
    assert sim.counters.by_target["token"] == fetched + 1, "one refresh, however many polls saw the 401"
    assert all(sum(mon.running.tracker.records[rid].errors.values()) == 0 for rid in rids)
    assert len(mon.events()) == events_before


async def test_connection_refused_then_the_server_returns_on_the_same_port(tmp_path: Path) -> None:
    """With the simulator gone every poll is refused and counted as a connection error, nothing is
    reported changed; when it listens again on the same port every deployment recovers within an
    interval."""
    port = free_port()
    settings = SimulatorSettings(port=port, size=6, seed=11, rates=Rates(), tokens=(TOKEN,))
    async with anyio.create_task_group() as tg:
        async with running_simulator(settings) as first:
            rids = list(first.fleet.rids)
            mon = await start(make_config(first.base_url, rids, tmp_path), tg)
        await until(lambda: len(mon.events(EventType.UNREACHABLE)) == len(rids))
        await until(lambda: all(mon.errors(rid, "connection") >= 3 for rid in rids))
        text = await mon.metrics()
        health, _ = await mon.get("/healthz")
        async with running_simulator(settings) as second:
            assert second.port == port
            listening_at = time.monotonic()
            await until(lambda: len(mon.events(EventType.RECOVERED)) == len(rids))
            recovered_in = time.monotonic() - listening_at
        tg.cancel_scope.cancel()
    assert health == 200
    for rid in rids:
        assert (sample(text, POLL_ERRORS, rid=rid, error="connection") or 0) >= 3
        assert sample(text, "foundry_live_deployment_up", rid=rid) == 0
    assert {e.error for e in mon.events(EventType.UNREACHABLE)} == {"connection"}
    # The same seed serves the same fleet: coming back is no change.
    assert mon.events(EventType.CHANGED) == []
    assert recovered_in <= 0.2 + INTERVAL + MARGIN


async def test_the_request_rate_stays_within_budget_while_everything_fails_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 deployments, 20 requests per second, a fleet-wide 503 and three attempts per poll: in no one
    second does the simulator see more than the budget and its burst, and the budget is what limits."""
    rps = 20
    burst = 2  # the token bucket holds a tenth of a second's worth, at least one
    settings = SimulatorSettings(size=50, seed=3, rates=Rates(), tokens=(TOKEN,))
    async with running_simulator(settings) as sim:
        arrivals = Arrivals(sim.counters, monkeypatch)
        config = make_config(
            sim.base_url,
            list(sim.fleet.rids),
            tmp_path,
            polling={"requests_per_second": rps, "concurrency": 50},
            retries={"attempts": 3, "backoff_initial": "10ms", "backoff_max": "50ms"},
        )
        async with anyio.create_task_group() as tg:
            mon = await start(config, tg)
            sim.faults.set(Fault(kind="status", status=503), FLEET)
            faulted_at = time.monotonic()
            await until(lambda: len(arrivals.all_since(faulted_at)) >= 6 * rps, timeout=30)
            tg.cancel_scope.cancel()
    seen = arrivals.all_since(faulted_at)
    busiest = max(sum(1 for t in seen[i:] if t < start + 1.0) for i, start in enumerate(seen))
    assert busiest <= rps + burst + 1, f"{busiest} requests in one second"
    # Demand (50 polls per 0.3 s, each retried) is far above the budget: the budget is what is measured.
    spread = seen[-1] - seen[0]
    assert (len(seen) - 1) / spread >= 0.8 * rps
    assert mon.events(EventType.CHANGED) == []


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault(kind="status", status=500), "server_error"), (Fault(kind="hang"), "timeout")],
    ids=["500", "hang"],
)
async def test_a_failing_list_falls_back_to_gets_reports_nothing_and_is_counted(
    fault: Fault, error: str, sim: SimulatorHandle, tmp_path: Path
) -> None:
    """While a model's list request fails (a 5xx, no answer), its direct deployments are polled by their
    own GETs: they stay up, no change is reported, each failed list is counted by its error, and once the
    list answers again they go back to it."""

    def settled_direct(rid: str) -> bool:
        doc = sim.fleet.get_json(rid) or {}
        return bool(doc.get("branch")) and doc["status"]["state"] not in ("STARTING", "DEGRADED")

    member = next(rid for rid in sim.fleet.rids if settled_direct(rid))
    model = sim.fleet.model_of(member)
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim.base_url, sim.fleet.rids, tmp_path, polling={"batch": "auto"}), tg)
        batches = mon.running.scheduler.batches
        await until(lambda: batches.group_of(member) is not None)
        sim.faults.set(fault, model)
        gets = sim.counters.by_target[member]
        await until(lambda: sim.counters.by_target[member] >= gets + 3)
        text = await mon.metrics()
        sim.faults.clear(model)
        await until(lambda: batches.group_of(member) is not None)
        tg.cancel_scope.cancel()
    assert mon.events(EventType.CHANGED) == []
    assert mon.up(member)
    counted = sample(text, "foundry_monitor_list_errors_total", error=error)
    assert counted is not None
    assert counted >= 2
