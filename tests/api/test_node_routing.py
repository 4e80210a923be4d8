"""A real Node in this process (one node, two groups, real Raft on loopback): routing with a
stale table is retried transparently, and the placement admin routes answer from live state.

The "range move" here is test-only: the moved range is empty, so ``set_ownership``
through each group's log is the whole move (the data copy is the placement
issue's next step).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from raftmem import commands as C
from raftmem.config import ClusterSpec, NodeOptions, NodeSpec
from raftmem.errors import EpochMismatch
from raftmem.keyspace import RING_SIZE, OwnedRange, Ownership
from raftmem.node import EPOCH_RETRIES, Node
from raftmem.types import ReadOptions
from tests.api.conftest import serve
from tests.api.helpers import send
from tests.cluster.harness import free_port_block

HALF = RING_SIZE // 2
NS = "ns"
LINEARIZABLE = ReadOptions(consistency="linearizable")


async def until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def one_node(tmp_path: Path) -> AsyncIterator[Node]:
    base = free_port_block(2)
    spec = ClusterSpec(nodes=(NodeSpec("n1", f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"),),
                       groups=2, replicas=1, cluster_id="routing-test")
    node = Node(spec, "n1", str(tmp_path / "n1"), b"secret",
                NodeOptions(durable=False, write_timeout_s=5.0))
    await node.start()
    try:
        await until(lambda: node.readiness()[0], 20, "both groups to elect a leader")
        await node.create_namespace(NS, 3, "l2")
        yield node
    finally:
        await node.stop()


def ids_in(node: Node, group: int, n: int) -> list[str]:
    return [k for k in (f"m{i}" for i in range(10_000)) if node.table.group_for(NS, k) == group][:n]


def mem(mid: str) -> dict[str, Any]:
    return {"id": mid, "agent_id": "a", "text": mid, "embedding": [1.0, 0.0, 0.0]}


async def move_upper_half_to_g0(node: Node, version: int = 2) -> None:
    """Group 1's (empty) upper half becomes group 0's, through both groups' logs."""
    give = Ownership(1, version, 1, ())
    take = Ownership(0, version, 1, (OwnedRange(0, HALF, 1), OwnedRange(HALF, RING_SIZE, version)))
    assert (await node._propose(1, C.set_ownership(give)))["ok"]
    assert (await node._propose(0, C.set_ownership(take)))["ok"]


async def test_writes_and_reads_routed_with_a_stale_table_are_retried(tmp_path: Path) -> None:
    async with one_node(tmp_path) as node:
        stale = node.table
        upper = ids_in(node, 1, 6)
        lower = ids_in(node, 0, 2)
        await move_upper_half_to_g0(node)
        assert node.table is stale  # this node has not heard of the move

        # put: routed to g1 by the stale table, refused, table refreshed, applied at g0.
        m = await node.put_memory(NS, mem(upper[0]), "req-1")
        assert m["id"] == upper[0] and m["version"] == 1
        assert node.table.epoch == (2, 1) and node.routing_refreshes == 1
        assert node.table.group_for(NS, upper[0]) == 0

        # Each call below starts from the stale table again.
        node.table = stale
        got = await node.get_memory(NS, upper[0], LINEARIZABLE)
        assert got["text"] == upper[0] and node.routing_refreshes == 2

        node.table = stale
        results = await node.put_batch(NS, [mem(upper[1]), mem(lower[0]), mem(upper[2])], "b-1")
        assert [r["ok"] for r in results] == [True, True, True]
        assert [r["memory"]["id"] for r in results] == [upper[1], lower[0], upper[2]]

        node.table = stale
        patched = await node.patch_memory(NS, upper[1], {"text": "new"}, 1, None)
        assert patched["version"] == 2

        node.table = stale
        await node.delete_memory(NS, upper[2], None, None)

        # Everything landed in group 0 and nothing in group 1.
        def count(group: int) -> int:
            with node._reader(group).transaction() as r:
                return r.count(NS, 0)

        assert (count(0), count(1)) == (3, 0)
        # The same request id again: deduplicated at g0 (the refusal at g1 recorded nothing).
        node.table = stale
        again = await node.put_memory(NS, mem(upper[0]), "req-1")
        assert again == m


async def test_a_key_no_group_owns_ends_in_a_definite_epoch_mismatch(tmp_path: Path) -> None:
    async with one_node(tmp_path) as node:
        # Group 1 gives its range away and nobody takes it (a move stuck half way).
        assert (await node._propose(1, C.set_ownership(Ownership(1, 2, 1, ()))))["ok"]
        upper = ids_in(node, 1, 1)[0]
        with pytest.raises(EpochMismatch) as info:
            await node.put_memory(NS, mem(upper), None)
        assert info.value.definite is True and info.value.status == 503
        assert info.value.details["ownership"]["group"] == 1
        with pytest.raises(EpochMismatch):
            await node.get_memory(NS, upper, LINEARIZABLE)
        assert node.table.epoch == (2, 1)
        assert EPOCH_RETRIES >= 3
        # Keys of the other group are unaffected.
        assert (await node.put_memory(NS, mem(ids_in(node, 0, 1)[0]), None))["version"] == 1


