"""The Grafana dashboard of foundry-monitor, as code: writes foundry-monitor.json beside this file.

Run ``python deploy/grafana/dashboard.py`` after changing a panel and commit both files; ``--check`` exits 1
when the committed JSON differs from what this code makes (tests/test_deploy.py runs the same comparison and
decodes the JSON back through the SDK's types). The panels are built with grafana-foundation-sdk, pinned in
pyproject.toml's test extra: another build of the SDK may fill in other defaults.

A new panel is one call in its row's function: ``graph(...)`` for time series, ``rates_by(...)`` for a
counter's rate by a label, ``stat(...)`` for a number atop a row, ``timeline(...)`` for a state over
time, ``table(...)`` for the current labels of a series. ``selector``, ``rate``, ``count`` and ``quantile``
write the PromQL under the dashboard's job, instance and deployment variables.

A deployment's series move from replica to replica at a handover (docs/replicas.md), changing their instance
and pod labels, with a gap or an overlap of a scrape. Panels about deployments therefore read the deployment:
recording rules of deploy/prometheus/rules.yml (``recorded``: one series per deployment whichever replica
exported it, a single process included), or sum counters by labels other than instance and pod; they are
scoped by job and deployment only. The instance variable selects the monitor processes of the other panels.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import prometheus as prometheus_builder
from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.builders import statetimeline as statetimeline_builder
from grafana_foundation_sdk.builders import table as table_builder
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "foundry-monitor.json"
RUNBOOKS = "https://github.com/example/foundry-monitor/blob/main/docs/runbooks.md"

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="${DS_PROMETHEUS}")
JOB = 'job="$job"'
MONITOR = JOB + ',instance=~"$instance"'
FLEET = JOB + ',deployment=~"$deployment"'
# The deployments of the selected instances: for polling errors, a count of a process's work.
POLLED = MONITOR + ',deployment=~"$deployment"'
QUANTILES = (0.5, 0.9, 0.99)
BREAKER_OPEN = 'state=~"open|half_open"'


def selector(metric: str, *matchers: str, scope: str = FLEET) -> str:
    """A selector of ``metric`` under the dashboard's variables (``scope``) and ``matchers``."""
    return f"{metric}{{{','.join((scope, *matchers))}}}"


def rate(
    metric: str, *matchers: str, scope: str = FLEET, fn: str = "rate", window: str = "$__rate_interval"
) -> str:
    """The per-second ``rate`` (or the ``increase``) of a counter over Grafana's rate interval (or
    ``window``)."""
    return f"{fn}({selector(metric, *matchers, scope=scope)}[{window}])"


def recorded(metric: str, aggregation: str, *matchers: str) -> str:
    """The deployment: recording rule of a per-deployment gauge (``aggregation`` max or min, as rules.yml
    records it) under the job and deployment variables."""
    return selector(f"deployment:{metric}:{aggregation}", *matchers)


def count(series: str, value: int) -> str:
    """How many of ``series`` have ``value`` now (0 rather than no data when none has)."""
    return f"count({series} == {value}) or vector(0)"


