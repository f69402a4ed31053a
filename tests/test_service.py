"""End-to-end tests of the running service against the bundled simulator, over real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from monitor.config import Config, parse_config
from monitor.events import Event, EventType
from monitor.formats import CLOUDEVENT
from monitor.service import Running, Service
from monitor.simulator.faults import Fault
from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorHandle, SimulatorSettings, running_simulator

TOKEN = "svc-test-token"


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` with a bound."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def make_config(sim: SimulatorHandle, rids: list[str], state: Path, **overrides: Any) -> Config:
    polling = {
        "interval": "200ms",
        "fast_interval": "100ms",
        "jitter": 0,
        "requests_per_second": 2000,
        "concurrency": 20,
        "unreachable_after": 2,
        "staleness": "1s",
        "breaker": {"min_polls": 1000},
    }
    polling.update(overrides.pop("polling", {}))
    data: dict[str, Any] = {
        "foundry": {
            "base_url": sim.base_url,
            "auth": {"token": TOKEN},
            "timeouts": {"connect": "1s", "read": "1s", "total": "2s"},
            "retries": {"attempts": 1},
        },
        "deployments": [
            {"rid": rid, "name": f"dep-{i}", "labels": {"team": "t"}} for i, rid in enumerate(rids)
        ],
        "polling": polling,
        "server": {"listen": "127.0.0.1:0"},
        "sinks": {"stdout": False},
        "state": {"path": str(state / "monitor.sqlite3")},
    }
    data.update(overrides)
    return parse_config(data, environ={})


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    async with running_simulator(
        SimulatorSettings(size=12, seed=7, rates=Rates(), tokens=(TOKEN,))
    ) as handle:
        yield handle


class Monitor:
    """A running service and helpers to read what it emitted."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.base = f"http://127.0.0.1:{running.port}"

    def events(self, kind: EventType | None = None, rid: str | None = None) -> list[Event]:
        return [
            e
            for e in self.running.bus.recent(100_000)
            if (kind is None or e.type is kind) and (rid is None or e.rid == rid)
        ]

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(self.base + "/metrics") as response:
            return await response.text()


async def start(config: Config, tg: anyio.abc.TaskGroup) -> Monitor:
    running: Running = await tg.start(Service(config).run)
    return Monitor(running)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_each_event_type_on_its_cause(sim: SimulatorHandle, tmp_path: Path) -> None:
    """observed, changed, not_found, returned, unreachable, recovered and removed each follow their cause."""
    rids = list(sim.fleet.rids[:4])
    target, gone, flaky, dropped = rids
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim, rids, tmp_path), tg)
        await until(lambda: len(mon.events(EventType.OBSERVED)) == 4)
        await until(mon.running.scheduler.first_round_done.is_set)

        sim.fleet.set_status(target, "FAILED", False)
        await until(lambda: bool(mon.events(EventType.CHANGED, target)))
        changed = mon.events(EventType.CHANGED, target)[0]
        assert changed.new_state == "FAILED"
        assert "status.state" in {c.path for c in changed.changes}

        sim.fleet.delete(gone)
        await until(lambda: bool(mon.events(EventType.NOT_FOUND, gone)))
        sim.fleet.restore(gone)
        await until(lambda: bool(mon.events(EventType.RETURNED, gone)))

        sim.faults.set(Fault(kind="status", status=500), flaky)
        await until(lambda: bool(mon.events(EventType.UNREACHABLE, flaky)))
        assert mon.events(EventType.UNREACHABLE, flaky)[0].error == "server_error"
        sim.faults.clear(flaky)
        await until(lambda: bool(mon.events(EventType.RECOVERED, flaky)))

        mon.running.scheduler.remove(dropped)
        await until(lambda: bool(mon.events(EventType.REMOVED, dropped)))
        tg.cancel_scope.cancel()
    # A failing deployment's polls produced no change event.
    assert mon.events(EventType.CHANGED, flaky) == []
    assert len(mon.events(EventType.UNREACHABLE, flaky)) == 1


