"""Helpers for tests/test_deploy.py: external tools, the service's metric names, Alertmanager and kustomize logic,
and the check of a Grafana dashboard against grafana-foundation-sdk's types."""

from __future__ import annotations

import enum
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TOOL_TIMEOUT = 120.0


def _missing(what: str) -> NoReturn:
    """Outside CI a missing tool skips its test; in CI (``CI`` set) it fails, so a check cannot go silent."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not installed")


def require_tool(name: str) -> str:
    """The path of executable ``name``."""
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} (apt-get install prometheus prometheus-alertmanager)")
    return path


def require_module(name: str) -> ModuleType:
    """Python module ``name``, under the same rule as the tools."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"the Python module {name} (pip install -e '.[test]')")


def run(args: Sequence[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded in time), capturing its output."""
    return subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_script(path: Path) -> ModuleType:
    """A Python file that is not in a package (deploy/kubernetes/generate.py), imported as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module runs
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- metric names ----------------------------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
}


def _sample_names(family: str, kind: str) -> set[str]:
    suffixes = _SUFFIXES.get(kind)
    return {family} if suffixes is None else {family + suffix for suffix in suffixes}


def exported_metric_names() -> frozenset[str]:
    """Every sample name ``/metrics`` can carry: the per-deployment families of ``monitor.exposition`` and the
    process metrics registered by ``monitor.metrics.ProcessMetrics``."""
    from monitor import exposition
    from monitor.metrics import ProcessMetrics

    names: set[str] = set()
    for value in vars(exposition).values():
        if isinstance(value, exposition.Family):
            names |= _sample_names(value.name, value.type)
    for metric in ProcessMetrics().registry.collect():
        names |= _sample_names(metric.name, metric.type)
    return frozenset(names)


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENTIFIER = re.compile(r"(?<![\w:$.])[a-zA-Z_:][\w:]*")


def promql_metric_names(expr: str, prefixes: tuple[str, ...] = ("foundry_", "process_")) -> set[str]:
    """The service metric names an expression selects (identifiers with one of ``prefixes``, outside strings;
    recording rule names, which hold a colon, are not service metrics and are left out)."""
    bare = _QUOTED.sub('""', expr)
    return {token for token in _IDENTIFIER.findall(bare) if token.startswith(prefixes) and ":" not in token}


def recording_rule_names(expr: str) -> set[str]:
    """The recording rule names (``level:metric:operations``) an expression reads."""
    bare = _QUOTED.sub('""', expr)
    return {token for token in _IDENTIFIER.findall(bare) if token.count(":") >= 2}


# --- Grafana ---------------------------------------------------------------------------------------------


def json_differences(expected: Any, actual: Any, path: str = "") -> Iterator[str]:
    """Where two JSON documents differ, as paths (``.panels[3].options.legend``)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(expected.keys() | actual.keys()):
            where = f"{path}.{key}"
            if key not in actual:
                yield f"{where}: dropped"
            elif key not in expected:
                yield f"{where}: added as {json.dumps(actual[key])[:80]}"
            else:
                yield from json_differences(expected[key], actual[key], where)
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            yield from json_differences(left, right, f"{path}[{index}]")
    elif expected != actual or type(expected) is not type(actual):
        yield f"{path}: {json.dumps(expected)[:80]} became {json.dumps(actual)[:80]}"


def sdk_dashboard_problems(document: dict[str, Any]) -> list[str]:
    """What grafana-foundation-sdk's types find wrong with a dashboard document: a field they do not know
    (decoding drops it, so the document does not encode back to itself), a value of the wrong type or outside
    an enumeration, a panel type or a query whose plugin the SDK has no types for. Empty when it fits."""
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    board = Dashboard.from_json(document)
    encoded = json.loads(json.dumps(board, cls=JSONEncoder))
    problems = [f"round trip {difference}" for difference in json_differences(document, encoded)]
    problems += _type_problems(board, Dashboard, "")
    return problems


def _type_problems(value: Any, hint: Any, path: str) -> list[str]:
    """Whether ``value`` (as the SDK decoded it) is of the type the SDK annotates, recursively."""
    from grafana_foundation_sdk.cog import runtime, variants
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Panel

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        if value is None:
            return [] if len(options) < len(typing.get_args(hint)) else [f"{path}: null is not {hint}"]
        matching = [option for option in options if isinstance(option, type) and isinstance(value, option)]
        if len(options) == 1 or matching:
            return _type_problems(value, (matching or options)[0], path)
        fits = any(not _type_problems(value, option, path) for option in options)
        return [] if fits else [f"{path}: {value!r} is none of {hint}"]
    if origin is typing.Literal:
        return [] if value in typing.get_args(hint) else [f"{path}: {value!r} is not one of {hint}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        (item,) = typing.get_args(hint)
        return [
            p
            for index, element in enumerate(value)
            for p in _type_problems(element, item, f"{path}[{index}]")
        ]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not a mapping"]
        _, item = typing.get_args(hint)
        return [p for key, element in value.items() for p in _type_problems(element, item, f"{path}.{key}")]
    if hint is type(None):
        return [] if value is None else [f"{path}: {value!r} is not null"]
    if hint in (Any, object):
        # free-form in the schema (panel options before decoding, transformation options), unless decoded
        return _model_problems(value, path) if hasattr(value, "to_json") else []
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            hint(value)
        except ValueError:
            return [f"{path}: {value!r} is not a {hint.__name__}"]
        return []
    if hint in (int, float):
        number = isinstance(value, int | float) if hint is float else isinstance(value, int)
        return (
            [] if number and not isinstance(value, bool) else [f"{path}: {value!r} is not a {hint.__name__}"]
        )
    if hint in (str, bool):
        return [] if isinstance(value, hint) else [f"{path}: {value!r} is not a {hint.__name__}"]
    if hint is variants.Dataquery:
        if isinstance(value, runtime.UnknownDataquery) or not isinstance(value, hint):
            return [f"{path}: a query of a data source the SDK has no types for"]
        return _model_problems(value, path)
    if isinstance(hint, type) and hasattr(hint, "from_json"):
        if isinstance(value, dict):
            # a nested object the SDK kept as JSON (panel links, transformations): decode it here
            decoded = hint.from_json(value)
            encoded = json.loads(json.dumps(decoded, cls=JSONEncoder))
            problems = [f"round trip {d}" for d in json_differences(value, encoded, path)]
            return problems + _model_problems(decoded, path)
        if not isinstance(value, hint):
            return [f"{path}: {value!r} is not a {hint.__name__}"]
        problems = _model_problems(value, path)
        if isinstance(value, Panel) and runtime.panelcfg_config(value.type_val) is None:
            problems.append(f"{path}: panel type {value.type_val!r} is unknown to the SDK")
        return problems
    return [f"{path}: no check for {hint!r}"]


def _model_problems(value: Any, path: str) -> list[str]:
    hints = typing.get_type_hints(type(value))
    return [
        p
        for name, hint in hints.items()
        for p in _type_problems(getattr(value, name), hint, f"{path}.{name}")
    ]


# --- Prometheus rules ------------------------------------------------------------------------------------


def rules_of(document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every rule of a rule file (or of a PrometheusRule's spec), in order."""
    for group in document["groups"]:
        yield from group["rules"]