def quantile(q: float, histogram: str) -> str:
    """Quantile ``q`` of a histogram of the monitor (not per deployment) over Grafana's rate interval."""
    return f"histogram_quantile({q:g}, sum by (le) ({rate(histogram + '_bucket', scope=MONITOR)}))"


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target: its expression and the legend of its series."""

    expr: str
    legend: str = "__auto"


def _target(query: Query, ref: str, *, instant: bool, table: bool = False) -> prometheus_builder.Dataquery:
    target = (
        prometheus_builder.Dataquery()
        .datasource(PROMETHEUS)
        .ref_id(ref)
        .expr(query.expr)
        .legend_format(query.legend)
    )
    if table:
        target.format(PromQueryFormat.TABLE)
    return target.instant() if instant else target.range()


def _targets(
    queries: Sequence[Query], *, instant: bool = False, table: bool = False
) -> list[Builder[Dataquery]]:
    return [
        _target(query, chr(ord("A") + index), instant=instant, table=table)
        for index, query in enumerate(queries)
    ]


def _thresholds(*steps: tuple[float | None, str]) -> dashboard_builder.ThresholdsConfig:
    """Absolute thresholds: the first step's value is None (from minus infinity)."""
    return (
        dashboard_builder.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def _value_names(*names: tuple[str, str | None]) -> list[model.ValueMapping]:
    """Texts (and colors) for the values 0, 1, ... in that order."""
    return [
        model.ValueMap(
            options={
                str(index): model.ValueMappingResult(text=text, color=color, index=index)
                for index, (text, color) in enumerate(names)
            }
        )
    ]


P = TypeVar(
    "P", stat_builder.Panel, timeseries_builder.Panel, statetimeline_builder.Panel, table_builder.Panel
)


def _panel(panel: P, title: str, description: str, width: int, height: int) -> P:
    return panel.title(title).description(description).datasource(PROMETHEUS).span(width).height(height)


def stat(
    title: str,
    description: str,
    query: str,
    *steps: tuple[float, str],
    names: Sequence[tuple[str, str | None]] = (),
    unit: str = "none",
) -> stat_builder.Panel:
    """A number of the first line of a row, its background green until the first of ``steps`` (value,
    color); ``names`` are texts (and colors) for the values 0, 1, ..."""
    panel = (
        _panel(stat_builder.Panel(), title, description, 4, 4)
        .targets(_targets([Query(query)], instant=True))
        .unit(unit)
        .color_scheme(dashboard_builder.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .thresholds(_thresholds((None, "green"), *steps))
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE)
    )
    return panel.mappings(_value_names(*names)) if names else panel


def graph(
    title: str,
    description: str,
    *queries: Query,
    unit: str = "none",
    width: int = 12,
    stacked: bool = False,
    bars: bool = False,
) -> timeseries_builder.Panel:
    """A time series with a table legend on the right; ``stacked`` sums the series up, ``bars`` suits counts
    of events per interval."""
    stacking = common.StackingMode.NORMAL if stacked else common.StackingMode.NONE
    return (
        _panel(timeseries_builder.Panel(), title, description, width, 8)
        .targets(_targets(queries))
        .unit(unit)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(30 if stacked else 10)
        .stacking(common_builder.StackingConfig().mode(stacking).group("A"))
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .color_scheme(dashboard_builder.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .calcs(["lastNotNull", "max"])
            .show_legend(True)
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )


def quantiles(title: str, description: str, histogram: str) -> timeseries_builder.Panel:
    """p50, p90 and p99 of a histogram of the monitor, in seconds."""
    queries = [Query(quantile(q, histogram), f"p{round(q * 100)}") for q in QUANTILES]
    return graph(title, description, *queries, unit="s", width=8)


def timeline(
    title: str,
    description: str,
    query: Query,
    *steps: tuple[float | None, str],
    names: Sequence[tuple[str, str | None]] = (),
    width: int = 12,
) -> statetimeline_builder.Panel:
    """A state over time, one lane per series, colored by ``steps`` (value, color)."""
    panel = (
        _panel(statetimeline_builder.Panel(), title, description, width, 8)
        .targets(_targets([query]))
        .color_scheme(dashboard_builder.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .thresholds(_thresholds(*steps))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.9)
        # Grafana's defaults, written out: the SDK decodes a state timeline without them to these values.
        .line_width(0)
        .fill_opacity(70)
        .legend(common_builder.VizLegendOptions().show_legend(False))
    )
    return panel.mappings(_value_names(*names)) if names else panel


def table(
    title: str, description: str, query: str, columns: Sequence[str], *, width: int = 12
) -> table_builder.Panel:
    """The series of an instant query now, one line each: their labels, ``columns`` first in that order,
    sorted by the second of them (value and job left out)."""
    organize = model.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
            "indexByName": {column: index for index, column in enumerate(columns)},
            "renameByName": {},
        },
    )
    return (
        _panel(table_builder.Panel(), title, description, width, 8)
        .targets(_targets([Query(query)], instant=True, table=True))
        .show_header(True)
        .sort_by([common_builder.TableSortByFieldState().display_name(columns[1]).desc(False)])
        .with_transformation(organize)
    )


def rates_by(
    title: str, description: str, metric: str, label: str, unit: str, scope: str = MONITOR, width: int = 8
) -> timeseries_builder.Panel:
    """A counter's rate summed by ``label``, stacked: one band per kind."""
    query = Query(f"sum by ({label}) ({rate(metric, scope=scope)})", f"{{{{{label}}}}}")
    return graph(title, description, query, unit=unit, width=width, stacked=True)


def process(metric: str, suffix: str = "") -> Query:
    """A process metric of each monitor instance, its legend the instance and ``suffix``."""
    return Query(selector(metric, scope=MONITOR), "{{instance}}" + suffix)


