"""Tests for monitor.watchset: origins held per deployment, reloads through one lock, stopped discoveries,
and the partition's share of the candidates."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import anyio

from monitor.config import Config, parse_config
from monitor.errors import ServerError
from monitor.metrics import ProcessMetrics
from monitor.model import LiveDeployment
from monitor.partition import Partition, Shard
from monitor.tracker import Target
from monitor.watchset import CONFIG_ORIGIN, WatchSet
from tests.test_discovery import MODEL, rid, snap


def config(deployments: list[Any], discover: list[dict[str, Any]] | None = None) -> Config:
    return parse_config(
        {
            "foundry": {"base_url": "https://f.example.com", "auth": {"token": "t"}},
            "deployments": deployments,
            "discover": discover or [],
        },
        environ={},
    )


class Lister:
    """Lists per (model, branch) from ``answers`` as they stand when the call returns; call number i waits
    for ``gates[i]`` first, when there is one."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str | None], tuple[LiveDeployment, ...] | Exception] = {}
        self.calls: list[tuple[str, str | None]] = []
        self.gates: list[anyio.Event] = []

    async def list_live_deployments(
        self, model_rid: str, branch: str | None = None
    ) -> tuple[LiveDeployment, ...]:
        call = len(self.calls)
        self.calls.append((model_rid, branch))
        if call < len(self.gates):
            await self.gates[call].wait()
        answer = self.answers.get((model_rid, branch), ())
        if isinstance(answer, Exception):
            raise answer
        return answer


class Watcher:
    """The scheduler's side: what is watched now, with the target it was last given."""

    def __init__(self) -> None:
        self.watched: dict[str, Target] = {}
        self.removed: list[str] = []
        self.released: list[str] = []

    def add(self, target: Target) -> None:
        self.watched[target.rid] = target

    def remove(self, rid: str) -> None:
        del self.watched[rid]
        self.removed.append(rid)

    def release(self, rid: str) -> None:
        del self.watched[rid]
        self.released.append(rid)


def make(partition: Partition | None = None) -> tuple[WatchSet, Lister, Watcher]:
    lister, watcher = Lister(), Watcher()
    metrics = ProcessMetrics()
    if partition is None:
        return WatchSet(lister=lister, watcher=watcher, metrics=metrics), lister, watcher
    return WatchSet(lister=lister, watcher=watcher, metrics=metrics, partition=partition), lister, watcher


def owned_gauge(watch: WatchSet) -> float:
    return float(watch._metrics.owned_deployments._value.get())


async def test_configured_deployments_come_and_go_with_the_configuration() -> None:
    """Static deployments are watched with their name; dropping one from the config stops watching it."""
    watch, _, watcher = make()
    async with anyio.create_task_group() as tg:
        await watch.apply(config([{"rid": rid(1), "name": "one"}, rid(2)]), tg)
        assert {r: t.name for r, t in watcher.watched.items()} == {rid(1): "one", rid(2): rid(2)}
        assert watch.origins(rid(1)) == (CONFIG_ORIGIN,)
        await watch.apply(config([rid(2)]), tg)
        tg.cancel_scope.cancel()
    assert list(watcher.watched) == [rid(2)]
    assert watcher.removed == [rid(1)]
    assert watch.origins(rid(1)) == ()


async def test_a_deployment_held_by_config_and_discovery_stays_until_both_let_go() -> None:
    """The config's target wins while it holds a RID; once it lets go the discovered target takes over, and
    the RID is removed only when discovery no longer lists it either."""
    watch, lister, watcher = make()
    lister.answers[(MODEL, None)] = (snap(1), snap(2))
    discover = [{"model_rid": MODEL, "labels": {"team": "ml"}}]
    async with anyio.create_task_group() as tg:
        assert await watch.apply(config([{"rid": rid(1), "name": "pinned"}], discover), tg)
        assert watcher.watched[rid(1)].name == "pinned"
        assert watcher.watched[rid(1)].origin == CONFIG_ORIGIN
        assert watch.origins(rid(1)) == (CONFIG_ORIGIN, f"discover:{MODEL}")
        await watch.apply(config([], discover), tg)
        assert watcher.watched[rid(1)].origin == f"discover:{MODEL}"
        assert dict(watcher.watched[rid(1)].labels) == {"team": "ml"}
        assert watcher.removed == []
        watch.claim(f"discover:{MODEL}", [Target(rid(2), rid(2), (("team", "ml"),), f"discover:{MODEL}")])
        tg.cancel_scope.cancel()
    assert list(watcher.watched) == [rid(2)]
    assert watcher.removed == [rid(1)]


