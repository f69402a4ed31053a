"""Tests for the deployment artifacts: Prometheus rules, Alertmanager, Grafana, Kubernetes, Docker and systemd.

promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages; without them these tests
skip, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy_tools import (
    DEPLOY,
    ROOT,
    Matcher,
    dockerfile_instructions,
    dockerignore_allows,
    exported_metric_names,
    inhibited,
    json_differences,
    load_script,
    load_yaml,
    promql_metric_names,
    recording_rule_names,
    require_module,
    require_tool,
    route,
    rules_of,
    run,
    sdk_dashboard_problems,
    strategic_merge,
    unit_entries,
)

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules.yml"
RULE_TESTS = PROMETHEUS / "rules.test.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
ROUTE_CASES = DEPLOY / "alertmanager" / "routes.test.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "foundry-monitor.json"
DASHBOARD_ROWS = ("Overview", "Fleet", "Polling", "Events and sinks", "Replicas and shards", "Process")
KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = {name: KUBERNETES / "overlays" / name for name in ("example", "ha")}
OVERLAY = OVERLAYS["example"]
HA = OVERLAYS["ha"]
RUNBOOKS = ROOT / "docs" / "runbooks.md"
UNIT = DEPLOY / "systemd" / "foundry-monitor.service"
RUNBOOK_BASE = "https://github.com/example/foundry-monitor/blob/main/docs/runbooks.md"
JOB = "foundry-monitor"
PORT = 9708
K8S_VERSION = "1.31"
SEVERITIES = {"critical", "warning", "info"}
RECEIVER_BY_SEVERITY = {"critical": "critical", "warning": "default", "info": "info"}
# Alerts about a whole scrape job: they carry neither an instance nor a rid.
JOB_ALERTS = frozenset({"FoundryMonitorAbsent", "FoundryMonitorBlind", "FoundryMonitorDeploymentsUnowned"})
# Notified once per job, not per instance: one database outage is one incident.
GROUPED_BY_JOB = frozenset({"FoundryMonitorDatabaseDown"})
REPLICAS_PAGE = ROOT / "docs" / "replicas.md"
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


@pytest.fixture(scope="module")
def rule_file() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(RULES)
    return document


@pytest.fixture(scope="module")
def alerts(rule_file: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for rule in rules_of(rule_file) if "alert" in rule]


@pytest.fixture(scope="module")
def exported() -> frozenset[str]:
    return exported_metric_names()


def _is_per_deployment(name: str) -> bool:
    return name.startswith("FoundryDeployment") or name == "FoundryMonitorDataStale"


def _alert_labels(
    alert: dict[str, Any], rid: str = "ri.foundry-ml-live.main.live-deployment.1"
) -> dict[str, str]:
    """The labels an alert of this rule carries when it fires: the per-deployment ones a rid and no instance
    (a deployment keeps its alerts when it moves between replicas), those about a process its instance."""
    name = alert["alert"]
    labels = {"alertname": name, "severity": alert["labels"]["severity"], "job": JOB}
    if _is_per_deployment(name):
        labels["rid"] = rid
    elif name not in JOB_ALERTS:
        labels["instance"] = "10.0.0.7:9708"
    return labels


# --- Prometheus ------------------------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    """promtool (2.42, Debian bookworm's) finds every rule in rules.yml valid."""
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    """Every case of rules.test.yml passes under `promtool test rules`."""
    promtool = require_tool("promtool")
    result = run([promtool, "test", "rules", str(RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_is_valid_with_and_without_tls(tmp_path: Path) -> None:
    """The example scrape configuration passes `promtool check config`, and so does its commented TLS and
    basic-auth variant once uncommented."""
    promtool = require_tool("promtool")
    text = (PROMETHEUS / "scrape-config.yml").read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^(    )# ((?: {2})*[a-z_]+:(?: |$))", r"\1\2", text)
    assert "basic_auth:" in uncommented.replace("# basic_auth:", "")
    shutil.copy(RULES, tmp_path / "rules.yml")
    for name, content in (("plain.yml", text), ("tls.yml", uncommented)):
        (tmp_path / name).write_text(content, encoding="utf-8")
        result = run([promtool, "check", "config", str(tmp_path / name)])
        assert result.returncode == 0, name + result.stdout + result.stderr
    scrape = yaml.safe_load(text)["scrape_configs"]
    assert [job["job_name"] for job in scrape] == [JOB]


def test_every_alert_has_a_firing_and_a_quiet_unit_test(alerts: list[dict[str, Any]]) -> None:
    """rules.test.yml has, for every alert, a case where it fires and one where it stays silent."""
    tests = load_yaml(RULE_TESTS)["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in tests:
        for case in group.get("alert_rule_test", ()):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {alert["alert"] for alert in alerts}
    assert names - firing == set()
    assert names - quiet == set()
    assert {"healthy fleet", "monitor restart"} <= {group.get("name") for group in tests}


def test_alert_label_model_matches_the_rule_tests(alerts: list[dict[str, Any]]) -> None:
    """The label sets the routing checks below assume are the ones the alerts fire with in rules.test.yml:
    an instance exactly on the alerts about a process, a rid exactly on the per-deployment ones, never a pod."""
    by_name = {alert["alert"]: alert for alert in alerts}
    seen: set[str] = set()
    for group in load_yaml(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", ()):
            for expected in case.get("exp_alerts") or ():
                name = case["alertname"]
                modelled = _alert_labels(by_name[name])
                fired = expected["exp_labels"]
                assert ("instance" in fired) == ("instance" in modelled), name
                assert ("rid" in fired) == ("rid" in modelled), name
                assert "pod" not in fired, name
                seen.add(name)
    assert seen == set(by_name)


def test_alerts_carry_severity_and_annotations(alerts: list[dict[str, Any]]) -> None:
    """Every alert has a severity of critical, warning or info, a summary, a description and a runbook link
    to its own section of docs/runbooks.md."""
    assert alerts
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, name
        annotations = alert["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"


def test_runbooks_have_one_section_per_alert(alerts: list[dict[str, Any]]) -> None:
    """docs/runbooks.md has a `## <AlertName>` section (anchor: the name in lower case) for every alert, and
    no section for an alert that does not exist."""
    text = RUNBOOKS.read_text(encoding="utf-8")
    sections = set(re.findall(r"(?m)^## (Foundry\w+)\s*$", text))
    assert sections == {alert["alert"] for alert in alerts}
    for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
        assert anchor in {name.lower() for name in sections} | {"tools-used-below"}, anchor


def test_rule_expressions_read_exported_metrics(rule_file: dict[str, Any], exported: frozenset[str]) -> None:
    """Every metric a rule reads is one the service exports (taken from monitor.exposition and
    monitor.metrics), and every recording rule read is defined."""
    records = {rule["record"] for rule in rules_of(rule_file) if "record" in rule}
    read: set[str] = set()
    for rule in rules_of(rule_file):
        names = promql_metric_names(rule["expr"])
        assert names - exported == set(), rule.get("alert") or rule.get("record")
        read |= names
        assert recording_rule_names(rule["expr"]) <= records
    assert {"foundry_live_deployment_state", "foundry_monitor_requests_total"} <= read
    assert {"foundry_monitor_unowned_deployments", "foundry_monitor_database_up"} <= read


def test_per_deployment_rules_are_handover_safe(rule_file: dict[str, Any]) -> None:
    """No alert about a deployment reads a per-deployment series directly but through the deployment:
    recording rules, or aggregates it without the replica's instance and pod; every deployment: rule drops
    both and bridges a gap with last_over_time."""
    for rule in rules_of(rule_file):
        expr = " ".join(rule["expr"].split())
        series = {name for name in promql_metric_names(expr) if name.startswith("foundry_live_deployment_")}
        if rule.get("record", "").startswith("deployment:"):
            assert len(series) == 1, rule["record"]
            assert expr.count("without (instance, pod)") == 2, rule["record"]
            assert "last_over_time(" in expr, rule["record"]
        elif series and _is_per_deployment(rule.get("alert", "")):
            assert "without (instance, pod" in expr, rule["alert"]


def test_replica_page_names_what_exists(alerts: list[dict[str, Any]], exported: frozenset[str]) -> None:
    """docs/replicas.md names only alerts of rules.yml, runbook sections that exist and metrics the service
    exports (or the replica set's own), and quotes the ha overlay's rollout settings as they are."""
    text = REPLICAS_PAGE.read_text(encoding="utf-8")
    names = {alert["alert"] for alert in alerts}
    mentioned = set(re.findall(r"\bFoundry(?:Monitor|Deployment)[A-Z]\w+", text))
    assert mentioned - names == set()
    assert {"FoundryMonitorDeploymentsUnowned", "FoundryMonitorDatabaseDown"} <= mentioned
    for anchor in re.findall(r"\(runbooks\.md#([a-z0-9-]+)\)", text):
        assert anchor in {name.lower() for name in names}, anchor
    metrics = set(re.findall(r"`(foundry_(?:monitor|live_deployment)_\w+)`", text))
    assert metrics - exported == set()
    spec = _overlay_deployment(HA)["spec"]
    assert f"`minReadySeconds` ({spec['minReadySeconds']})" in text
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert f"`terminationGracePeriodSeconds` ({grace})" in text


def test_helpers_see_metric_names_in_promql() -> None:
    """The metric-name extraction the checks rely on skips label values and recording rule names."""
    expr = 'a:foundry_x:rate5m / sum(rate(foundry_y_total{job="foundry_z"}[5m])) and process_open_fds'
    assert promql_metric_names(expr) == {"foundry_y_total", "process_open_fds"}
    assert recording_rule_names(expr) == {"a:foundry_x:rate5m"}


# --- Alertmanager ----------------------------------------------------------------------------------------


def test_amtool_accepts_the_configuration() -> None:
    """`amtool check-config` accepts alertmanager.yml."""
    amtool = require_tool("amtool")
    result = run([amtool, "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_routing_examples() -> None:
    """Each example of routes.test.yml reaches its receiver (checked by amtool) with its grouping."""
    amtool = require_tool("amtool")
    tree = load_yaml(ALERTMANAGER)["route"]
    for case in load_yaml(ROUTE_CASES):
        labels = {name: str(value) for name, value in case["labels"].items()}
        pairs = [f"{name}={value}" for name, value in labels.items()]
        result = run(
            [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
             f"--verify.receivers={case['receiver']}", *pairs]
        )  # fmt: skip
        assert result.returncode == 0, f"{labels}: {result.stdout}{result.stderr}"
        routed = route(tree, labels)
        assert routed.receiver == case["receiver"]
        assert routed.group_by == tuple(case["group_by"]), labels


def test_every_alert_routes_by_severity(alerts: list[dict[str, Any]]) -> None:
    """Critical alerts page, warnings go to the default receiver, info to its own; deployment alerts are
    grouped per deployment, the monitor's own per monitor instance, a database outage per job."""
    tree = load_yaml(ALERTMANAGER)["route"]
    for alert in alerts:
        labels = _alert_labels(alert)
        routed = route(tree, labels)
        assert routed.receiver == RECEIVER_BY_SEVERITY[labels["severity"]], alert["alert"]
        if alert["alert"].startswith("FoundryDeployment"):
            assert routed.group_by == ("alertname", "rid"), alert["alert"]
        elif alert["alert"] in GROUPED_BY_JOB:
            assert routed.group_by == ("alertname", "job"), alert["alert"]
        else:
            assert routed.group_by == ("alertname", "job", "instance"), alert["alert"]


def test_monitor_outages_mute_deployment_alerts(alerts: list[dict[str, Any]]) -> None:
    """While no monitor process of the job is up (a single monitor down is that too), none is deployed, or
    one has no fresh data for a deployment, that deployment's alerts are muted; one shard or replica down
    (FoundryMonitorDown) mutes none of them, as the others still watch theirs, and neither does a replica
    down whose deployments the others took over, a monitor of another job, or another deployment's stale
    data."""
    rules = load_yaml(ALERTMANAGER)["inhibit_rules"]
    by_name = {alert["alert"]: alert for alert in alerts}
    down = _alert_labels(by_name["FoundryMonitorDown"])
    blind = _alert_labels(by_name["FoundryMonitorBlind"])
    replica_down = _alert_labels(by_name["FoundryMonitorReplicaDown"])
    absent = _alert_labels(by_name["FoundryMonitorAbsent"])
    stale = _alert_labels(by_name["FoundryMonitorDataStale"])
    stale_other = _alert_labels(
        by_name["FoundryMonitorDataStale"], rid="ri.foundry-ml-live.main.live-deployment.2"
    )
    deployment_alerts = [alert for alert in alerts if alert["alert"].startswith("FoundryDeployment")]
    assert len(deployment_alerts) >= 7
    for alert in deployment_alerts:
        target = _alert_labels(alert)
        elsewhere = {**target, "job": "other-monitor"}
        assert inhibited(rules, target, [down, blind]), alert["alert"]
        assert inhibited(rules, target, [absent]), alert["alert"]
        assert inhibited(rules, target, [stale]), alert["alert"]
        assert not inhibited(rules, target, [down]), alert["alert"]
        assert not inhibited(rules, target, [stale_other]), alert["alert"]
        assert not inhibited(rules, target, [replica_down]), alert["alert"]
        assert not inhibited(rules, elsewhere, [down, blind, absent, stale]), alert["alert"]
    assert inhibited(rules, stale, [blind])
    assert not inhibited(rules, stale, [down])
    assert not inhibited(rules, stale, [replica_down])


def test_known_causes_mute_their_symptoms_only(alerts: list[dict[str, Any]]) -> None:
    """An open circuit breaker or failing authentication mutes the error-ratio alert of the same instance
    only, and the stale-data alert (which carries no instance) of the same job only; a down replica mutes its
    own polling alerts only. With every alert firing at once, the down, blind, absent and replica set alerts
    still notify; with every alert but those of a monitor that is down, so do the breaker and authentication
    alerts."""
    rules = load_yaml(ALERTMANAGER)["inhibit_rules"]
    firing = [_alert_labels(alert) for alert in alerts]
    by_name = {labels["alertname"]: labels for labels in firing}
    for cause in ("FoundryMonitorCircuitBreakerOpen", "FoundryMonitorAuthFailing"):
        for symptom in ("FoundryMonitorDataStale", "FoundryMonitorPollErrorRatioHigh"):
            assert inhibited(rules, by_name[symptom], [by_name[cause]]), (cause, symptom)
        other = {**by_name[cause], "instance": "10.0.0.8:9708"}
        assert not inhibited(rules, by_name["FoundryMonitorPollErrorRatioHigh"], [other]), cause
        other_job = {**by_name[cause], "job": "other-monitor"}
        assert not inhibited(rules, by_name["FoundryMonitorDataStale"], [other_job]), cause
    replica_down = by_name["FoundryMonitorReplicaDown"]
    assert inhibited(rules, by_name["FoundryMonitorCircuitBreakerOpen"], [replica_down])
    other_replica = {**replica_down, "instance": "10.0.0.8:9708"}
    assert not inhibited(rules, by_name["FoundryMonitorCircuitBreakerOpen"], [other_replica])
    for name in (
        "FoundryMonitorDown",
        "FoundryMonitorBlind",
        "FoundryMonitorAbsent",
        "FoundryMonitorReplicaDown",
        "FoundryMonitorDeploymentsUnowned",
        "FoundryMonitorDatabaseDown",
        "FoundryMonitorStateEventsDropped",
    ):
        assert not inhibited(rules, by_name[name], firing), name
    reachable = [
        labels
        for labels in firing
        if labels["alertname"]
        not in {
            "FoundryMonitorDown",
            "FoundryMonitorBlind",
            "FoundryMonitorAbsent",
            "FoundryMonitorReplicaDown",
        }
    ]
    for name in ("FoundryMonitorCircuitBreakerOpen", "FoundryMonitorAuthFailing"):
        assert not inhibited(rules, by_name[name], reachable), name


def test_matcher_helper_reads_alertmanager_semantics() -> None:
    """The helper's matchers are anchored regular expressions and read a missing label as empty, as
    Alertmanager does."""
    assert Matcher.parse('alertname=~"Foundry.+"').matches({"alertname": "FoundryX"})
    assert not Matcher.parse('alertname=~"Foundry"').matches({"alertname": "FoundryX"})
    assert Matcher.parse('rid=""').matches({})
    assert Matcher.parse('severity!="info"').matches({"severity": "critical"})


# --- Grafana ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def _data_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", ())
        else:
            yield panel


def test_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    """The dashboard has a uid, a title, a recent schema, a Prometheus data source variable used by every
    panel and target, a deployment variable, unique panel ids and non-overlapping grid positions."""
    assert dashboard["uid"]
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["deployment"]["type"] == "query"
    assert "deployment" in variables["deployment"]["query"]["query"]
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0, panel["title"]
        assert 0 <= grid["x"] <= 24 - grid["w"], panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    panels = list(_data_panels(dashboard))
    assert len(panels) >= 10
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_keeps_its_rows(dashboard: dict[str, Any]) -> None:
    """The panels sit in the rows Overview, Fleet, Polling, Events and sinks and Process, in that order; each
    row is expanded, and the panels after it in the file lie below it and above the next row."""
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    assert tuple(row["title"] for row in rows) == DASHBOARD_ROWS
    assert all(not row["collapsed"] and not row.get("panels") for row in rows)
    assert dashboard["panels"][0]["type"] == "row"
    tops = [row["gridPos"]["y"] for row in rows]
    filled: set[str] = set()
    row = rows[0]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel
            continue
        top = row["gridPos"]["y"]
        below = min((y for y in tops if y > top), default=None)
        grid = panel["gridPos"]
        assert grid["y"] > top, f"{panel['title']} is above its row {row['title']}"
        assert below is None or grid["y"] + grid["h"] <= below, f"{panel['title']} reaches the next row"
        filled.add(row["title"])
    assert filled == set(DASHBOARD_ROWS)


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in _data_panels(dashboard) for target in panel["targets"]]


def test_dashboard_reads_exported_metrics(
    dashboard: dict[str, Any], exported: frozenset[str], rule_file: dict[str, Any]
) -> None:
    """Every metric the dashboard queries is exported by the service (or is one of the replica set's contract
    names) or recorded by rules.yml, and the panels cover state, readiness, transitions, poll errors, poll
    latency, schedule lag, requests, events, sink queues and the replica set."""
    exprs = _exprs(dashboard)
    records = {rule["record"] for rule in rules_of(rule_file) if "record" in rule}
    used: set[str] = set()
    recorded: set[str] = set()
    for expr in exprs:
        names = promql_metric_names(expr)
        assert names - exported == set(), expr
        assert recording_rule_names(expr) - records == set(), expr
        used |= names
        recorded |= recording_rule_names(expr)
    assert {
        "deployment:foundry_live_deployment_state:max",
        "deployment:foundry_live_deployment_ready:min",
        "deployment:foundry_live_deployment_up:max",
    } <= recorded
    assert {
        "foundry_monitor_replicas",
        "foundry_monitor_owned_deployments",
        "foundry_monitor_unowned_deployments",
        "foundry_monitor_leases_taken_total",
        "foundry_monitor_leases_lost_total",
        "foundry_monitor_heartbeat_timestamp_seconds",
        "foundry_monitor_database_up",
        "foundry_monitor_database_errors_total",
        "foundry_monitor_state_buffered_events",
        "foundry_monitor_state_dropped_events_total",
        "foundry_monitor_shard_info",
    } <= used
    assert {
        "foundry_live_deployment_state_transitions_total",
        "foundry_live_deployment_poll_errors_total",
        "foundry_monitor_poll_duration_seconds_bucket",
        "foundry_monitor_schedule_lag_seconds_bucket",
        "foundry_monitor_requests_total",
        "foundry_monitor_events_total",
        "foundry_monitor_sink_queue_length",
    } <= used
    assert any("histogram_quantile" in expr and "poll_duration_seconds_bucket" in expr for expr in exprs)


def _filled(expr: str, rate_interval: str = "2m", **values: str) -> str:
    """A panel's query as Grafana sends it: its variables replaced by ``values`` (``x`` where not given)."""
    substitutions = {
        "$__rate_interval": rate_interval,
        "$__interval": "1m",
        "$__range": "6h",
        **{f"${name}": values.get(name, "x") for name in ("job", "instance", "deployment")},
    }
    for variable, value in substitutions.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def test_dashboard_queries_parse(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL once Grafana's variables are filled in (promtool parses them as
    recording rules)."""
    promtool = require_tool("promtool")
    rules = []
    for index, panel in enumerate(_data_panels(dashboard)):
        for target in panel["targets"]:
            expr = _filled(target["expr"])
            rules.append({"record": f"dashboard:panel{index}:{target['refId'].lower()}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# A replica (a) stops at 10m and hands its two deployments to another (b): d1 with an overlap of a scrape or
# two (b exports it from 8m), d2 with a gap (b exports it from 12m). Samples are a minute apart, so Grafana's
# $__rate_interval is 4m (four scrape intervals). The values stay the same throughout, but for the poll
# timestamps (they keep up with the clock) and the new owner's counters (they start from zero).
HANDOVER_OWNERS = {
    "d1": (("a", 0, 10), ("b", 8, 30)),
    "d2": (("a", 0, 10), ("b", 12, 30)),
}
HANDOVER_BEFORE = 5
HANDOVER_TIMES = {"overlap": 9, "gap": 11, "after": 20}
# Per deployment: (metric, extra labels, value for d1, value for d2); None is a timestamp keeping up with time().
HANDOVER_GAUGES: tuple[tuple[str, str, float | None, float | None], ...] = (
    ("foundry_live_deployment_state", 'state="ACTIVE"', 1, 1),
    ("foundry_live_deployment_state", 'state="FAILED"', 0, 0),
    ("foundry_live_deployment_ready", "", 1, 0),
    ("foundry_live_deployment_min_replicas", "", 1, 1),
    ("foundry_live_deployment_found", "", 1, 1),
    ("foundry_live_deployment_up", "", 1, 1),
    ("foundry_live_deployment_version_behind_seconds", "", 120, 0),
    ("foundry_live_deployment_last_poll_success_timestamp_seconds", "", None, None),
)
HANDOVER_COUNTERS = (
    ("foundry_live_deployment_state_transitions_total", 'from_state="STARTING",to_state="ACTIVE"', 1),
    ("foundry_live_deployment_changes_total", 'field="replicas"', 2),
    ("foundry_live_deployment_poll_errors_total", 'error="timeout"', 1),
)


def _samples(start: int, end: int, first: float, step: float = 0) -> str:
    """promtool's notation for a series from minute ``start`` to ``end`` (``first``, growing by ``step`` a
    minute), then a staleness marker."""
    points = f"{first:g}+{step:g}x{end - start}" if step else f"{first:g}x{end - start}"
    return " ".join(part for part in (f"_x{start}" if start else "", points, "stale") if part)


def _handover_series() -> list[dict[str, str]]:
    """The input series of the handover: each deployment's series from each of its owners in turn, and the
    poll counts of both replicas."""
    series = []
    for index, (deployment, owners) in enumerate(HANDOVER_OWNERS.items()):
        for owner, (instance, start, end) in enumerate(owners):
            labels = (
                f'job="{JOB}",instance="{instance}:{PORT}",pod="foundry-monitor-{instance}",'
                f'rid="ri.foundry-ml-live.main.live-deployment.{deployment}",deployment="{deployment}"'
            )
            for metric, extra, *values in HANDOVER_GAUGES:
                value = values[index]
                selector = "{" + ",".join(part for part in (labels, extra) if part) + "}"
                points = (
                    _samples(start, end, start * 60, 60) if value is None else _samples(start, end, value)
                )
                series.append({"series": metric + selector, "values": points})
            for metric, extra, count in HANDOVER_COUNTERS:
                points = _samples(start, end, 0 if owner else count)
                series.append({"series": f"{metric}{{{labels},{extra}}}", "values": points})
    for instance, start, end in HANDOVER_OWNERS["d1"]:
        polls = f'foundry_monitor_poll_duration_seconds_count{{job="{JOB}",instance="{instance}:{PORT}"}}'
        series.append({"series": polls, "values": _samples(start, end, 0, 2)})
    return series


def _per_deployment_queries(dashboard: dict[str, Any]) -> list[str]:
    """The dashboard's queries that read a deployment's series, or a deployment: recording rule."""
    return [
        expr
        for expr in _exprs(dashboard)
        if any(name.startswith("foundry_live_deployment_") for name in promql_metric_names(expr))
        or any(name.startswith("deployment:") for name in recording_rule_names(expr))
    ]


def test_dashboard_does_not_split_a_deployment_at_a_handover(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    """While a deployment moves from one replica to another (both exporting it for a while, or neither) and
    after it moved, every panel about deployments shows the series it showed while one process exported it,
    with the same values (but ages, which grow with the clock while nobody polls); every such panel has data
    while one process exports the deployments (promtool evaluates the panels under rules.yml's rules)."""
    promtool = require_tool("promtool")
    queries = _per_deployment_queries(dashboard)
    assert len(queries) >= 10
    modelled = {metric for metric, *_ in (*HANDOVER_GAUGES, *HANDOVER_COUNTERS)}
    for query in queries:
        read = promql_metric_names(query) | {
            name.split(":")[1] for name in recording_rule_names(query) if name.startswith("deployment:")
        }
        assert {name for name in read if name.startswith("foundry_live_")} <= modelled, query
    checks: list[dict[str, Any]] = []
    for query in queries:
        expr = _filled(query, "4m", job=JOB, instance=".*", deployment=".*")
        checks.append({"expr": f"absent({expr})", "eval_time": f"{HANDOVER_BEFORE}m"})
        for minute in HANDOVER_TIMES.values():
            before = f"last_over_time(({expr})[1m:1m] offset {minute - HANDOVER_BEFORE}m)"
            checks.append(
                {
                    "expr": f"(({expr}) unless {before}) or ({before} unless ({expr}))",
                    "eval_time": f"{minute}m",
                }
            )
            if "time()" not in expr:
                checks.append({"expr": f"({expr}) != {before}", "eval_time": f"{minute}m"})
    document = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _handover_series(), "promql_expr_test": checks}],
    }
    path = tmp_path / "handover.test.yml"
    path.write_text(yaml.safe_dump(document, width=1000), encoding="utf-8")
    result = run([promtool, "test", "rules", str(path)])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr


def _panel_query(dashboard: dict[str, Any], title: str, legend: str | None = None) -> str:
    """The query of the panel named ``title`` (of its target with ``legend`` where given); several panels may
    share a title (a number and a graph), and all of them must have that query."""
    exprs = {
        target["expr"]
        for panel in _data_panels(dashboard)
        if panel["title"] == title
        for target in panel["targets"]
        if legend is None or target["legendFormat"] == legend
    }
    (expr,) = exprs
    return expr


def test_replica_panels_count_each_replica_once(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """For three replicas (a owning 3 deployments, b 2, c none, its database unreachable and its view of the
    leases stale) the replica panels show: the fleet as 6 (what they own plus the 1 deployment the replicas
    that reach the database see unowned), each replica's band, c's heartbeat as the oldest, one database
    unreachable; a single process without leases shows its fleet as what it owns and no heartbeat."""
    promtool = require_tool("promtool")
    replicas = {"a": (3, 1, 0, 1), "b": (2, 1, 30, 1), "c": (0, 5, 200, 0)}
    series = []
    for name, (owned, unowned, behind, up) in replicas.items():
        labels = f'job="{JOB}",instance="{name}:{PORT}"'
        for metric, values in (
            ("foundry_monitor_owned_deployments", f"{owned}x20"),
            ("foundry_monitor_unowned_deployments", f"{unowned}x20"),
            ("foundry_monitor_replicas", "3x20"),
            ("foundry_monitor_heartbeat_timestamp_seconds", f"{-behind}+60x20"),
            ("foundry_monitor_database_up", f"{up}x20"),
        ):
            series.append({"series": f"{metric}{{{labels}}}", "values": values})
    solo = 'job="solo",instance="solo:9708"'
    series.append({"series": f"foundry_monitor_owned_deployments{{{solo}}}", "values": "4x20"})
    series.append({"series": f"foundry_monitor_heartbeat_timestamp_seconds{{{solo}}}", "values": "0x20"})
    series.append({"series": f"foundry_monitor_database_up{{{solo}}}", "values": "1x20"})

    def sample(value: float, **labels: str) -> dict[str, Any]:
        text = ",".join(f'{key}="{item}"' for key, item in labels.items())
        return {"labels": "{" + text + "}", "value": value}

    fleet = _panel_query(dashboard, "Owned deployments by replica", "fleet")
    bands = _panel_query(dashboard, "Owned deployments by replica", "{{instance}}")
    ages = _panel_query(dashboard, "Heartbeat age")
    cases: list[tuple[str, str, list[dict[str, Any]]]] = [
        (fleet, JOB, [sample(6)]),
        (fleet, "solo", [sample(4)]),
        (bands, JOB, [sample(owned, instance=f"{name}:{PORT}") for name, (owned, *_) in replicas.items()]),
        (_panel_query(dashboard, "Unowned deployments"), JOB, [sample(1)]),
        (_panel_query(dashboard, "Live replicas"), JOB, [sample(3)]),
        (_panel_query(dashboard, "Database unreachable"), JOB, [sample(1)]),
        (_panel_query(dashboard, "Database unreachable"), "solo", [sample(0)]),
        (_panel_query(dashboard, "Oldest heartbeat"), JOB, [sample(200)]),
        (
            ages,
            JOB,
            [
                sample(behind, instance=f"{name}:{PORT}", job=JOB)
                for name, (_, _, behind, _) in replicas.items()
            ],
        ),
        (ages, "solo", []),
    ]
    checks = [
        {"expr": _filled(expr, job=job, instance=".*"), "eval_time": "10m", "exp_samples": expected}
        for expr, job, expected in cases
    ]
    document = {
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}],
    }
    path = tmp_path / "replicas.test.yml"
    path.write_text(yaml.safe_dump(document, width=1000), encoding="utf-8")
    result = run([promtool, "test", "rules", str(path)])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr


@pytest.fixture(scope="module")
def dashboard_code() -> ModuleType:
    require_module("grafana_foundation_sdk")
    return load_script(GRAFANA / "dashboard.py")


def test_dashboard_is_generated_from_code(
    dashboard_code: ModuleType, dashboard: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """foundry-monitor.json is exactly what deploy/grafana/dashboard.py writes, the same on every run (keys
    sorted, indented by two, a trailing newline); --check fails on a hand edit, and a run of the script
    rewrites the file."""
    generated = dashboard_code.render(dashboard_code.build())
    assert list(json_differences(json.loads(generated), dashboard)) == [], "run deploy/grafana/dashboard.py"
    text = DASHBOARD.read_text(encoding="utf-8")
    assert text == generated
    assert dashboard_code.render(dashboard_code.build()) == generated
    assert text == json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    result = run([sys.executable, str(GRAFANA / "dashboard.py"), "--check"])
    assert result.returncode == 0, result.stderr
    edited = tmp_path / "foundry-monitor.json"
    edited.write_text(text.replace('"refresh": "1m"', '"refresh": "5m"'), encoding="utf-8")
    monkeypatch.setattr(dashboard_code, "OUTPUT", edited)
    assert dashboard_code.main(["--check"]) == 1
    assert dashboard_code.main([]) == 0
    assert edited.read_text(encoding="utf-8") == text
    assert dashboard_code.main(["--check"]) == 0


def test_dashboard_fits_the_sdk_types(dashboard: dict[str, Any]) -> None:
    """The shipped dashboard decodes into grafana-foundation-sdk's own types (its panel and query plugins
    registered) and encodes back to the same JSON: every field is one the SDK knows, every value of the type
    it declares, every panel type and query one it has types for."""
    require_module("grafana_foundation_sdk")
    assert sdk_dashboard_problems(dashboard) == []


def _first_panel(dashboard: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(panel for panel in _data_panels(dashboard) if panel["type"] == kind)


@pytest.mark.parametrize(
    ("kind", "path", "value", "problem"),
    [
        ("timeseries", ("colour",), "red", ".colour: dropped"),
        ("timeseries", ("options", "legend", "side"), "left", ".side: dropped"),
        ("table", ("transformations", 0, "enabled"), True, ".enabled: dropped"),
        ("stat", ("gridPos", "w"), "4", "'4' is not a int"),
        ("stat", ("title",), 3, "3 is not a str"),
        ("stat", ("fieldConfig", "defaults", "thresholds", "steps", 0, "value"), "1", "'1' is not a float"),
        ("stat", ("options", "colorMode"), "loud", "is not a BigValueColorMode"),
        ("timeseries", ("fieldConfig", "defaults", "custom", "drawStyle"), "dots", "is not a GraphDrawStyle"),
        ("timeseries", ("options", "legend", "showLegend"), "yes", "'yes' is not a bool"),
        ("timeseries", ("type",), "sparkline", "panel type 'sparkline' is unknown to the SDK"),
        (None, ("schemaVersion",), "39", "'39' is not a int"),
        (None, ("templating", "list", 1, "refresh"), 7, "7 is not a VariableRefresh"),
    ],
)
def test_sdk_type_check_finds_drift(
    dashboard: dict[str, Any], kind: str | None, path: tuple[str | int, ...], value: Any, problem: str
) -> None:
    """The type check rejects what the SDK's types do not describe: an unknown field of a panel, of its
    options or of a transformation, a value of the wrong type or outside an enumeration, an unknown panel
    type."""
    require_module("grafana_foundation_sdk")
    document = json.loads(json.dumps(dashboard))
    target: Any = document if kind is None else _first_panel(document, kind)
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = sdk_dashboard_problems(document)
    assert len(problems) == 1, problems
    assert problem in problems[0]


# --- Kubernetes ------------------------------------------------------------------------------------------


def _manifest(name: str) -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(BASE / name)
    return document


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _generated_config_map(kustomization: dict[str, Any], directory: Path) -> dict[str, Any]:
    (generator,) = kustomization["configMapGenerator"]
    data = {}
    for entry in generator["files"]:
        key, _, source = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (directory / source).read_text(encoding="utf-8")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}


def _overlay_deployment(overlay: Path = OVERLAY) -> dict[str, Any]:
    """The base's Deployment as ``overlay`` patches it (the strategic merge as far as the overlays use it)."""
    kustomization = load_yaml(overlay / "kustomization.yaml")
    deployment = _manifest("deployment.yaml")
    for patch in kustomization.get("patches", ()):
        document = load_yaml(overlay / patch["path"])
        assert patch["target"]["kind"] == document["kind"] == deployment["kind"]
        assert patch["target"]["name"] == document["metadata"]["name"] == deployment["metadata"]["name"]
        deployment = strategic_merge(deployment, document)
    for image in kustomization.get("images", ()):
        container = _container(deployment)
        repository = container["image"].rpartition(":")[0]
        assert repository == image["name"]
        container["image"] = f"{repository}:{image['newTag']}"
    return deployment


def _overlay_resources(overlay: Path) -> list[dict[str, Any]]:
    """The manifests an overlay adds to the base (its resources that are files, not kustomizations)."""
    names = load_yaml(overlay / "kustomization.yaml")["resources"]
    return [load_yaml(overlay / name) for name in names if (overlay / name).is_file()]


def test_kustomizations_name_existing_files() -> None:
    """The base's resources and generator files exist; each overlay's resources are kustomization
    directories or manifests, and its patches and generator files exist."""
    base = load_yaml(BASE / "kustomization.yaml")
    assert base["resources"]
    for name in base["resources"]:
        assert (BASE / name).is_file(), name
    for generator in base["configMapGenerator"]:
        for name in generator["files"]:
            assert (BASE / name.rpartition("=")[2]).is_file(), name
    for directory in OVERLAYS.values():
        overlay = load_yaml(directory / "kustomization.yaml")
        assert "../../base" in overlay["resources"], directory.name
        for name in overlay["resources"]:
            path = directory / name
            assert (path / "kustomization.yaml").is_file() or path.is_file(), (directory.name, name)
        for patch in overlay["patches"]:
            assert (directory / patch["path"]).is_file(), (directory.name, patch)
        for generator in overlay["configMapGenerator"]:
            assert generator["behavior"] == "replace"
            assert generator["name"] in {g["name"] for g in base["configMapGenerator"]}
            for name in generator["files"]:
                assert (directory / name.rpartition("=")[2]).is_file(), (directory.name, name)


def test_builtin_kinds_validate_against_kubernetes_schemas() -> None:
    """The Deployment (as in the base and as each overlay patches it), the Service, the generated ConfigMaps
    and the overlays' own manifests (the ha overlay's PodDisruptionBudget) validate strictly against the
    Kubernetes schemas."""
    validator = require_module("kubernetes_validate")
    documents = [
        _manifest("deployment.yaml"),
        _manifest("service.yaml"),
        _generated_config_map(load_yaml(BASE / "kustomization.yaml"), BASE),
    ]
    for directory in OVERLAYS.values():
        documents.append(_generated_config_map(load_yaml(directory / "kustomization.yaml"), directory))
        documents.append(_overlay_deployment(directory))
        documents.extend(_overlay_resources(directory))
    assert {document["kind"] for document in documents} >= {"PodDisruptionBudget"}
    for document in documents:
        validator.validate(document, K8S_VERSION, strict=True)
    broken = _manifest("deployment.yaml")
    _container(broken)["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, K8S_VERSION, strict=True)


def test_deployment_is_hardened() -> None:
    """The pod runs as UID 10001, non-root, with a read-only root filesystem, no capabilities, no privilege
    escalation, no service account token, and with resource requests and limits."""
    deployment = _manifest("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["runAsUser"] == 10001
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}


def test_deployment_runs_the_monitor_with_its_config_and_token() -> None:
    """The container runs `foundry-monitor run --config` on the ConfigMap mounted at /etc/foundry-monitor,
    exposes 9708 as `metrics`, probes /healthz and /readyz there, reads FOUNDRY_TOKEN from a Secret and keeps
    its state in an emptyDir."""
    deployment = _manifest("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert [*container["command"], *container["args"]] == [
        "foundry-monitor", "run", "--config", "/etc/foundry-monitor/monitor.yaml",
    ]  # fmt: skip
    assert container["ports"] == [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = {item["name"]: item for item in container["env"]}
    assert env["FOUNDRY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "foundry-monitor-token",
        "key": "token",
    }
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    (generator,) = load_yaml(BASE / "kustomization.yaml")["configMapGenerator"]
    config_mount = mounts["/etc/foundry-monitor"]
    assert config_mount["readOnly"] is True
    assert volumes[config_mount["name"]]["configMap"]["name"] == generator["name"]
    assert generator["files"] == ["monitor.yaml"]
    assert "emptyDir" in volumes[mounts["/var/lib/foundry-monitor"]["name"]]


def test_service_and_servicemonitor_reach_the_pod() -> None:
    """The Service selects the pod's labels and targets its metrics port; the ServiceMonitor selects the
    Service, scrapes that port and names the job foundry-monitor, as the alert rules expect."""
    deployment = _manifest("deployment.yaml")
    service = _manifest("service.yaml")
    monitor = _manifest("servicemonitor.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port == {"name": "metrics", "port": PORT, "targetPort": "metrics", "protocol": "TCP"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == JOB
    assert f'job="{JOB}"' in RULES.read_text(encoding="utf-8")


def test_custom_resources_have_the_required_structure() -> None:
    """ServiceMonitor and PrometheusRule (no CRD schemas offline) have the fields the Prometheus operator
    requires, with valid durations, and every rule is exactly one of alert or record."""
    monitor = _manifest("servicemonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert monitor["metadata"]["name"]
    assert monitor["spec"]["selector"]["matchLabels"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert isinstance(endpoint["port"], str)
        assert endpoint["path"].startswith("/")
        for key in ("interval", "scrapeTimeout"):
            assert DURATION.match(endpoint[key]), key
    rule = _manifest("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["name"]
    groups = rule["spec"]["groups"]
    assert len({group["name"] for group in groups}) == len(groups)
    for item in rules_of(rule["spec"]):
        assert ("alert" in item) != ("record" in item), item
        assert isinstance(item["expr"], str)
        assert item["expr"].strip()
        allowed = (
            {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            if "alert" in item
            else {"record", "expr", "labels"}
        )
        assert set(item) <= allowed, item
        for key in ("for", "keep_firing_for"):
            if key in item:
                assert DURATION.match(item[key]), item
        for mapping in (item.get("labels", {}), item.get("annotations", {})):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


def test_generated_files_are_current(tmp_path: Path) -> None:
    """base/prometheusrule.yaml and base/monitor.yaml are exactly what generate.py makes of rules.yml and
    config/monitor.yaml; the PrometheusRule holds the same groups; --runbook-base moves every link."""
    generate = load_script(KUBERNETES / "generate.py")
    for path, content in generate.outputs().items():
        assert path.read_text(encoding="utf-8") == content, (
            f"{path} is stale: run deploy/kubernetes/generate.py"
        )
    assert _manifest("prometheusrule.yaml")["spec"]["groups"] == load_yaml(RULES)["groups"]
    result = run([sys.executable, str(KUBERNETES / "generate.py"), "--check"])
    assert result.returncode == 0, result.stderr
    moved = yaml.safe_load(
        generate.prometheus_rule(RULES.read_text(encoding="utf-8"), "https://wiki.example.net/rb")
    )
    urls = [item["annotations"]["runbook_url"] for item in rules_of(moved["spec"]) if "alert" in item]
    assert urls
    assert all(url.startswith("https://wiki.example.net/rb#foundry") for url in urls)


def _required_variables(document: Any) -> set[str]:
    """The ${VAR} references without a default in a configuration's values (comments left out)."""
    if isinstance(document, dict):
        return set().union(*(_required_variables(value) for value in document.values()))
    if isinstance(document, list):
        return set().union(*(_required_variables(value) for value in document))
    if isinstance(document, str):
        return set(re.findall(r"\$\{([A-Za-z_]\w*)\}", document))
    return set()


# What a Secret holds where its shape is checked (anything else from a Secret reads "from-a-secret").
SECRET_EXAMPLES = {"STATE_DSN": "postgresql://foundry_monitor@postgres.example.internal:5432/foundry_monitor"}


def _secret_files(pod: dict[str, Any], container: dict[str, Any], root: Path) -> dict[str, Path]:
    """Each Secret volume's mount path, mapped to a directory under ``root`` holding its items."""
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounted: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount.get("readOnly") is True, mount
        local = root / mount["name"]
        local.mkdir()
        for item in secret["items"]:
            (local / item["path"]).write_text("from-a-secret\n", encoding="utf-8")
        mounted[mount["mountPath"]] = local
    return mounted


@pytest.mark.parametrize(
    ("config", "overlay"),
    [(BASE / "monitor.yaml", None), *((path / "monitor.yaml", path) for path in OVERLAYS.values())],
    ids=["base", *OVERLAYS],
)
def test_configs_fit_the_pod(config: Path, overlay: Path | None, tmp_path: Path) -> None:
    """The ConfigMap's configuration validates with the pod's environment and the files of its Secret
    volumes, listens on the container port and writes only under the writable mounts (the root filesystem
    is read-only)."""
    from monitor.config import load_config

    manifest = _manifest("deployment.yaml") if overlay is None else _overlay_deployment(overlay)
    container = _container(manifest)
    pod = manifest["spec"]["template"]["spec"]
    # Optional Secret keys may be missing: the configuration's ${VAR:-default} then applies.
    env = {
        item["name"]: item.get("value", SECRET_EXAMPLES.get(item["name"], "from-a-secret"))
        for item in container["env"]
        if not item.get("valueFrom", {}).get("secretKeyRef", {}).get("optional")
    }
    assert _required_variables(load_yaml(config)) <= set(env)
    text = config.read_text(encoding="utf-8")
    for mount_path, local in _secret_files(pod, container, tmp_path).items():
        text = text.replace(mount_path + "/", f"{local}/")
    local_config = tmp_path / "monitor.yaml"
    local_config.write_text(text, encoding="utf-8")
    loaded = load_config(local_config, environ=env)
    assert loaded.server.port == PORT
    writable = {
        mount["mountPath"]
        for mount in container["volumeMounts"]
        if not mount.get("readOnly")
        and any(v["name"] == mount["name"] and "emptyDir" in v for v in pod["volumes"])
    }
    state_file = loaded.state.path if loaded.state.backend == "sqlite" else None
    for path in (state_file, loaded.sinks.file and loaded.sinks.file.path):
        if path is not None:
            assert any(path.startswith(mount + "/") for mount in writable), path


def test_ha_overlay_runs_a_replica_set_on_postgres() -> None:
    """The ha overlay runs 3 replicas on PostgreSQL: the DSN from a Secret, the password from a Secret's
    file (neither in the ConfigMap), no events file (each replica's filesystem is its own)."""
    deployment = _overlay_deployment(HA)
    container = _container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    config = load_yaml(HA / "monitor.yaml")
    state = config["state"]
    assert state["backend"] == "postgres"
    assert "password" not in state
    (dsn_variable,) = re.findall(r"^\$\{(\w+)\}$", state["dsn"])
    env = {item["name"]: item for item in container["env"]}
    assert env[dsn_variable]["valueFrom"]["secretKeyRef"]["key"] == "dsn"
    secret = env[dsn_variable]["valueFrom"]["secretKeyRef"]["name"]
    mount_path, _, item = state["password_file"].rpartition("/")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret
    assert {"key": "password", "path": item} in volume["secret"]["items"]
    assert "file_path" not in config["sinks"]
    assert "postgresql://" not in (HA / "monitor.yaml").read_text(encoding="utf-8").partition("state:")[2]


def test_ha_overlay_never_leaves_deployments_unowned() -> None:
    """A rolling update of the ha overlay adds a replica before it removes one and waits for the new one to
    be ready on /readyz (and ready a while: minReadySeconds); the grace period covers the shutdown's drain;
    replicas prefer other nodes (preferred: a required rule could not place the surge replica on as many
    nodes as replicas); a PodDisruptionBudget lets a drain evict one replica at a time."""
    from monitor.service import DRAIN_SECONDS

    deployment = _overlay_deployment(HA)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert spec["minReadySeconds"] >= 15
    assert _container(deployment)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] > 2 * DRAIN_SECONDS
    pod_labels = spec["template"]["metadata"]["labels"]
    anti = pod["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    topologies = set()
    for term in anti["preferredDuringSchedulingIgnoredDuringExecution"]:
        affinity_term = term["podAffinityTerm"]
        assert affinity_term["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        topologies.add(affinity_term["topologyKey"])
    assert "kubernetes.io/hostname" in topologies
    (budget,) = [d for d in _overlay_resources(HA) if d["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def _by_name(items: Any) -> Any:
    """A list of named objects (env, mounts, volumes) keyed by name, where kustomize's order may differ."""
    return {item["name"]: item for item in items} if isinstance(items, list) else items


def test_overlays_render_with_kustomize() -> None:
    """kubectl kustomize renders every overlay; its Deployment is the one the checks above read (the merge
    they emulate agrees with kustomize's), and every built-in kind it renders validates. Skipped where kubectl
    is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    validator = require_module("kubernetes_validate")
    for name, directory in OVERLAYS.items():
        result = run([kubectl, "kustomize", str(directory)])
        assert result.returncode == 0, result.stderr
        documents = list(yaml.safe_load_all(result.stdout))
        (rendered,) = [d for d in documents if d["kind"] == "Deployment"]
        expected = _overlay_deployment(directory)
        for key in ("replicas", "strategy", "minReadySeconds"):
            assert rendered["spec"].get(key) == expected["spec"].get(key), (name, key)
        rendered_pod = rendered["spec"]["template"]["spec"]
        expected_pod = expected["spec"]["template"]["spec"]
        for key in ("affinity", "terminationGracePeriodSeconds"):
            assert rendered_pod.get(key) == expected_pod.get(key), (name, key)
        for key in ("env", "volumeMounts", "resources", "readinessProbe"):
            assert _by_name(_container(rendered)[key]) == _by_name(_container(expected)[key]), (name, key)
        volumes = _by_name(rendered_pod["volumes"])
        expected_volumes = _by_name(expected_pod["volumes"])
        # kustomize names the generated ConfigMap with a hash of its content
        config_map = volumes["config"]["configMap"]
        generated = expected_volumes["config"]["configMap"]["name"]
        assert config_map["name"].startswith(generated + "-"), name
        config_map["name"] = generated
        assert volumes == expected_volumes, name
        for document in documents:
            if document["apiVersion"] != "monitoring.coreos.com/v1":
                validator.validate(document, K8S_VERSION, strict=True)


# --- Docker ----------------------------------------------------------------------------------------------


def test_dockerfile_builds_a_wheel_and_runs_it_unprivileged() -> None:
    """A builder stage makes a wheel; the python:3.11-slim runtime installs it, runs as UID 10001, exposes
    9708, checks /healthz with urllib and runs `foundry-monitor run --config ...` by default."""
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    stages = [i.arguments for i in instructions if i.keyword == "FROM"]
    assert len(stages) >= 2
    assert stages[0].split()[-2:] == ["AS", "builder"]
    assert stages[-1].split()[0] == "python:3.11-slim"
    final = instructions[max(n for n, i in enumerate(instructions) if i.keyword == "FROM") :]
    builder = instructions[: next(n for n, i in enumerate(instructions) if n and i.keyword == "FROM")]
    assert any(i.keyword == "RUN" and "pip wheel" in i.arguments for i in builder)
    assert any(
        i.keyword == "RUN" and "from=builder" in i.arguments and "pip install" in i.arguments for i in final
    )
    last = {i.keyword: i.arguments for i in final}
    assert last["USER"].split(":")[0] == "10001"
    assert last["EXPOSE"] == str(PORT)
    assert json.loads(last["ENTRYPOINT"]) == ["foundry-monitor"]
    assert json.loads(last["CMD"]) == ["run", "--config", "/etc/foundry-monitor/monitor.yaml"]
    healthcheck = last["HEALTHCHECK"]
    assert "urllib.request" in healthcheck
    assert f"http://127.0.0.1:{PORT}/healthz" in healthcheck


def test_dockerignore_sends_exactly_what_the_build_copies() -> None:
    """Every source the Dockerfile copies exists and is in the build context; the virtualenv, git, state and
    tests are not."""
    patterns = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    sources = [
        source
        for i in instructions
        if i.keyword == "COPY" and "--from" not in i.arguments
        for source in i.arguments.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert dockerignore_allows(patterns, source), source
    assert dockerignore_allows(patterns, "monitor/cli.py")
    for excluded in (
        ".venv/bin/python",
        ".git/HEAD",
        "state/monitor.sqlite3",
        "tests/test_deploy.py",
        "monitor/__pycache__/x.pyc",
    ):
        assert not dockerignore_allows(patterns, excluded), excluded


# --- systemd ---------------------------------------------------------------------------------------------


def test_systemd_unit_is_hardened_and_reloadable() -> None:
    """The unit runs `foundry-monitor run --config` under a dynamic user with the token from an
    EnvironmentFile, restarts on failure, reloads with SIGHUP (restarting while the monitor does not handle
    it) and sets the main hardening options."""
    service = dict(unit_entries(UNIT.read_text(encoding="utf-8"))["Service"])
    assert service["ExecStart"].endswith("foundry-monitor run --config /etc/foundry-monitor/monitor.yaml")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["RestartForceExitStatus"] == "SIGHUP"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("/etc/foundry-monitor/")
    assert service["StateDirectory"] == "foundry-monitor"
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert service[key] == value, key


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze finds no unknown or invalid setting in the unit (the executable replaced by one that
    exists here) and rates its exposure at most 2.0 of 10. Skipped where systemd-analyze is not installed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    executable = shutil.which("true")
    assert executable is not None
    text = UNIT.read_text(encoding="utf-8").replace("/opt/foundry-monitor/bin/foundry-monitor", executable)
    unit = tmp_path / "foundry-monitor.service"
    unit.write_text(text, encoding="utf-8")
    result = run([analyze, "verify", str(unit)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
    result = run(
        [analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)], cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