def _not_ready() -> str:
    not_ready = recorded("foundry_live_deployment_ready", "min") + " == 0"
    active = recorded("foundry_live_deployment_state", "max", 'state="ACTIVE"') + " == 1"
    scaled_to_zero = recorded("foundry_live_deployment_min_replicas", "max") + " == 0"
    return f"count(({not_ready} and ignoring(state) {active}) unless {scaled_to_zero}) or vector(0)"


def _polls() -> timeseries_builder.Panel:
    polls = f"sum({rate('foundry_monitor_poll_duration_seconds_count', scope=MONITOR)})"
    failed = rate("foundry_live_deployment_poll_errors_total", 'error!="not_found"', scope=MONITOR)
    errors = f"sum({failed})"
    return graph(
        "Polls",
        "Polls per second, and the share that failed (not_found left out).",
        Query(polls, "polls/s"),
        Query(f"{errors} / {polls}", "error ratio"),
        unit="reqps",
        width=8,
    ).override_by_name(
        "error ratio",
        [
            model.DynamicConfigValue(id_val="unit", value="percentunit"),
            model.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        ],
    )


def overview() -> list[Builder[model.Panel]]:
    """The numbers to read first: what is watched, what is failing, what is stale."""
    return [
        stat(
            "Deployments watched",
            "Live deployments the monitor polls (configured and discovered), each counted once whichever"
            " replica polls it.",
            f"count({recorded('foundry_live_deployment_up', 'max')}) or vector(0)",
        ),
        stat(
            "FAILED",
            "Deployments whose status.state is FAILED now.",
            count(recorded("foundry_live_deployment_state", "max", 'state="FAILED"'), 1),
            (1, "red"),
        ),
        stat(
            "Not ready",
            "ACTIVE deployments with minReplicas above zero that are not ready (scaled-to-zero ones are left"
            " out).",
            _not_ready(),
            (1, "red"),
        ),
        stat(
            "DEGRADED or STARTING",
            "Deployments in status.state DEGRADED or STARTING now.",
            count(recorded("foundry_live_deployment_state", "max", 'state=~"DEGRADED|STARTING"'), 1),
            (1, "orange"),
        ),
        stat(
            "No fresh data",
            "Deployments whose last poll failed or whose data is older than polling.staleness (_up = 0).",
            count(recorded("foundry_live_deployment_up", "max"), 0),
            (1, "orange"),
        ),
        stat(
            "Circuit breaker",
            "The upstream circuit breaker of the monitor: closed is normal.",
            f"max({selector('foundry_monitor_circuit_breaker_state', BREAKER_OPEN, scope=MONITOR)})",
            (1, "red"),
            names=(("closed", None), ("open", None)),
        ),
    ]


def fleet() -> list[Builder[model.Panel]]:
    """The deployments: states, readiness, transitions, changes, the age of their data and rollout lag."""
    return [
        graph(
            "Deployments by state",
            "How many deployments are in each status.state (from foundry_live_deployment_state).",
            Query(f"sum by (state) ({recorded('foundry_live_deployment_state', 'max')})", "{{state}}"),
            stacked=True,
        ),
        timeline(
            "Readiness",
            "status.isReady per deployment. ACTIVE deployments scaled to zero are not ready, and that is"
            " normal.",
            Query(
                f"min by (deployment) ({recorded('foundry_live_deployment_ready', 'min')})", "{{deployment}}"
            ),
            (None, "red"),
            (1, "green"),
            names=(("not ready", "red"), ("ready", "green")),
        ),
        table(
            "Current state",
            "The current status.state of every selected deployment, whichever replica watches it.",
            recorded("foundry_live_deployment_state", "max") + " == 1",
            ("deployment", "state", "rid"),
        ),
        graph(
            "State transitions",
            "status.state transitions per deployment, counted by the monitor between consecutive polls: a"
            " FAILED shorter than the scrape interval shows here.",
            Query(
                "sum by (deployment, from_state, to_state)"
                f" ({rate('foundry_live_deployment_state_transitions_total', fn='increase')})",
                "{{deployment}}: {{from_state}} \u2192 {{to_state}}",
            ),
            bars=True,
        ),
        graph(
            "Configuration changes by field",
            "Changes the monitor saw per compared field (model version, replicas, resources, ...).",
            Query(
                f"sum by (field) ({rate('foundry_live_deployment_changes_total', fn='increase')})",
                "{{field}}",
            ),
            bars=True,
        ),
        graph(
            "Data age",
            "Seconds since the last successful poll of each deployment.",
            Query(
                f"time() - {recorded('foundry_live_deployment_last_poll_success_timestamp_seconds', 'max')}",
                "{{deployment}}",
            ),
            unit="s",
        ),
        graph(
            "Rollout lag",
            "Seconds each direct deployment has been behind its branch's newest model version (only those"
            " behind; pinned deployments follow no branch). Past the rollout grace (15m by default) the"
            " rollout is stuck: FoundryDeploymentRolloutStuck.",
            Query(
                "max by (deployment)"
                f" ({recorded('foundry_live_deployment_version_behind_seconds', 'max')} > 0)",
                "{{deployment}}",
            ),
            unit="s",
        ),
    ]


