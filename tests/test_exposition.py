"""Tests for monitor.exposition and monitor.metrics: what /metrics says, in both formats."""

from __future__ import annotations

import dataclasses
import gzip

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from monitor.errors import LiveDeploymentNotFound, RequestTimeout
from monitor.exposition import DeploymentRenderer
from monitor.metrics import OPENMETRICS_TYPE, TEXT_TYPE, MetricsView, ProcessMetrics
from monitor.model import Gpu, LiveDeployment, ModelVersion, RuntimeConfiguration
from monitor.rollouts import Rollouts
from monitor.tracker import Target, Tracker

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
OTHER = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000002"
SNAPSHOT = LiveDeployment(
    rid=RID,
    model_rid="ri.models.main.model.1",
    model_version_rid="ri.models.main.model-version.1",
    runtime=RuntimeConfiguration(
        min_replicas=0,
        max_replicas=4,
        cpu=2.5,
        memory="1GiB",
        memory_bytes=1 << 30,
        gpu=Gpu(1, "A10G"),
        thread_count=16,
        environment=(("API_KEY", "hmac-sha256:0011"),),
    ),
    state="ACTIVE",
    is_ready=False,
    branch="master",
)


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _setup(staleness: float = 90.0) -> tuple[Tracker, MetricsView, Clock]:
    tracker = Tracker(unreachable_after=2)
    tracker.add(Target(RID, 'scorer "blue"', (("team", "risk"),)))
    tracker.add(Target(OTHER, "other", ()))
    clock = Clock(1000.0)
    view = MetricsView(ProcessMetrics(), tracker, label_names=("team",), staleness=staleness, clock=clock)
    return tracker, view, clock


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for f in parse_text(text) for s in f.samples}


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    for (sample_name, sample_labels), value in samples.items():
        if sample_name == name and set(labels.items()) <= sample_labels:
            return value
    return None


def test_every_per_deployment_family_is_rendered_and_parses() -> None:
    """A polled deployment shows state, readiness, info, resources, up, found and timestamps."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 1000.0)
    samples = _samples(view.render(openmetrics=False))
    p = "foundry_live_deployment_"
    assert _value(samples, p + "state", rid=RID, state="ACTIVE") == 1
    assert _value(samples, p + "state", rid=RID, state="FAILED") == 0
    assert _value(samples, p + "state", rid=RID, state="UNKNOWN") == 0
    assert _value(samples, p + "ready", rid=RID) == 0
    assert _value(samples, p + "info", rid=RID, model_version_rid="ri.models.main.model-version.1") == 1
    assert _value(samples, p + "min_replicas", rid=RID) == 0
    assert _value(samples, p + "max_replicas", rid=RID) == 4
    assert _value(samples, p + "cpu_cores", rid=RID) == 2.5
    assert _value(samples, p + "memory_bytes", rid=RID) == 1 << 30
    assert _value(samples, p + "threads", rid=RID) == 16
    assert _value(samples, p + "gpus", rid=RID, gpu_type="A10G") == 1
    assert _value(samples, p + "up", rid=RID, deployment='scorer "blue"', team="risk") == 1
    assert _value(samples, p + "found", rid=RID) == 1
    assert _value(samples, p + "last_poll_success_timestamp_seconds", rid=RID) == 1000.0
    assert _value(samples, "foundry_monitor_deployments") == 2
    assert _value(samples, "foundry_monitor_build_info") == 1
    # Never polled: up 0 and no state series; the static label is present but empty.
    assert _value(samples, p + "up", rid=OTHER, team="") == 0
    assert _value(samples, p + "state", rid=OTHER) is None


def test_transition_and_change_counters_survive_a_blip() -> None:
    """A FAILED between two scrapes remains visible in state_transitions_total."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 998.0)
    tracker.observe(RID, dataclasses.replace(SNAPSHOT, state="FAILED"), 999.0)
    tracker.observe(RID, SNAPSHOT, 1000.0)
    samples = _samples(view.render(openmetrics=False))
    name = "foundry_live_deployment_state_transitions_total"
    assert _value(samples, name, rid=RID, from_state="ACTIVE", to_state="FAILED") == 1
    assert _value(samples, name, rid=RID, from_state="FAILED", to_state="ACTIVE") == 1
    assert _value(samples, "foundry_live_deployment_changes_total", rid=RID, field="status.state") == 2
    assert _value(samples, "foundry_live_deployment_state", rid=RID, state="ACTIVE") == 1