# --- Alertmanager ----------------------------------------------------------------------------------------

_MATCHER = re.compile(r'^\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


@dataclass(frozen=True, slots=True)
class Matcher:
    """One Alertmanager label matcher; regular expressions are anchored, a missing label reads as empty."""

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        match = _MATCHER.match(text)
        if match is None:
            raise ValueError(f"not a matcher this helper reads: {text!r}")
        return cls(match.group(1), match.group(2), match.group(3))

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


def _all_match(texts: Sequence[str], labels: Mapping[str, str]) -> bool:
    return all(Matcher.parse(text).matches(labels) for text in texts)


@dataclass(frozen=True, slots=True)
class Routed:
    """Where an alert goes: its receiver and the labels its notifications are grouped by."""

    receiver: str
    group_by: tuple[str, ...]


def route(tree: Mapping[str, Any], labels: Mapping[str, str]) -> Routed:
    """The route an alert takes: the first matching child at each level (no ``continue`` is used), settings
    inherited from the parents."""
    node: Mapping[str, Any] = tree
    receiver = str(tree["receiver"])
    group_by = tuple(tree.get("group_by", ()))
    while True:
        child = next(
            (c for c in node.get("routes", ()) if _all_match(c.get("matchers", ()), labels)),
            None,
        )
        if child is None:
            return Routed(receiver, group_by)
        assert not child.get("continue", False), "this helper follows a single path"
        receiver = str(child.get("receiver", receiver))
        group_by = tuple(child.get("group_by", group_by))
        node = child


def inhibited(
    rules: Sequence[Mapping[str, Any]], target: Mapping[str, str], firing: Sequence[Mapping[str, str]]
) -> bool:
    """Whether some firing alert mutes ``target`` under ``rules`` (Alertmanager's inhibit_rules)."""
    for rule in rules:
        if not _all_match(rule.get("target_matchers", ()), target):
            continue
        for source in firing:
            if source is target or not _all_match(rule.get("source_matchers", ()), source):
                continue
            if all(source.get(name, "") == target.get(name, "") for name in rule.get("equal", ())):
                return True
    return False


# --- Kubernetes ------------------------------------------------------------------------------------------


def strategic_merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch as far as the overlays use it: mappings merge key by key, lists of named
    objects (containers, env, volumes) merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in (*base, *patch))
    ):
        patches = {item["name"]: item for item in patch}
        merged_list = [
            strategic_merge(item, patches.pop(item["name"])) if item["name"] in patches else item
            for item in base
        ]
        return merged_list + list(patches.values())
    return patch


# --- Dockerfile and systemd ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "a continuation line at the end of the Dockerfile"
    return instructions


def dockerignore_allows(patterns: Sequence[str], path: str) -> bool:
    """Whether ``path`` (relative, '/'-separated) is sent to the build: the last matching pattern decides, as
    in Docker; a pattern matching a parent directory covers what is below it."""
    allowed = True
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = _glob_regex(body)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            allowed = negated
    return allowed


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
            continue
        char = pattern[index]
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        index += 1
    return re.compile(out)


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as section -> (key, value) pairs in order; keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], [])
            continue
        assert current is not None, f"an entry outside a section: {line!r}"
        key, _, value = stripped.partition("=")
        current.append((key.strip(), value.strip()))
    return sections