def polling() -> list[Builder[model.Panel]]:
    """The monitor's polling of Foundry: errors, latency, lag, requests and the breaker."""
    return [
        rates_by(
            "Poll errors by kind",
            "Failed polls per second by error kind (not_found is Foundry's answer for a deleted deployment).",
            "foundry_live_deployment_poll_errors_total",
            "error",
            "reqps",
            scope=POLLED,
        ),
        quantiles(
            "Poll latency",
            "Time a poll took, retries included (foundry_monitor_poll_duration_seconds).",
            "foundry_monitor_poll_duration_seconds",
        ),
        quantiles(
            "Schedule lag",
            "How late polls start after their scheduled time: growing lag means the concurrency or request"
            " budget is too small.",
            "foundry_monitor_schedule_lag_seconds",
        ),
        rates_by(
            "Requests to Foundry by code",
            "HTTP requests per second by answer code, retries included; timeout and connection when there was"
            " no answer.",
            "foundry_monitor_requests_total",
            "code",
            "reqps",
        ),
        _polls(),
        timeline(
            "Circuit breaker",
            "The upstream circuit breaker: it opens when nearly every poll fails with a 5xx, a timeout or a"
            " refused connection.",
            Query(
                f"max by (state) ({selector('foundry_monitor_circuit_breaker_state', scope=MONITOR)})",
                "{{state}}",
            ),
            (None, "transparent"),
            (1, "red"),
            width=8,
        ),
        rates_by(
            "Discovery errors",
            "Failed list calls of model discovery per second, by error kind.",
            "foundry_monitor_discovery_errors_total",
            "error",
            "reqps",
            width=12,
        ),
        graph(
            "Deployments watched",
            "Configured and discovered deployments over time.",
            Query(
                f"sum by (instance) ({selector('foundry_monitor_deployments', scope=MONITOR)})",
                "{{instance}}",
            ),
        ),
    ]


def events() -> list[Builder[model.Panel]]:
    """Change events and their delivery to the sinks."""
    return [
        rates_by(
            "Events by type",
            "Change events emitted per second, by type.",
            "foundry_monitor_events_total",
            "type",
            "ops",
        ),
        graph(
            "Sink queue length",
            "Events waiting for delivery, by sink: a queue that keeps growing means the sink cannot keep up"
            " or is failing.",
            Query(
                f"max by (sink) ({selector('foundry_monitor_sink_queue_length', scope=MONITOR)})", "{{sink}}"
            ),
            width=8,
        ),
        graph(
            "Sink failures and drops",
            "Failed deliveries and events dropped because a sink's queue was full, per second.",
            Query(
                f"sum by (sink) ({rate('foundry_monitor_sink_failures_total', scope=MONITOR)})",
                "{{sink}} failed",
            ),
            Query(
                f"sum by (sink) ({rate('foundry_monitor_sink_dropped_events_total', scope=MONITOR)})",
                "{{sink}} dropped",
            ),
            unit="ops",
            width=8,
        ),
    ]


def _seen_unowned(scope: str) -> str:
    """Unowned deployments as the replicas that reach the database see them (the others' view is old)."""
    unowned = selector("foundry_monitor_unowned_deployments", scope=scope)
    database_up = selector("foundry_monitor_database_up", scope=scope)
    return f"{unowned} and on (job, instance) {database_up} == 1"


def _owned() -> timeseries_builder.Panel:
    owned = selector("foundry_monitor_owned_deployments", scope=MONITOR)
    unowned = f"max({_seen_unowned(JOB)}) or vector(0)"
    fleet = f"sum({selector('foundry_monitor_owned_deployments', scope=JOB)}) + ({unowned})"
    return graph(
        "Owned deployments by replica",
        "Deployments each replica watches, stacked, and the fleet: those the replicas of the job own plus"
        " those no live replica holds a lease on. A gap between the bands and the line is deployments nobody"
        " watches.",
        Query(f"sum by (instance) ({owned})", "{{instance}}"),
        Query(fleet, "fleet"),
        stacked=True,
    ).override_by_name(
        "fleet",
        [
            model.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "A"}),
            model.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        ],
    )