async def test_a_shaping_cloudevents_file_sink_gets_a_flap_summary_while_the_api_keeps_every_event(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """A file sink with format cloudevents and min_duration writes a short FAILED as one flapped CloudEvent
    (standing for the two changes, which /api/v1/events still has) and a notice-free recovery; a stdout
    mapping takes the same settings."""
    rids = list(sim.fleet.rids[:2])
    target = rids[0]
    path = tmp_path / "events.jsonl"
    shaping = {"format": "cloudevents", "min_duration": "1m", "recovery": True}
    sinks = {"stdout": {"format": "native"}, "file": {"path": str(path), **shaping}}
    config = make_config(sim, rids, tmp_path, sinks=sinks)

    def cloudevents() -> list[BaseCloudEvent]:
        lines = path.read_bytes().splitlines() if path.exists() else []
        return [from_http(HTTPMessage({"content-type": CLOUDEVENT}, line), JSONFormat()) for line in lines]

    async with anyio.create_task_group() as tg:
        mon = await start(config, tg)
        await until(lambda: len(cloudevents()) == 2)
        sim.fleet.set_status(target, "FAILED", False)
        await until(lambda: bool(mon.events(EventType.CHANGED, target)))
        sim.fleet.set_status(target, "ACTIVE", True)
        await until(lambda: len(mon.events(EventType.CHANGED, target)) == 2)
        await until(lambda: len(cloudevents()) == 3)
        tg.cancel_scope.cancel()
    written = cloudevents()
    assert [e.get_type() for e in written] == [
        "com.palantir.foundry.live-deployment.observed.v1",
        "com.palantir.foundry.live-deployment.observed.v1",
        "com.palantir.foundry.live-deployment.flapped.v1",
    ]
    flapped = written[2]
    assert flapped.get_subject() == target
    assert flapped.get_data()["event_ids"] == [e.event_id for e in mon.events(EventType.CHANGED, target)]
    assert flapped.get_data()["states"] == ["ACTIVE", "FAILED", "ACTIVE"]


async def test_failed_polls_of_every_kind_never_report_a_change(sim: SimulatorHandle, tmp_path: Path) -> None:
    """HTML pages, truncated JSON, wrong shapes and resets end as errors, not as changes."""
    rids = list(sim.fleet.rids[:3])
    victim = rids[0]
    async with anyio.create_task_group() as tg:
        # The faults strike a deployment's own GET: no list batching.
        mon = await start(make_config(sim, rids, tmp_path, polling={"batch": "off"}), tg)
        await until(mon.running.scheduler.first_round_done.is_set)
        for fault in (
            Fault(kind="html"),
            Fault(kind="truncate"),
            Fault(kind="wrong_shape", shape="missing_status"),
            Fault(kind="wrong_shape", shape="wrong_types"),
            Fault(kind="reset"),
        ):
            before = sum(mon.running.tracker.records[victim].errors.values())
            sim.faults.set(fault, victim)
            await until(lambda b=before: sum(mon.running.tracker.records[victim].errors.values()) >= b + 2)
        sim.faults.clear(victim)
        await until(lambda: mon.running.tracker.records[victim].up)
        text = await mon.metrics()
        tg.cancel_scope.cancel()
    assert mon.events(EventType.CHANGED, victim) == []
    errors = mon.running.tracker.records[victim].errors
    assert {"not_json", "wrong_shape", "connection"} <= set(errors)
    assert sample(text, "foundry_live_deployment_poll_errors_total", rid=victim, error="wrong_shape")


async def test_direct_deployments_are_refreshed_by_one_list_and_pinned_ones_by_their_get(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """With ``batch: auto`` (the default), after their first GET a model's direct deployments are refreshed
    by one list request per round and send no GET; the pinned one keeps its GET; a change made in the
    simulator to a direct one arrives as the same ``deployment.changed`` event; the demand is exported."""
    first = sim.fleet.add(state="ACTIVE", is_ready=True)
    model = sim.fleet.model_of(first)
    second = sim.fleet.add(model_rid=model, state="ACTIVE", is_ready=True)
    pinned = sim.fleet.add(model_rid=model, branch=None, state="ACTIVE", is_ready=True)
    counters = sim.counters
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim, [first, second, pinned], tmp_path), tg)
        await until(lambda: len(mon.running.scheduler.batches) == 1)
        counters.reset()
        await until(lambda: counters.by_target[model] >= 3 and counters.by_target[pinned] >= 3)
        assert counters.by_target[first] == counters.by_target[second] == 0
        sim.fleet.set_status(second, "FAILED", False)
        await until(lambda: bool(mon.events(EventType.CHANGED, second)))
        text = await mon.metrics()
        tg.cancel_scope.cancel()
    (changed,) = mon.events(EventType.CHANGED, second)
    assert (changed.old_state, changed.new_state) == ("ACTIVE", "FAILED")
    assert "\nfoundry_monitor_request_demand_ratio " in text
    assert sample(text, "foundry_monitor_effective_interval_seconds", cadence="interval") == 0.2


