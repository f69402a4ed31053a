"""Helpers for tests/test_deploy.py: external tools, the service's metric names, Alertmanager and kustomize logic."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
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