def _heartbeat_age() -> str:
    """Seconds since each replica's last heartbeat; a process without leases exports 0 or nothing."""
    return f"time() - ({selector('foundry_monitor_heartbeat_timestamp_seconds', scope=MONITOR)} > 0)"


def _dropped(fn: str, window: str) -> str:
    """The ``rate`` or ``increase`` of the events dropped while the database could not be written."""
    return rate("foundry_monitor_state_dropped_events_total", scope=MONITOR, fn=fn, window=window)


def replicas() -> list[Builder[model.Panel]]:
    """A replica set on PostgreSQL and static shards: who owns what, leases, heartbeats, the database."""
    return [
        stat(
            "Live replicas",
            "Replicas with a recent heartbeat in the state database, as the replicas see it (the most any"
            " sees). No data without leases.",
            f"max({selector('foundry_monitor_replicas', scope=JOB)})",
        ),
        stat(
            "Unowned deployments",
            "Deployments that no live replica holds a lease on, as the replicas that reach the database see"
            " it. For a moment after a replica goes, until the others take its deployments over.",
            f"max({_seen_unowned(JOB)})",
            (1, "red"),
        ),
        stat(
            "Database unreachable",
            "Monitor processes that cannot reach their state database now.",
            count(selector("foundry_monitor_database_up", scope=MONITOR), 0),
            (1, "red"),
        ),
        stat(
            "Events held",
            "Events held in memory because the state database cannot be written; no sink gets them until it"
            " answers again.",
            f"sum({selector('foundry_monitor_state_buffered_events', scope=MONITOR)})",
            (1, "orange"),
        ),
        stat(
            "Events dropped",
            "Held events dropped in the dashboard's time range because more were held than"
            " state.buffer_events: changes no sink will be told about.",
            f"sum({_dropped('increase', '$__range')}) or vector(0)",
            (1, "red"),
        ),
        stat(
            "Oldest heartbeat",
            "Seconds since the last heartbeat of the replica that heartbeat least recently. Past 2 minutes"
            " it no longer counts as covering for a replica that is down.",
            f"max({_heartbeat_age()})",
            (60, "orange"),
            (120, "red"),
            unit="s",
        ),
        _owned(),
        graph(
            "Leases taken and lost",
            "Deployment leases each replica acquired (from an expired owner or from nobody) and lost"
            " (expired, taken or refused by the fence), per second: both at once, over and over, is a replica"
            " set that cannot settle.",
            Query(
                f"sum by (instance) ({rate('foundry_monitor_leases_taken_total', scope=MONITOR)})",
                "{{instance}} taken",
            ),
            Query(
                f"sum by (instance) ({rate('foundry_monitor_leases_lost_total', scope=MONITOR)})",
                "{{instance}} lost",
            ),
            unit="ops",
        ),
        graph(
            "Heartbeat age",
            "Seconds since each replica's last successful heartbeat in the state database (replicas with"
            " leases only).",
            Query(_heartbeat_age(), "{{instance}}"),
            unit="s",
            width=8,
        ),
        timeline(
            "Database up",
            "Whether each monitor process reaches its state database (for a SQLite file: whether it takes"
            " writes).",
            Query(
                f"min by (instance) ({selector('foundry_monitor_database_up', scope=MONITOR)})",
                "{{instance}}",
            ),
            (None, "red"),
            (1, "green"),
            names=(("down", "red"), ("up", "green")),
            width=8,
        ),
        rates_by(
            "Database errors by operation",
            "Failed uses of the state database per second, by operation (append, cursor, heartbeat, lease,"
            " ...).",
            "foundry_monitor_database_errors_total",
            "operation",
            "ops",
        ),
        graph(
            "Events held in memory",
            "Events each process holds in memory while its state database cannot be written.",
            Query(
                f"max by (instance) ({selector('foundry_monitor_state_buffered_events', scope=MONITOR)})",
                "{{instance}}",
            ),
            width=8,
        ),
        graph(
            "Held events dropped",
            "Held events dropped per second because more were held than state.buffer_events.",
            Query(f"sum by (instance) ({_dropped('rate', '$__rate_interval')})", "{{instance}}"),
            unit="ops",
            width=8,
        ),
        table(
            "Static shards",
            "The static shard of each process started with --shard and --total-shards (none otherwise).",
            selector("foundry_monitor_shard_info", scope=MONITOR),
            ("instance", "shard", "total_shards"),
            width=8,
        ),
    ]


