"""The pure comparison of two snapshots into typed field changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from monitor.model import FieldValue, LiveDeployment, compared_fields


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One compared field that differs: its API path, and the old and new value (None: absent)."""

    path: str
    old: FieldValue | None
    new: FieldValue | None

    @property
    def metric_field(self) -> str:
        """A bounded label for metrics: environment variables collapse into one field."""
        prefix = "runtimeConfiguration.environmentVariables"
        return prefix if self.path.startswith(prefix) else self.path


def diff_fields(old: Mapping[str, FieldValue], new: Mapping[str, FieldValue]) -> tuple[FieldChange, ...]:
    """Changes between two flat views, in a stable order (sorted by path)."""
    changes = [
        FieldChange(path, old.get(path), new.get(path))
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    ]
    return tuple(changes)


def diff(old: LiveDeployment, new: LiveDeployment) -> tuple[FieldChange, ...]:
    """What changed from ``old`` to ``new`` in every compared field; empty when nothing did."""
    return diff_fields(compared_fields(old), compared_fields(new))


def apply_changes(fields: Mapping[str, FieldValue], changes: Iterable[FieldChange]) -> dict[str, FieldValue]:
    """``fields`` with ``changes`` applied; the inverse of ``diff_fields`` (its property tests rely on it)."""
    result = dict(fields)
    for change in changes:
        if change.new is None:
            result.pop(change.path, None)
        else:
            result[change.path] = change.new
    return result
