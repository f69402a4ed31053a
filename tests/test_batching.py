"""Tests for monitor.batching: which deployments a list refreshes, group bookkeeping, matching an answer."""

from __future__ import annotations

import dataclasses

from monitor.batching import Batches, group_key, match
from monitor.model import LiveDeployment
from monitor.tracker import Record, Target
from tests.test_scheduler import MODEL
from tests.test_scheduler import snapshot as scheduler_snapshot


def snapshot(rid: str, *, branch: str | None = "master", state: str = "ACTIVE") -> LiveDeployment:
    """The scheduler tests' snapshot, tracking ``master`` unless told otherwise."""
    return scheduler_snapshot(rid, state, branch)


def settled(rid: str, **kwargs: object) -> Record:
    return Record(target=Target(rid, rid), snapshot=snapshot(rid, **kwargs), found=True, up=True)  # type: ignore[arg-type]


def test_a_settled_direct_deployment_belongs_to_its_model_and_branch() -> None:
    """A found, answering, settled deployment with a branch is refreshed by (model, branch)'s list."""
    assert group_key(settled("a")) == (MODEL, "master")


def test_pinned_unanswered_failing_missing_or_unsettled_deployments_poll_alone() -> None:
    """No branch, no answer yet, a failed last poll, a 404, a transition or a just-seen change: own GET."""
    assert group_key(settled("a", branch=None)) is None
    assert group_key(Record(target=Target("a", "a"))) is None
    assert group_key(dataclasses.replace(settled("a"), up=False)) is None
    assert group_key(dataclasses.replace(settled("a"), found=False)) is None
    assert group_key(settled("a", state="STARTING")) is None
    assert group_key(dataclasses.replace(settled("a"), changed_last_poll=True)) is None


def test_placing_moves_a_deployment_between_groups_and_drops_emptied_ones() -> None:
    """A deployment is in one group at most; a group with no member left is gone."""
    batches = Batches()
    batches.place("a", (MODEL, "master"))
    batches.place("b", (MODEL, "master"))
    batches.place("a", (MODEL, "staging"))
    assert batches.members((MODEL, "master")) == ("b",)
    assert batches.group_of("a") == (MODEL, "staging")
    assert (len(batches), batches.batched) == (2, 2)
    batches.place("a", None)
    assert (len(batches), batches.batched) == (1, 1)
    assert batches.members((MODEL, "staging")) == ()


def test_an_answer_is_matched_to_the_members_and_strangers_are_ignored() -> None:
    """Members named get their snapshot; members not named are missing; others in the answer are ignored."""
    answer = (snapshot("b"), snapshot("stranger"), snapshot("a"))
    matched = match(("a", "b", "c"), answer)
    assert [(rid, s.rid) for rid, s in matched.present] == [("a", "a"), ("b", "b")]
    assert matched.missing == ("c",)


def test_the_members_of_a_group_share_one_key() -> None:
    """Each member holds the group's one key tuple, not the equal copy its placement was asked with; a group
    emptied and formed again takes the new key."""
    first, second, third = (tuple([MODEL, "master"]) for _ in range(3))
    batches = Batches()
    batches.place("a", first)
    batches.place("b", second)
    assert batches.group_of("a") is batches.group_of("b") is first
    batches.place("a", None)
    batches.place("b", None)
    batches.place("c", third)
    assert batches.group_of("c") is third
    assert (len(batches), batches.members(third)) == (1, ("c",))