def test_poll_errors_and_not_found() -> None:
    """Errors are counted by kind; a 404 sets found 0 and drops the state series."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 1000.0)
    tracker.fail(RID, RequestTimeout("t"), 1000.0)
    samples = _samples(view.render(openmetrics=False))
    assert _value(samples, "foundry_live_deployment_poll_errors_total", rid=RID, error="timeout") == 1
    assert _value(samples, "foundry_live_deployment_up", rid=RID) == 0
    tracker.fail(RID, LiveDeploymentNotFound("gone", status=404), 1000.0)
    samples = _samples(view.render(openmetrics=False))
    assert _value(samples, "foundry_live_deployment_found", rid=RID) == 0
    assert _value(samples, "foundry_live_deployment_state", rid=RID) is None


def test_stale_data_is_not_served_as_current() -> None:
    """Past the staleness limit the state series go and up reads 0, though the cache was warm."""
    tracker, view, clock = _setup(staleness=60.0)
    tracker.observe(RID, SNAPSHOT, 1000.0)
    assert (
        _value(_samples(view.render(openmetrics=False)), "foundry_live_deployment_state", rid=RID) is not None
    )
    clock.now = 1061.0
    samples = _samples(view.render(openmetrics=False))
    assert _value(samples, "foundry_live_deployment_state", rid=RID) is None
    assert _value(samples, "foundry_live_deployment_ready", rid=RID) is None
    assert _value(samples, "foundry_live_deployment_up", rid=RID) == 0


def test_series_of_a_removed_deployment_vanish() -> None:
    """After remove(), no sample names the RID."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 1000.0)
    assert RID in view.render(openmetrics=False)
    tracker.remove(RID, 1001.0)
    assert RID not in view.render(openmetrics=False)


def test_openmetrics_is_valid_and_ends_with_eof() -> None:
    """The OpenMetrics rendering parses with the reference parser and carries no timestamps."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 1000.0)
    tracker.observe(RID, dataclasses.replace(SNAPSHOT, state="DEGRADED"), 1000.0)
    text = view.render(openmetrics=True)
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["foundry_live_deployment_state_transitions"].type == "counter"
    assert all(s.timestamp is None for f in families.values() for s in f.samples)


def test_scrape_negotiates_format_and_gzip() -> None:
    """Accept picks OpenMetrics; Accept-Encoding gzip compresses; the default is plain text."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 1000.0)
    plain = view.scrape()
    assert plain.content_type == TEXT_TYPE
    assert plain.content_encoding is None
    om = view.scrape(accept="application/openmetrics-text; version=1.0.0", accept_encoding="gzip, deflate")
    assert om.content_type == OPENMETRICS_TYPE
    assert om.content_encoding == "gzip"
    assert gzip.decompress(b"".join(om.body)).decode().endswith("# EOF\n")
    assert f'foundry_live_deployment_up{{rid="{RID}"' in b"".join(plain.body).decode()


