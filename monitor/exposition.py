"""Per-deployment metric families rendered at scrape time from the tracker's records, in text or OpenMetrics.

Rendering is pure and synchronous. Each record's samples are cached per family and keyed by the record's
``version`` and staleness, so a scrape of a large fleet is mostly string joins; only the poll-success
timestamps, which change on every poll, are formatted afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monitor.model import KNOWN_STATES, UNKNOWN_STATE
from monitor.tracker import Record

PREFIX = "foundry_live_deployment_"
_ALL_STATES = (*KNOWN_STATES, UNKNOWN_STATE)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family's metadata. ``name`` is the family name (no ``_total`` for counters)."""

    name: str
    type: str
    help: str

    def header(self, openmetrics: bool) -> str:
        # The text format names a counter by its sample name; OpenMetrics by the family name.
        shown = self.name + "_total" if self.type == "counter" and not openmetrics else self.name
        return f"# HELP {shown} {self.help}\n# TYPE {shown} {self.type}\n"


def _family(suffix: str, kind: str, help_text: str) -> Family:
    return Family(PREFIX + suffix, kind, help_text + " (from polling the Foundry API).")


# Families whose samples say what the deployment is now: dropped when the data is stale or it is gone.
STATE = _family("state", "gauge", "1 for the deployment's current status.state, 0 for the others")
READY = _family("ready", "gauge", "1 when status.isReady was true at the last successful poll")
INFO = _family("info", "gauge", "Model, model version and branch of the deployment, value 1")
MIN_REPLICAS = _family("min_replicas", "gauge", "runtimeConfiguration.minReplicas")
MAX_REPLICAS = _family("max_replicas", "gauge", "runtimeConfiguration.maxReplicas")
CPU = _family("cpu_cores", "gauge", "runtimeConfiguration.cpu in cores")
MEMORY = _family("memory_bytes", "gauge", "runtimeConfiguration.memory in bytes")
THREADS = _family("threads", "gauge", "runtimeConfiguration.threadCount")
GPUS = _family("gpus", "gauge", "runtimeConfiguration.gpu.count by GPU type")
CURRENT = (STATE, READY, INFO, MIN_REPLICAS, MAX_REPLICAS, CPU, MEMORY, THREADS, GPUS)

TRANSITIONS = _family(
    "state_transitions", "counter", "status.state transitions seen between consecutive polls"
)
CHANGES = _family("changes", "counter", "Changes seen per compared field")
LAST_CHANGE = _family(
    "last_change_timestamp_seconds", "gauge", "Unix time at which the monitor last saw a change"
)
UP = _family("up", "gauge", "1 when the last poll got an answer, 0 when it failed or the data is stale")
FOUND = _family("found", "gauge", "0 after Foundry answered LiveDeploymentNotFound, else 1")
POLL_ERRORS = _family("poll_errors", "counter", "Failed polls by error kind")
HISTORY = (TRANSITIONS, CHANGES, LAST_CHANGE, UP, FOUND, POLL_ERRORS)

CACHED = (*CURRENT, *HISTORY)
LAST_SUCCESS = _family(
    "last_poll_success_timestamp_seconds", "gauge", "Unix time of the last poll that got an answer"
)


