"""A 4th node joins a loaded 3-node cluster under a continuous read/write load.

Real nodes in this process (real Raft on loopback, each node's API on its own
port, nodes talk over real HTTP), 4 data groups of 3 replicas, 20,000
memories. The 4th node registers (POST /admin/nodes); the placement driver
then rebalances by itself: learners on the new node catch up (from a
snapshot), are promoted, old replicas are removed after leadership moves off
them. Throughout, clients write and read through every node; the only errors
they may see are definite ones they retry. At the end: the new node holds its
share of replicas and leads a group, and every memory is readable through
every node.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import apsw
from aiohttp.test_utils import TestClient, TestServer

from api import create_app
from raftmem.config import ClusterSpec, NodeOptions, NodeSpec
from raftmem.errors import Unavailable
from raftmem.node import Node
from raftmem.pd import PD_GROUP
from tests.api.helpers import send, until
from tests.cluster.harness import free_port_block

NS = "ns"
DIM = 8
MEMORIES = 20_000
BATCH = 500
REBALANCE_TIMEOUT_S = 240.0


def memory(mid: str, rng: random.Random) -> dict[str, Any]:
    return {"id": mid, "agent_id": f"agent-{rng.randrange(20)}", "text": f"memory {mid}",
            "embedding": [rng.random() for _ in range(DIM)], "tags": ["t"]}


class Load:
    """Writers and readers through every node until stopped; what they saw."""

    def __init__(self, clients: dict[str, TestClient[Any, Any]], loaded: list[str]) -> None:
        self.clients = clients
        self.loaded = loaded
        self.written: list[str] = []
        self.ok = Counter[str]()
        self.retried = Counter[str]()  # definite refusals, retried
        self.errors: list[tuple[str, int, Any]] = []  # anything else: a failure
        self.stop = asyncio.Event()

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """One request, retried while the answer is a definite refusal (nothing done)."""
        deadline = time.monotonic() + 20
        while True:
            node = random.choice(sorted(self.clients))
            status, body = await send(self.clients[node], method, path, **kw)
            definite = isinstance(body, dict) and body.get("error", {}).get("definite") is True
            if status == 503 and definite and time.monotonic() < deadline:
                self.retried[body["error"]["code"]] += 1
                await asyncio.sleep(0.05)
                continue
            return status, body

    async def writer(self, w: int) -> None:
        rng = random.Random(w)
        i = 0
        while not self.stop.is_set():
            mid = f"w{w}-{i}"
            status, body = await self.call("POST", f"/v1/namespaces/{NS}/memories",
                                           json={**memory(mid, rng), "request_id": mid})
            if status in (200, 201):
                self.written.append(mid)
                self.ok["write"] += 1
            else:
                self.errors.append(("write " + mid, status, body))
            i += 1

    async def reader(self, r: int) -> None:
        rng = random.Random(1000 + r)
        while not self.stop.is_set():
            mid = rng.choice(self.loaded)
            status, body = await self.call("GET", f"/v1/namespaces/{NS}/memories/{mid}")
            if status == 200 and body.get("id") == mid:
                self.ok["read"] += 1
            else:
                self.errors.append(("read " + mid, status, body))


async def all_ids(client: TestClient[Any, Any]) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        q = f"/v1/namespaces/{NS}/memories?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        status, body = await send(client, "GET", q)
        assert status == 200, body
        ids.update(m["id"] for m in body["memories"])
        cursor = body.get("next_cursor")
        if not cursor:
            return ids


def memories_in(path: str) -> int:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(next(conn.execute("SELECT count(*) FROM memories"))[0])
    finally:
        conn.close()


async def scenario(tmp: Path) -> dict[str, Any]:
    base = free_port_block(8)
    specs = [NodeSpec(f"n{i + 1}", f"127.0.0.1:{base + 2 * i}", f"127.0.0.1:{base + 2 * i + 1}")
             for i in range(4)]
    spec = ClusterSpec(nodes=tuple(specs[:3]), groups=4, replicas=3, cluster_id="join-test")
    opts = NodeOptions(durable=False, write_timeout_s=5.0)
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        nodes: dict[str, Node] = {}
        clients: dict[str, TestClient[Any, Any]] = {}

        async def start(s: NodeSpec, joining: NodeSpec | None = None) -> None:
            node = Node(spec, s.id, str(tmp / s.id), b"join-secret", opts, joining=joining)
            await node.start()
            nodes[s.id] = node
            stack.push_async_callback(node.stop)
            server = TestServer(create_app(node), host="127.0.0.1", port=int(s.api.rsplit(":")[1]))
            clients[s.id] = await stack.enter_async_context(TestClient(server))

        for s in specs[:3]:
            await start(s)

        async def ready() -> bool:
            return all(n.readiness()[0] for n in nodes.values()) \
                and bool(nodes["n1"].pd.state.get("bootstrapped"))

        await until(ready, 30, "the cluster and its placement driver")
        status, body = await send(clients["n1"], "PUT", f"/v1/namespaces/{NS}",
                                  json={"dim": DIM, "metric": "l2"})
        assert status == 201, body
        rng = random.Random(7)
        loaded = [f"m{i}" for i in range(MEMORIES)]
        for i in range(0, MEMORIES, BATCH):
            status, body = await send(
                clients[specs[(i // BATCH) % 3].id], "POST", f"/v1/namespaces/{NS}/memories/batch",
                json={"memories": [memory(m, rng) for m in loaded[i:i + BATCH]]})
            assert status == 200, body
        before = {n: sorted(node._local_groups()) for n, node in nodes.items()}

        load = Load(dict(clients), loaded)
        tasks = [asyncio.create_task(load.writer(w)) for w in range(2)]
        tasks += [asyncio.create_task(load.reader(r)) for r in range(2)]
        t0 = time.monotonic()
        await start(specs[3], joining=specs[3])
        status, body = await send(clients["n2"], "POST", "/admin/nodes", json=specs[3].to_dict())
        assert status == 200, body
        load.clients = dict(clients)  # the new node takes requests too

        async def progress() -> dict[str, Any] | None:
            try:
                return await nodes["n1"].operators()
            except Unavailable:
                return None  # the placement driver's leadership is moving: ask again

        async def balanced() -> bool:
            ops = await progress()
            if ops is None:
                return False
            hosted = len(nodes["n4"]._local_groups())
            return bool(ops["balanced"] and ops["counts"]["done"] > 0 and hosted >= 2
                        and not ops["running"])

        await until(balanced, REBALANCE_TIMEOUT_S, "the rebalance to complete")
        out["rebalance_seconds"] = time.monotonic() - t0
        load.stop.set()
        await asyncio.gather(*tasks)
        ops = await until(progress, 30, "the placement driver's progress")
        out["operators"] = ops["counts"]
        out["failed_operators"] = [(r["kind"], r["group"], r["error"]) for r in ops["failed"]]

        state = nodes["n1"].pd.state
        counts = Counter(n for g in state["groups"].values() for n in g["voters"])
        out["replicas"] = dict(counts)
        out["groups"] = {g: (v["voters"], v["learners"], v["conf_ver"])
                         for g, v in state["groups"].items()}
        out["progress"] = {k: ops[k] for k in ("balanced", "passes", "counts")}
        out["pd_load"] = ops.get("load")
        out["hosted_before"] = before
        out["hosted_after"] = {n: sorted(node._local_groups()) for n, node in nodes.items()}
        leaders = {g: st["leader"] for node in nodes.values()
                   for g, st in node.host.status().items() if st["role"] == "leader"}
        out["leaders"] = leaders
        # Data moved: the memories the new node's replicas hold, over all the
        # replicas' memories (each memory is held by 3 replicas).
        moved = sum(memories_in(nodes["n4"]._db_path(g)) for g in nodes["n4"]._local_groups())
        total = sum(memories_in(node._db_path(g))
                    for node in nodes.values() for g in node._local_groups())
        out["fraction_moved"] = moved / max(1, total)
        out["load"] = {"ok": dict(load.ok), "retried": dict(load.retried),
                       "errors": load.errors[:5], "error_count": len(load.errors)}
        expected = set(loaded) | set(load.written)
        out["missing"] = {n: len(expected - await all_ids(c)) for n, c in clients.items()}
        out["pd_voters"] = state["groups"][str(PD_GROUP)]["voters"]
    return out


def test_a_fourth_node_joins_under_load_and_the_cluster_rebalances(tmp_path: Path) -> None:
    out = asyncio.run(scenario(tmp_path))
    print("join scenario:", {k: out[k] for k in ("rebalance_seconds", "operators", "replicas",
                                                 "fraction_moved", "load", "leaders",
                                                 "failed_operators")})
    # An operator may fail a step (e.g. a leadership transfer whose target fell
    # behind under the load) and be planned again; the end state is what counts.
    assert out["operators"]["done"] > 0, out
    counts = out["replicas"]
    mean = sum(counts.values()) / 4
    assert all(abs(counts.get(n, 0) - mean) <= 1 for n in ("n1", "n2", "n3", "n4")), \
        (counts, out["groups"], out["progress"], out["failed_operators"])
    assert "n4" in out["leaders"].values(), out["leaders"]
    # The PD's view of the load: n4's replicas and the bytes of its databases.
    load = out["pd_load"]["n4"]
    assert load["replicas"] == counts["n4"] and load["data_bytes"] > 1_000_000, out["pd_load"]
    assert out["load"]["error_count"] == 0, out["load"]
    assert out["load"]["ok"].get("write", 0) > 0 and out["load"]["ok"].get("read", 0) > 0
    assert out["missing"] == {"n1": 0, "n2": 0, "n3": 0, "n4": 0}, out["missing"]