def test_a_scrape_shows_the_records_as_they_were_when_it_began() -> None:
    """Polls that land while a scrape is being sent do not mix into it: every family agrees."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 1000.0)
    pieces = view.chunks(openmetrics=False)
    tracker.observe(RID, dataclasses.replace(SNAPSHOT, state="FAILED"), 1000.5)
    tracker.fail(OTHER, RequestTimeout("slow"), 1000.5)
    samples = _samples("".join(pieces))
    assert _value(samples, "foundry_live_deployment_state", rid=RID, state="ACTIVE") == 1
    assert _value(samples, "foundry_live_deployment_state", rid=RID, state="FAILED") == 0
    assert _value(samples, "foundry_live_deployment_state_transitions_total", rid=RID) is None
    assert _value(samples, "foundry_live_deployment_poll_errors_total", rid=OTHER) is None


def test_chunks_of_any_size_make_the_same_payload() -> None:
    """A fleet rendered a few deployments per chunk reads exactly as one rendered in a single chunk."""
    tracker = Tracker()
    for index in range(7):
        rid = RID[:-2] + f"{index:02d}"
        tracker.add(Target(rid, f"d{index}", (("team", "risk"),)))
        tracker.observe(rid, dataclasses.replace(SNAPSHOT, rid=rid), 1000.0)
        if index % 2:
            tracker.fail(rid, RequestTimeout("slow"), 1001.0)
    whole = DeploymentRenderer(("team",))
    small = DeploymentRenderer(("team",), chunk_size=400)
    rows = small.capture(tracker, now=1002.0, staleness=90.0)
    pieces = list(small.chunks(rows, openmetrics=False))
    bigger = list(whole.chunks(rows, openmetrics=False))
    assert len(pieces) > len(bigger)
    assert max(map(len, pieces)) < max(map(len, bigger))
    assert "".join(pieces) == whole.render(tracker, now=1002.0, staleness=90.0, openmetrics=False)


def test_no_secret_digest_or_value_in_metrics() -> None:
    """Environment variables show up neither by value nor by digest in /metrics."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 1000.0)
    assert "hmac-sha256" not in view.render(openmetrics=False)


def test_label_values_are_escaped() -> None:
    """Quotes in a friendly name are escaped so the exposition stays parseable."""
    tracker, view, _ = _setup()
    tracker.observe(RID, SNAPSHOT, 1000.0)
    assert 'deployment="scorer \\"blue\\""' in view.render(openmetrics=False)


def test_rollout_lag_families_show_direct_deployments_and_each_branch_newest_version() -> None:
    """A direct deployment behind shows version_behind 1 and the seconds since the newer version; one on
    the newest shows 0 and 0; a pinned one has neither; each listed branch has one latest_version_info.
    Both formats parse."""
    tracker = Tracker()
    pinned = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000003"
    for rid in (RID, OTHER, pinned):
        tracker.add(Target(rid, rid[-4:]))
    tracker.observe(RID, SNAPSHOT, 1000.0)
    tracker.observe(
        OTHER, dataclasses.replace(SNAPSHOT, rid=OTHER, model_version_rid="ri.models.main.v.2"), 1000.0
    )
    tracker.observe(pinned, dataclasses.replace(SNAPSHOT, rid=pinned, branch=None), 1000.0)
    rollouts = Rollouts(grace=60.0)
    rollouts.listed(("ri.models.main.model.1", "master"), [ModelVersion("ri.models.main.v.2", 940.0)])
    clock = Clock(1000.0)
    view = MetricsView(
        ProcessMetrics(), tracker, label_names=(), staleness=90.0, latest=lambda: rollouts.latest, clock=clock
    )
    rollouts.check(tracker, 1000.0)
    clock.now = 1010.5
    text = view.render(openmetrics=False)
    samples = _samples(text)
    p = "foundry_live_deployment_"
    assert _value(samples, p + "version_behind", rid=RID) == 1
    assert _value(samples, p + "version_behind_seconds", rid=RID) == 70.5
    assert _value(samples, p + "version_behind", rid=OTHER) == 0
    assert _value(samples, p + "version_behind_seconds", rid=OTHER) == 0
    assert _value(samples, p + "version_behind", rid=pinned) is None
    assert _value(samples, p + "version_behind_seconds", rid=pinned) is None
    info = "foundry_model_branch_latest_version_info"
    labels = {
        "model_rid": "ri.models.main.model.1",
        "branch": "master",
        "model_version_rid": "ri.models.main.v.2",
    }
    assert _value(samples, info, **labels) == 1
    assert sum(1 for name, _ in samples if name == info) == 1
    om = {f.name: f for f in parse_openmetrics(view.render(openmetrics=True))}
    assert p + "version_behind" in om
    rollouts.keep(())
    assert _value(_samples(view.render(openmetrics=False)), info) is None