async def test_a_sub_scrape_failed_blip_is_counted(sim: SimulatorHandle, tmp_path: Path) -> None:
    """ACTIVE -> FAILED -> ACTIVE between two scrapes leaves its mark in state_transitions_total."""
    rid = next(r for r in sim.fleet.rids if sim.fleet.get_json(r)["status"]["state"] == "ACTIVE")  # type: ignore[index]
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim, [rid], tmp_path), tg)
        await until(mon.running.scheduler.first_round_done.is_set)
        sim.fleet.set_status(rid, "FAILED", False)
        await until(lambda: bool(mon.events(EventType.CHANGED, rid)))
        sim.fleet.set_status(rid, "ACTIVE", True)
        await until(lambda: len(mon.events(EventType.CHANGED, rid)) == 2)
        text = await mon.metrics()
        tg.cancel_scope.cancel()
    transitions = "foundry_live_deployment_state_transitions_total"
    assert sample(text, transitions, rid=rid, from_state="ACTIVE", to_state="FAILED") == 1
    assert sample(text, transitions, rid=rid, from_state="FAILED", to_state="ACTIVE") == 1
    assert sample(text, "foundry_live_deployment_state", rid=rid, state="ACTIVE") == 1


async def test_removed_series_vanish_and_stale_data_is_dropped(sim: SimulatorHandle, tmp_path: Path) -> None:
    """A removed deployment leaves /metrics; one whose answers stop goes stale: no state series, up 0."""
    rids = list(sim.fleet.rids[:2])
    removed, stalled = rids
    async with anyio.create_task_group() as tg:
        # The hang strikes the deployment's own GET: no list batching.
        mon = await start(make_config(sim, rids, tmp_path, polling={"batch": "off"}), tg)
        await until(mon.running.scheduler.first_round_done.is_set)
        text = await mon.metrics()
        assert sample(text, "foundry_live_deployment_up", rid=removed) == 1
        mon.running.scheduler.remove(removed)
        text = await mon.metrics()
        assert removed not in text
        sim.faults.set(Fault(kind="hang"), stalled)
        # staleness is 1s: wait until the state series are gone.
        await until(lambda: mon.running.tracker.records[stalled].last_success is not None)
        deadline_text = ""
        with anyio.fail_after(10):
            while True:
                deadline_text = await mon.metrics()
                if sample(deadline_text, "foundry_live_deployment_state", rid=stalled) is None:
                    break
                await anyio.sleep(0.1)
        sim.faults.clear(stalled)
        tg.cancel_scope.cancel()
    assert sample(deadline_text, "foundry_live_deployment_up", rid=stalled) == 0
    assert sample(deadline_text, "foundry_live_deployment_ready", rid=stalled) is None


