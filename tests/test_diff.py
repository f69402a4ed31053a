"""Tests for monitor.diff: the pure comparison of snapshots."""

from __future__ import annotations

import dataclasses

from hypothesis import given

from monitor.diff import FieldChange, apply_changes, diff
from monitor.model import Gpu, LiveDeployment, compared_fields
from tests.strategies import snapshots


@given(snapshots)
def test_diff_of_a_snapshot_with_itself_is_empty(a: LiveDeployment) -> None:
    """diff(a, a) reports nothing."""
    assert diff(a, a) == ()


@given(snapshots, snapshots)
def test_applying_the_changes_gives_the_other_snapshots_fields(a: LiveDeployment, b: LiveDeployment) -> None:
    """Applying diff(a, b) to a's compared fields gives exactly b's compared fields."""
    assert apply_changes(compared_fields(a), diff(a, b)) == compared_fields(b)


@given(snapshots, snapshots)
def test_diff_is_empty_exactly_when_the_compared_fields_agree(a: LiveDeployment, b: LiveDeployment) -> None:
    """A change is reported iff some compared field differs."""
    assert (diff(a, b) == ()) == (compared_fields(a) == compared_fields(b))


@given(snapshots)
def test_state_change_is_reported_with_old_and_new(a: LiveDeployment) -> None:
    """A state flip is a change of status.state with both values."""
    other = "FAILED" if a.state != "FAILED" else "ACTIVE"
    changes = diff(a, dataclasses.replace(a, state=other))
    assert changes == (FieldChange("status.state", a.state, other),)


@given(snapshots)
def test_cpu_compares_as_a_number(a: LiveDeployment) -> None:
    """cpu 1 and 1.0 are the same value."""
    one = dataclasses.replace(a, runtime=dataclasses.replace(a.runtime, cpu=1))
    one_point_zero = dataclasses.replace(a, runtime=dataclasses.replace(a.runtime, cpu=1.0))
    assert diff(one, one_point_zero) == ()


@given(snapshots)
def test_environment_variables_change_by_name_and_digest(a: LiveDeployment) -> None:
    """A variable whose digest changes is reported under its own path, valued by digests only."""
    before = dataclasses.replace(a, runtime=dataclasses.replace(a.runtime, environment=(("KEY", "d1"),)))
    after = dataclasses.replace(a, runtime=dataclasses.replace(a.runtime, environment=(("KEY", "d2"),)))
    assert diff(before, after) == (FieldChange("runtimeConfiguration.environmentVariables.KEY", "d1", "d2"),)


@given(snapshots)
def test_gpu_added_is_reported_as_new_fields(a: LiveDeployment) -> None:
    """Fields that appear show as changes from None."""
    without = dataclasses.replace(a, runtime=dataclasses.replace(a.runtime, gpu=None))
    with_gpu = dataclasses.replace(a, runtime=dataclasses.replace(a.runtime, gpu=Gpu(2, "T4")))
    assert set(diff(without, with_gpu)) == {
        FieldChange("runtimeConfiguration.gpu.count", None, 2),
        FieldChange("runtimeConfiguration.gpu.type", None, "T4"),
    }


def test_metric_field_collapses_environment_variables() -> None:
    """The metric label of an env var change is bounded: one field for all variables."""
    change = FieldChange("runtimeConfiguration.environmentVariables.SECRET_NAME", "a", "b")
    assert change.metric_field == "runtimeConfiguration.environmentVariables"
    assert FieldChange("status.state", "A", "B").metric_field == "status.state"