async def test_two_discoveries_of_one_deployment_share_it() -> None:
    """A deployment listed under a model and under its branch stays while either entry follows it."""
    watch, lister, watcher = make()
    lister.answers[(MODEL, None)] = (snap(1),)
    lister.answers[(MODEL, "master")] = (snap(1),)
    both = [{"model_rid": MODEL}, {"model_rid": MODEL, "branch": "master"}]
    async with anyio.create_task_group() as tg:
        await watch.apply(config([], both), tg)
        assert watch.origins(rid(1)) == (f"discover:{MODEL}", f"discover:{MODEL}@master")
        await watch.apply(config([], both[1:]), tg)
        assert list(watcher.watched) == [rid(1)]
        assert watcher.watched[rid(1)].origin == f"discover:{MODEL}@master"
        await watch.apply(config([rid(9)]), tg)
        tg.cancel_scope.cancel()
    assert list(watcher.watched) == [rid(9)]
    assert watch.discovering == {}


async def test_reloads_arriving_together_start_one_discovery_per_model() -> None:
    """Two applies racing (a SIGHUP and a file change) list a new model once and follow it once; removing
    the model then releases every deployment it found, leaving no discovery behind."""
    watch, lister, watcher = make()
    lister.answers[(MODEL, None)] = (snap(1), snap(2))
    lister.gates = [anyio.Event()]
    wanted = config([], [{"model_rid": MODEL, "interval": "1h"}])
    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as reloads:
            reloads.start_soon(watch.apply, wanted, tg)
            reloads.start_soon(watch.apply, wanted, tg)
            with anyio.fail_after(5):
                while not lister.calls:
                    await anyio.sleep(0)
            lister.gates[0].set()
        assert lister.calls == [(MODEL, None)]
        assert set(watcher.watched) == {rid(1), rid(2)}
        assert list(watch.discovering) == [f"discover:{MODEL}"]
        await watch.apply(config([rid(3)]), tg)
        tg.cancel_scope.cancel()
    assert list(watcher.watched) == [rid(3)]
    assert sorted(watcher.removed) == [rid(1), rid(2)]


async def until_called(lister: Lister, times: int) -> None:
    with anyio.fail_after(5):
        while len(lister.calls) < times:
            await anyio.sleep(0)


async def test_a_reload_waits_for_the_one_before_it_so_the_newer_entry_wins() -> None:
    """While one reload's first listing of a model is out, a second reload that changes the entry waits for
    it: the labels of the later reload stand, even when its own listing would have answered first."""
    watch, lister, watcher = make()
    lister.answers[(MODEL, None)] = (snap(1),)
    lister.gates = [anyio.Event(), anyio.Event()]
    first = config([], [{"model_rid": MODEL, "labels": {"team": "old"}}])
    second = config([], [{"model_rid": MODEL, "labels": {"team": "new"}}])
    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as reloads:
            reloads.start_soon(watch.apply, first, tg)
            await until_called(lister, 1)
            reloads.start_soon(watch.apply, second, tg)
            lister.gates[1].set()
            await anyio.wait_all_tasks_blocked()
            lister.gates[0].set()
        tg.cancel_scope.cancel()
    assert dict(watcher.watched[rid(1)].labels) == {"team": "new"}
    assert list(watch.discovering.values()) == list(second.discover)


async def test_a_stopped_discoverys_late_answer_is_ignored() -> None:
    """A claim from an origin no longer followed (its listing was on its way) watches nothing."""
    watch, _, watcher = make()
    async with anyio.create_task_group() as tg:
        await watch.apply(config([rid(1)]), tg)
        tg.cancel_scope.cancel()
    watch.claim(f"discover:{MODEL}", [Target(rid(2), rid(2), (), f"discover:{MODEL}")])
    assert list(watcher.watched) == [rid(1)]


async def test_a_changed_discover_entry_relabels_what_it_follows() -> None:
    """New labels on a discover entry restart its discovery, and its deployments carry the new labels."""
    watch, lister, watcher = make()
    lister.answers[(MODEL, None)] = (snap(1),)
    async with anyio.create_task_group() as tg:
        await watch.apply(config([], [{"model_rid": MODEL, "labels": {"team": "a"}}]), tg)
        await watch.apply(config([], [{"model_rid": MODEL, "labels": {"team": "b"}}]), tg)
        tg.cancel_scope.cancel()
    assert dict(watcher.watched[rid(1)].labels) == {"team": "b"}
    assert len(lister.calls) == 2
    assert watcher.removed == []


async def test_a_model_that_cannot_be_listed_is_reported_and_watches_nothing_yet() -> None:
    """apply() returns False when a new model's first listing failed; the static deployments are watched."""
    watch, lister, watcher = make()
    lister.answers[(MODEL, None)] = ServerError("down", status=503)
    async with anyio.create_task_group() as tg:
        assert not await watch.apply(config([rid(1)], [{"model_rid": MODEL}]), tg)
        tg.cancel_scope.cancel()
    assert list(watcher.watched) == [rid(1)]