async def test_placement_admin_routes_on_a_real_node(tmp_path: Path) -> None:
    async with one_node(tmp_path) as node, serve(node, admin_token="t") as client:
        auth = {"Authorization": "Bearer t"}
        status, body = await send(client, "GET", "/admin/ranges", headers=auth)
        assert status == 200, body
        assert body["epoch"] == {"version": 1, "conf_ver": 1}
        assert [(r["start"], r["end"], r["group"]) for r in body["ranges"]] == [
            ("0000000000000000", "8000000000000000", 0), ("8000000000000000", "end", 1)]
        assert all(r["leader"] == "n1" and r["replicas"] == ["n1"] and r["confirmed"]
                   for r in body["ranges"])

        async def plan() -> dict[str, Any]:
            # The PD's view fills as heartbeats arrive (every 0.5 s).
            status, body = await send(client, "POST", "/admin/rebalance?dry_run=true",
                                      headers=auth)
            assert status == 200, body
            return body

        deadline = time.monotonic() + 10
        while True:
            p = await plan()
            leaders = [g["leader"] for g in p["view"]["groups"]]
            if p["view"]["nodes"] == [{"id": "n1", "state": "up"}] \
                    and leaders == ["n1"] * len(leaders) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert p["view"]["nodes"] == [{"id": "n1", "state": "up"}]
        # groups 0 and 1 and the placement driver's own, each led by n1
        assert sorted(g["group"] for g in p["view"]["groups"]) == [0, 1, 65000]
        assert [g["leader"] for g in p["view"]["groups"]] == ["n1"] * 3
        assert p["operators"] == []  # one node, one replica each: nothing to do

        status, body = await send(client, "POST", "/admin/rebalance", headers=auth)
        assert status == 200 and body["dry_run"] is False and body["started"] == [], body
        status, body = await send(client, "GET", "/admin/cluster", headers=auth)
        assert status == 200, body
        assert body["groups"]["0"]["epoch"] == {"version": 1, "conf_ver": 1}
        assert all(g["lag"] >= 0 for g in body["groups"].values())
        assert body["registry"]["n1"]["state"] == "up"
        assert body["placement"]["groups"]["0"]["voters"] == ["n1"]
        status, body = await send(client, "GET", "/admin/operators", headers=auth)
        assert status == 200 and body["running"] == [] and body["counts"]["started"] == 0, body

        await move_upper_half_to_g0(node)
        status, body = await send(client, "GET", "/admin/ranges", headers=auth)
        # The table is still the old one, and says which range its group no longer owns.
        assert [r["confirmed"] for r in body["ranges"]] == [True, False]
        assert body["ranges"][1]["group_epoch"] == {"version": 2, "conf_ver": 1}


async def test_an_orphan_replica_is_dropped_after_the_grace_period(tmp_path: Path,
                                                                   monkeypatch: Any) -> None:
    """A replica whose group's PD record does not list its node (an operator that
    failed between creating a learner and recording it) is dropped, but only
    after ORPHAN_AFTER_S."""
    import raftmem.pd as pd_module

    async with one_node(tmp_path) as node:
        pd = node.pd
        await until(lambda: pd.state.get("bootstrapped"), 10, "the PD's bootstrap")
        state = {**pd.state, "groups": {**pd.state["groups"],
                                        "1": {**pd.state["groups"]["1"], "voters": ["elsewhere"]}}}
        pd.state = state
        await pd.drop_orphans()
        assert 1 in node.host.replicas  # within the grace period: kept
        monkeypatch.setattr(pd_module, "ORPHAN_AFTER_S", 0.0)
        pd.state = state
        await pd.drop_orphans()
        assert 1 not in node.host.replicas and 0 in node.host.replicas
        assert pd.orphans_dropped == 1


async def test_a_point_read_that_finds_the_database_busy_goes_to_a_read_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gets by id run on the event loop through a connection that never waits for a
    lock. In WAL mode a reader is refused only in rare moments (SQLite recovering the
    WAL index after a crash); then the read goes to a read thread, which may wait."""
    import apsw

    async with one_node(tmp_path) as node:
        [mid] = ids_in(node, 0, 1)
        await node.put_memory(NS, mem(mid), None)
        assert (await node.get_memory(NS, mid, LINEARIZABLE))["id"] == mid
        assert node.point_reads_deferred == 0  # served on the loop
        loop_thread = threading.get_ident()
        real = node._reader
        threads: list[bool] = []

        def busy_on_the_loop(group: int, wait: bool = True) -> Any:
            threads.append(threading.get_ident() == loop_thread)
            if not wait:
                raise apsw.BusyError("database is locked")
            return real(group, wait)

        monkeypatch.setattr(node, "_reader", busy_on_the_loop)
        assert (await node.get_memory(NS, mid, ReadOptions("eventual")))["id"] == mid
        assert node.point_reads_deferred == 1
        assert threads == [True, False]  # tried on the loop, then read on a read thread