def process_row() -> list[Builder[model.Panel]]:
    """The monitor process: memory, CPU and file descriptors."""
    return [
        graph(
            "Memory",
            "Resident memory of the monitor process.",
            process("process_resident_memory_bytes"),
            unit="bytes",
            width=8,
        ),
        graph(
            "CPU",
            "CPU time used by the monitor process per second.",
            Query(rate("process_cpu_seconds_total", scope=MONITOR), "{{instance}}"),
            unit="percentunit",
            width=8,
        ),
        graph(
            "Open file descriptors",
            "Sockets and files the monitor process holds open, against its limit.",
            process("process_open_fds", " open"),
            process("process_max_fds", " max"),
            width=8,
        ),
    ]


# Each row fills the width from the left, then wraps; its panels' order is the reading order.
ROWS = {
    "Overview": overview,
    "Fleet": fleet,
    "Polling": polling,
    "Events and sinks": events,
    "Replicas and shards": replicas,
    "Process": process_row,
}


def label_variable(
    name: str, label: str, metric: str, matchers: str = "", default: str | None = None
) -> dashboard_builder.QueryVariable:
    """A variable over the values of label ``name`` of ``metric``: one value, ``default`` at first, when a
    default is given, else any number of them, All at first."""
    query = f"label_values({metric}{{{matchers}}}, {name})" if matchers else f"label_values({metric}, {name})"
    variable = (
        dashboard_builder.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query({"query": query, "refId": f"{name}-variable"})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(default is None)
        .include_all(default is None)
        .regex("")
        .hide(model.VariableHide.DONT_HIDE)
        .options([])
    )
    if default is not None:
        return variable.current(model.VariableOption(selected=True, text=default, value=default))
    every = model.VariableOption(selected=True, text=["All"], value=["$__all"])
    return variable.all_value(".*").current(every)


def build() -> model.Dashboard:
    """The dashboard, panels numbered in reading order."""
    builder = (
        dashboard_builder.Dashboard("Foundry live deployments")
        .uid("foundry-monitor")
        .description(
            "Live deployments watched by foundry-monitor: state, readiness, transitions, polling, event"
            " delivery and the replica set."
        )
        .tags(["foundry", "foundry-monitor"])
        .version(1)
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone("")
        .refresh("1m")
        .fiscal_year_start_month(0)
        .live_now(False)
        .week_start("")
        .link(
            dashboard_builder.DashboardLink("Runbooks")
            .type(model.DashboardLinkType.LINK)
            .icon("doc")
            .url(RUNBOOKS)
            .target_blank(True)
        )
        .annotation(
            dashboard_builder.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .built_in(1)
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
        .with_variable(
            dashboard_builder.DatasourceVariable("DS_PROMETHEUS")
            .label("Data source")
            .type("prometheus")
            .hide(model.VariableHide.DONT_HIDE)
            .regex("")
        )
        .with_variable(label_variable("job", "Job", "foundry_monitor_build_info", default="foundry-monitor"))
        .with_variable(label_variable("instance", "Instance", "foundry_monitor_build_info", 'job="$job"'))
        .with_variable(label_variable("deployment", "Deployment", "foundry_live_deployment_up", JOB))
    )
    for title, row in ROWS.items():
        builder.with_row(dashboard_builder.Row(title))
        for panel in row():
            builder.with_panel(panel)
    board = builder.build()
    # Grafana links to a panel by its id (viewPanel=N): numbered here in reading order, as the file had them.
    for number, item in enumerate(board.panels or [], start=1):
        item.id_val = number
    return board


def render(board: model.Dashboard) -> str:
    """The dashboard's JSON as committed: keys sorted, indented by two, one trailing newline."""
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if foundry-monitor.json is out of date")
    args = parser.parse_args(argv)
    content = render(build())
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
    if current == content:
        return 0
    if args.check:
        print(f"{OUTPUT.name}: out of date (run python deploy/grafana/dashboard.py)", file=sys.stderr)
        return 1
    OUTPUT.write_text(content, encoding="utf-8")
    print(f"{OUTPUT.name}: written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