class Leases:
    """A partition whose ownership the test sets (as the leased one's is set by its leases): it records what
    it was offered, and wakes the watch set through an Event replaced at each change."""

    def __init__(self) -> None:
        self.mine: set[str] = set()
        self.candidates: set[str] = set()
        self.offers: list[tuple[set[str], set[str]]] = []
        self._changed = anyio.Event()

    def offer(self, added: Set[str], withdrawn: Set[str]) -> None:
        assert not added & self.candidates
        assert withdrawn <= self.candidates
        self.candidates = (self.candidates | added) - withdrawn
        self.offers.append((set(added), set(withdrawn)))

    def owns(self, rid: str) -> bool:
        return rid in self.mine

    async def changed(self) -> None:
        await self._changed.wait()

    def set_mine(self, rids: set[str]) -> None:
        self.mine = rids
        self._changed.set()
        self._changed = anyio.Event()


async def until(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0)


async def test_a_shard_watches_only_its_share_of_configured_and_discovered_deployments() -> None:
    """With a jump-hash shard the watcher gets exactly the candidates the shard owns, configured and
    discovered alike; the model is still listed, and the owned gauge counts what is watched."""
    shard = Shard(1, 3)
    watch, lister, watcher = make(shard)
    lister.answers[(MODEL, None)] = tuple(snap(i) for i in range(20, 60))
    async with anyio.create_task_group() as tg:
        await watch.apply(config([rid(i) for i in range(20)], [{"model_rid": MODEL}]), tg)
        tg.cancel_scope.cancel()
    candidates = {rid(i) for i in range(60)}
    mine = {r for r in candidates if shard.owns(r)}
    assert 0 < len(mine) < len(candidates)
    assert set(watcher.watched) == mine
    assert lister.calls == [(MODEL, None)]
    assert all(watch.candidate(r) for r in candidates)
    assert owned_gauge(watch) == len(mine)


async def test_a_candidate_another_shard_owns_is_never_removed_from_the_watcher() -> None:
    """Dropping a deployment this shard does not watch from the configuration removes nothing here; dropping
    one it watches removes it."""
    shard = Shard(0, 2)
    mine = next(rid(i) for i in range(50) if shard.owns(rid(i)))
    theirs = next(rid(i) for i in range(50) if not shard.owns(rid(i)))
    watch, _, watcher = make(shard)
    async with anyio.create_task_group() as tg:
        await watch.apply(config([mine, theirs]), tg)
        await watch.apply(config([mine]), tg)
        assert watcher.removed == []
        assert not watch.candidate(theirs)
        await watch.apply(config([theirs]), tg)
        tg.cancel_scope.cancel()
    assert watcher.removed == [mine]
    assert owned_gauge(watch) == 0


async def test_ownership_changes_add_and_remove_what_the_partition_says() -> None:
    """The watch set offers each candidate once (and withdraws it once, when its last origin lets go), and
    after the partition says ownership changed it watches exactly the candidates it now owns, with the
    configuration's name: none before, two after the first change, one after the second. A candidate it
    no longer owns is released quietly; one that is no candidate any more is removed."""
    leases = Leases()
    watch, lister, watcher = make(leases)
    lister.answers[(MODEL, None)] = (snap(1), snap(2), snap(3))
    async with anyio.create_task_group() as tg:
        await watch.apply(config([{"rid": rid(1), "name": "one"}], [{"model_rid": MODEL}]), tg)
        assert leases.candidates == {rid(1), rid(2), rid(3)}
        assert watcher.watched == {}
        leases.set_mine({rid(1), rid(2), rid(9)})
        await until(lambda: len(watcher.watched) == 2)
        assert watcher.watched[rid(1)].name == "one"
        assert set(watcher.watched) == {rid(1), rid(2)}
        assert owned_gauge(watch) == 2
        leases.set_mine({rid(2), rid(3)})
        leases.set_mine({rid(2)})
        await until(lambda: rid(1) not in watcher.watched)
        assert set(watcher.watched) == {rid(2)}
        await watch.apply(config([], [{"model_rid": MODEL}]), tg)
        assert leases.candidates == {rid(1), rid(2), rid(3)}
        await watch.apply(config([rid(7)]), tg)
        tg.cancel_scope.cancel()
    assert leases.candidates == {rid(7)}
    assert leases.offers[0] == ({rid(1)}, set())
    assert sum(len(added) for added, _ in leases.offers) == 4
    assert sum(len(withdrawn) for _, withdrawn in leases.offers) == 3
    assert watcher.released == [rid(1)]  # still a candidate: it moved, quietly
    assert watcher.removed == [rid(2)]  # no candidate any more: removed