def escape(value: str) -> str:
    """A label value escaped for both exposition formats."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def label_text(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


class DeploymentRenderer:
    """Renders the per-deployment families of every record, caching each record's samples."""

    def __init__(self, label_names: Sequence[str] = ()) -> None:
        self._label_names = tuple(label_names)
        self._cache: dict[str, tuple[int, bool, str, tuple[str, ...]]] = {}

    def set_label_names(self, label_names: Sequence[str]) -> None:
        """A reloaded configuration changed the static label set: every cached sample is stale."""
        if tuple(label_names) != self._label_names:
            self._label_names = tuple(label_names)
            self._cache.clear()

    def base_labels(self, record: Record) -> str:
        """``rid``, ``deployment`` and the configured static labels (missing ones empty)."""
        target = record.target
        static = dict(target.labels)
        pairs = [("rid", target.rid), ("deployment", target.name)]
        pairs.extend((name, static.get(name, "")) for name in self._label_names)
        return label_text(pairs)

    def render(self, records: Iterable[Record], *, now: float, staleness: float, openmetrics: bool) -> str:
        """Every per-deployment family, grouped by family as both formats require."""
        rows: list[tuple[str, tuple[str, ...], float | None]] = []
        live: set[str] = set()
        for record in records:
            rid = record.target.rid
            live.add(rid)
            stale = record.last_success is None or now - record.last_success > staleness
            cached = self._cache.get(rid)
            if cached is None or cached[0] != record.version or cached[1] != stale:
                labels = self.base_labels(record)
                cached = (record.version, stale, labels, self._samples(record, labels, stale))
                self._cache[rid] = cached
            rows.append((cached[2], cached[3], record.last_success))
        for gone in self._cache.keys() - live:
            del self._cache[gone]
        parts: list[str] = []
        for index, family in enumerate(CACHED):
            parts.append(family.header(openmetrics))
            parts.extend(row[1][index] for row in rows)
        parts.append(LAST_SUCCESS.header(openmetrics))
        name = LAST_SUCCESS.name
        parts.extend(f"{name}{{{labels}}} {_number(ts)}\n" for labels, _, ts in rows if ts is not None)
        return "".join(parts)

    def _samples(self, record: Record, labels: str, stale: bool) -> tuple[str, ...]:
        snapshot = record.snapshot
        current = snapshot is not None and record.found is not False and not stale
        out: dict[Family, str] = dict.fromkeys(CACHED, "")
        if current and snapshot is not None:
            label = snapshot.state_label
            out[STATE] = "".join(
                f'{STATE.name}{{{labels},state="{state}"}} {1 if state == label else 0}\n'
                for state in _ALL_STATES
            )
            out[READY] = f"{READY.name}{{{labels}}} {int(snapshot.is_ready)}\n"
            info = label_text(
                (
                    ("model_rid", snapshot.model_rid),
                    ("model_version_rid", snapshot.model_version_rid),
                    ("branch", snapshot.branch or ""),
                )
            )
            out[INFO] = f"{INFO.name}{{{labels},{info}}} 1\n"
            runtime = snapshot.runtime
            values: tuple[tuple[Family, float | int | None], ...] = (
                (MIN_REPLICAS, runtime.min_replicas),
                (MAX_REPLICAS, runtime.max_replicas),
                (CPU, runtime.cpu),
                (MEMORY, runtime.memory_bytes),
                (THREADS, runtime.thread_count),
            )
            for family, value in values:
                if value is not None:
                    out[family] = f"{family.name}{{{labels}}} {_number(value)}\n"
            if runtime.gpu is not None:
                gpu_type = escape(runtime.gpu.type or "any")
                out[GPUS] = f'{GPUS.name}{{{labels},gpu_type="{gpu_type}"}} {runtime.gpu.count}\n'
        out[TRANSITIONS] = "".join(
            f'{TRANSITIONS.name}_total{{{labels},from_state="{old}",to_state="{new}"}} {count}\n'
            for (old, new), count in sorted(record.transitions.items())
        )
        out[CHANGES] = "".join(
            f'{CHANGES.name}_total{{{labels},field="{escape(name)}"}} {count}\n'
            for name, count in sorted(record.changes.items())
        )
        if record.last_change is not None:
            out[LAST_CHANGE] = f"{LAST_CHANGE.name}{{{labels}}} {_number(record.last_change)}\n"
        out[UP] = f"{UP.name}{{{labels}}} {int(record.up and not stale)}\n"
        if record.found is not None:
            out[FOUND] = f"{FOUND.name}{{{labels}}} {int(record.found)}\n"
        out[POLL_ERRORS] = "".join(
            f'{POLL_ERRORS.name}_total{{{labels},error="{kind}"}} {count}\n'
            for kind, count in sorted(record.errors.items())
        )
        return tuple(out[family] for family in CACHED)
