"""Per-deployment metric families rendered at scrape time from the tracker's records, in text or OpenMetrics.

Rendering is pure and synchronous. Samples and label text are formatted afresh on every scrape from the
records and nothing is kept between scrapes, so the renderer holds no memory of its own at any fleet size,
and the payload comes in chunks that the HTTP layer sends (and compresses) one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from monitor.model import KNOWN_STATES, UNKNOWN_STATE, LiveDeployment, ModelVersion, RuntimeConfiguration
from monitor.rollouts import BranchKey
from monitor.tracker import Record, Target

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
VERSION_BEHIND = _family(
    "version_behind", "gauge", "1 when a direct deployment does not run its branch's newest model version"
)
VERSION_BEHIND_SECONDS = _family(
    "version_behind_seconds", "gauge", "Seconds since the newer version a direct deployment lacks appeared"
)
LATEST_VERSION = Family(
    "foundry_model_branch_latest_version_info",
    "gauge",
    "The newest model version of each branch that watched direct deployments follow, value 1 "
    "(from listing the branch's versions).",
)

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


class DeploymentRenderer:
    """Renders the per-deployment families of every record, in chunks.

    Nothing is kept between scrapes: a deployment's label text is made afresh (a few milliseconds for
    10,000; kept, it held 3 MB for as long as the process ran). A scrape first captures what it shows of
    every record, so all families agree even while polls go on, then formats the samples in chunks of about
    ``chunk_size`` characters, so a large fleet's payload can be sent and compressed piece by piece instead
    of held whole.
    """

    def __init__(self, label_names: Sequence[str] = (), *, chunk_size: int = 64 * 1024) -> None:
        self._label_names = tuple(label_names)
        self._chunk_size = chunk_size

    def set_label_names(self, label_names: Sequence[str]) -> None:
        """A reloaded configuration changed the static label set."""
        self._label_names = tuple(label_names)

    def base_labels(self, target: Target) -> str:
        """``rid``, ``deployment`` and the configured static labels (missing ones empty)."""
        text = f'rid="{escape(target.rid)}",deployment="{escape(target.name)}"'
        if not self._label_names:
            return text
        static = dict(target.labels)
        return text + "," + label_text((name, static.get(name, "")) for name in self._label_names)

    def render(self, records: Iterable[Record], *, now: float, staleness: float, openmetrics: bool) -> str:
        """Every per-deployment family as one text."""
        return "".join(self.chunks(self.capture(records, now=now, staleness=staleness), openmetrics))

    def capture(self, records: Iterable[Record], *, now: float, staleness: float) -> list[Row]:
        """What the scrape shows of each record, taken at once (records keep changing while it is sent)."""
        rows: list[Row] = []
        for record in records:
            labels = self.base_labels(record.target)
            stale = record.last_success is None or now - record.last_success > staleness
            snapshot = record.snapshot
            current = snapshot if snapshot is not None and record.found is not False and not stale else None
            lag = record.lag
            direct = current is not None and current.branch is not None
            rows.append(
                Row(
                    labels,
                    current,
                    int(record.up and not stale),
                    None if record.found is None else int(record.found),
                    record.last_change,
                    record.last_success,
                    _counter_lines(TRANSITIONS, labels, record.transitions) if record.transitions else "",
                    _counter_lines(CHANGES, labels, record.changes) if record.changes else "",
                    _counter_lines(POLL_ERRORS, labels, record.errors) if record.errors else "",
                    (lag is not None) if direct else None,
                    (0 if lag is None else round(lag.seconds(now), 3)) if direct else None,
                )
            )
        return rows

    def chunks(self, rows: Sequence[Row], openmetrics: bool) -> Iterator[str]:
        """The families of ``rows``, grouped by family as both formats require, a chunk at a time."""
        current = [row for row in rows if row.current is not None]
        for family, lines, among in _LINES:
            yield family.header(openmetrics)
            chosen = current if among else rows
            if not chosen:
                continue
            # Rows per chunk from the first row's size: label text, and so line length, varies little.
            batch = max(1, self._chunk_size // max(1, len(lines(chosen[0]))))
            for start in range(0, len(chosen), batch):
                yield "".join(map(lines, chosen[start : start + batch]))


class Row(NamedTuple):
    """One deployment as a scrape shows it. ``current`` is the snapshot when it is fresh, else None."""

    labels: str
    current: LiveDeployment | None
    up: int
    found: int | None
    last_change: float | None
    last_success: float | None
    transitions: str
    changes: str
    errors: str
    #: Rollout lag, for a direct deployment with current data only (pinned ones follow no branch).
    behind: bool | None
    behind_seconds: float | None


#: Where a deployment's label text goes in a prepared template (replace scans the template only, so label
#: text is inserted as it is, whatever it holds).
_HOLE = "\0"
_STATE_LINES = {
    label: "".join(
        f'{STATE.name}{{{_HOLE},state="{state}"}} {1 if state == label else 0}\n' for state in _ALL_STATES
    )
    for label in _ALL_STATES
}


_Number = float | int | None


def _counter_lines(family: Family, labels: str, counts: Mapping[Any, int]) -> str:
    name = family.name + "_total"
    if family is TRANSITIONS:
        pairs = (
            (f'from_state="{old}",to_state="{new}"', count) for (old, new), count in sorted(counts.items())
        )
    else:
        label = "field" if family is CHANGES else "error"
        pairs = ((f'{label}="{escape(key)}"', count) for key, count in sorted(counts.items()))
    return "".join(f"{name}{{{labels},{extra}}} {count}\n" for extra, count in pairs)


def _value_line(family: Family, value: Callable[[Row], _Number]) -> Callable[[Row], str]:
    name = family.name

    def line(row: Row) -> str:
        number = value(row)
        # An f-string formats an int as str() and a float as repr(): both exact, as the formats want.
        return "" if number is None else f"{name}{{{row.labels}}} {number}\n"

    return line


def _state_line(row: Row) -> str:
    assert row.current is not None
    return _STATE_LINES[row.current.state_label].replace(_HOLE, row.labels)


def _info_line(row: Row) -> str:
    snapshot = row.current
    assert snapshot is not None
    info = label_text(
        (
            ("model_rid", snapshot.model_rid),
            ("model_version_rid", snapshot.model_version_rid),
            ("branch", snapshot.branch or ""),
        )
    )
    return f"{INFO.name}{{{row.labels},{info}}} 1\n"


def _gpu_line(row: Row) -> str:
    gpu = row.current.runtime.gpu if row.current is not None else None
    if gpu is None:
        return ""
    return f'{GPUS.name}{{{row.labels},gpu_type="{escape(gpu.type or "any")}"}} {gpu.count}\n'


def _runtime(
    get: Callable[[RuntimeConfiguration], float | int | None],
) -> Callable[[Row], float | int | None]:
    def value(row: Row) -> float | int | None:
        return get(row.current.runtime) if row.current is not None else None

    return value


#: Each family, how one row's lines are made, and whether only rows with current data have any.
_LINES: tuple[tuple[Family, Callable[[Row], str], bool], ...] = (
    (STATE, _state_line, True),
    (READY, _value_line(READY, lambda row: None if row.current is None else int(row.current.is_ready)), True),
    (INFO, _info_line, True),
    (MIN_REPLICAS, _value_line(MIN_REPLICAS, _runtime(lambda r: r.min_replicas)), True),
    (MAX_REPLICAS, _value_line(MAX_REPLICAS, _runtime(lambda r: r.max_replicas)), True),
    (CPU, _value_line(CPU, _runtime(lambda r: r.cpu)), True),
    (MEMORY, _value_line(MEMORY, _runtime(lambda r: r.memory_bytes)), True),
    (THREADS, _value_line(THREADS, _runtime(lambda r: r.thread_count)), True),
    (GPUS, _gpu_line, True),
    (
        VERSION_BEHIND,
        _value_line(VERSION_BEHIND, lambda row: None if row.behind is None else int(row.behind)),
        True,
    ),
    (VERSION_BEHIND_SECONDS, _value_line(VERSION_BEHIND_SECONDS, lambda row: row.behind_seconds), True),
    (TRANSITIONS, lambda row: row.transitions, False),
    (CHANGES, lambda row: row.changes, False),
    (LAST_CHANGE, _value_line(LAST_CHANGE, lambda row: row.last_change), False),
    (UP, _value_line(UP, lambda row: row.up), False),
    (FOUND, _value_line(FOUND, lambda row: row.found), False),
    (POLL_ERRORS, lambda row: row.errors, False),
    (LAST_SUCCESS, _value_line(LAST_SUCCESS, lambda row: row.last_success), False),
)


def latest_version_lines(latest: Mapping[BranchKey, ModelVersion], openmetrics: bool) -> str:
    """The newest version of every listed branch (one series per branch, so few even for a large fleet)."""
    lines = [LATEST_VERSION.header(openmetrics)]
    for (model_rid, branch), version in sorted(latest.items()):
        labels = label_text(
            (("model_rid", model_rid), ("branch", branch), ("model_version_rid", version.rid))
        )
        lines.append(f"{LATEST_VERSION.name}{{{labels}}} 1\n")
    return "".join(lines)