async def test_discovery_follows_a_model_as_deployments_come_and_go(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """A model's new deployment is observed; a deleted one is removed from the watch list."""
    model = sim.fleet.model_of(sim.fleet.rids[0])
    config = make_config(sim, [], tmp_path, discover=[{"model_rid": model, "interval": "200ms"}])
    async with anyio.create_task_group() as tg:
        mon = await start(config, tg)
        listed = set(sim.fleet.deployments_of(model))
        await until(lambda: listed <= set(mon.running.tracker.records))
        new = sim.fleet.add(model_rid=model)
        await until(lambda: bool(mon.events(EventType.OBSERVED, new)))
        victim = sorted(listed)[0]
        sim.fleet.delete(victim)
        await until(lambda: bool(mon.events(EventType.REMOVED, victim)))
        tg.cancel_scope.cancel()
    assert victim not in mon.running.tracker.records


async def test_a_dead_webhook_does_not_slow_polling(sim: SimulatorHandle, tmp_path: Path) -> None:
    """With a webhook that never answers, polls go on at their interval and the sink's queue bounds itself
    without dropping anything (the rest waits in the outbox)."""
    rids = list(sim.fleet.rids[:5])

    async def hang(request: aiohttp.web.Request) -> aiohttp.web.Response:
        await anyio.sleep_forever()
        raise AssertionError

    app = aiohttp.web.Application()
    app.router.add_post("/hook", hang)
    # The handler never returns: a short shutdown timeout keeps the clean-up from waiting on it.
    runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
    hook = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        # Polls are counted as each deployment's own GETs: no list batching.
        config = make_config(
            sim,
            rids,
            tmp_path,
            polling={"batch": "off"},
            sinks={"stdout": False, "webhooks": [{"url": hook, "timeout": "30s", "queue_size": 3}]},
        )
        async with anyio.create_task_group() as tg:
            mon = await start(config, tg)
            await until(mon.running.scheduler.first_round_done.is_set)
            start_counts = {rid: sim.counters.by_target[rid] for rid in rids}
            begun = anyio.current_time()
            await until(lambda: all(sim.counters.by_target[r] >= start_counts[r] + 5 for r in rids))
            elapsed = anyio.current_time() - begun
            tg.cancel_scope.cancel()
    finally:
        await runner.cleanup()
    # Five polls at a 200 ms interval: about one second; far below the webhook's 30 s timeout.
    assert elapsed < 5.0
    # The events that do not fit the queue wait in the outbox instead of being dropped.
    sample = mon.running.metrics.registry.get_sample_value
    assert sample("foundry_monitor_sink_queue_length", {"sink": "webhook[0]"}) == 3
    assert sample("foundry_monitor_sink_dropped_events_total", {"sink": "webhook[0]"}) == 0
    assert sample("foundry_monitor_sink_outbox_backlog", {"sink": "webhook[0]"}) == 2


async def test_metrics_show_every_family(sim: SimulatorHandle, tmp_path: Path) -> None:
    """After the first round, /metrics carries every per-deployment and per-process family."""
    rids = list(sim.fleet.rids)
    async with anyio.create_task_group() as tg:
        mon = await start(make_config(sim, rids, tmp_path), tg)
        await until(mon.running.scheduler.first_round_done.is_set)
        sim.fleet.set_status(rids[0], "DEGRADED", True)
        await until(lambda: bool(mon.events(EventType.CHANGED, rids[0])))
        text = await mon.metrics()
        tg.cancel_scope.cancel()
    for family in (
        "foundry_live_deployment_state",
        "foundry_live_deployment_ready",
        "foundry_live_deployment_info",
        "foundry_live_deployment_min_replicas",
        "foundry_live_deployment_max_replicas",
        "foundry_live_deployment_cpu_cores",
        "foundry_live_deployment_memory_bytes",
        "foundry_live_deployment_threads",
        "foundry_live_deployment_state_transitions_total",
        "foundry_live_deployment_changes_total",
        "foundry_live_deployment_last_change_timestamp_seconds",
        "foundry_live_deployment_last_poll_success_timestamp_seconds",
        "foundry_live_deployment_up",
        "foundry_live_deployment_found",
        "foundry_monitor_build_info",
        "foundry_monitor_deployments",
        "foundry_monitor_poll_duration_seconds_bucket",
        "foundry_monitor_schedule_lag_seconds_bucket",
        "foundry_monitor_requests_total",
        "foundry_monitor_events_total",
        "foundry_monitor_circuit_breaker_state",
    ):
        assert f"\n{family}{{" in text or f"\n{family} " in text, family
    assert "\nfoundry_monitor_deployments 12.0" in text
