"""Requests for shard groups a node does not host: forwarded to a node that does.

A real 3-node cluster in this process (real Raft on loopback, each node's API
served on its own port, so forwarding goes over real HTTP) with 3 groups of 2
replicas: every node lacks one group. Everything below goes through the public
API of a node, or through the internal endpoints directly where the point is
what they refuse.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from api import create_app
from raftmem import commands, session
from raftmem.config import ClusterSpec, NodeOptions, NodeSpec
from raftmem.node import INTERNAL_HEADER, Node, internal_credential
from raftmem.placement.routing import place_replicas
from raftmem.statemachine.reader import ReadSpec
from raftmem.types import ReadOptions
from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import assert_error, send, until
from tests.cluster.harness import free_port_block

NS = "ns"
DIM = 4
IDS = ("n1", "n2", "n3")
SECRET = b"remote-groups-secret"
TIERS = ("linearizable", "lease", "session", "eventual")
WRITE_TIMEOUT_S = 2.0
PLACEMENT = place_replicas(list(IDS), 3, 2)


@dataclass
class Cluster:
    nodes: dict[str, Node]
    clients: dict[str, TestClient[Any, Any]]
    stack: AsyncExitStack
    stopped: set[str] = field(default_factory=set)

    def hosts(self, group: int) -> list[str]:
        return list(PLACEMENT[group])

    def lacking(self, group: int) -> str:
        (node,) = [n for n in IDS if n not in PLACEMENT[group]]
        return node

    def group_of(self, memory_id: str) -> int:
        return self.nodes["n1"].table.group_for(NS, memory_id)

    def ids_in(self, group: int, n: int, prefix: str = "m") -> list[str]:
        found = (f"{prefix}{i}" for i in range(10_000))
        return [k for k in found if self.group_of(k) == group][:n]

    async def stop(self, node_id: str) -> None:
        await self.clients[node_id].close()  # the node's HTTP server goes first
        await self.nodes[node_id].stop()
        self.stopped.add(node_id)


@asynccontextmanager
async def three_nodes(tmp_path: Path) -> AsyncIterator[Cluster]:
    base = free_port_block(6)
    spec = ClusterSpec(
        nodes=tuple(NodeSpec(n, f"127.0.0.1:{base + 2 * i}", f"127.0.0.1:{base + 2 * i + 1}")
                    for i, n in enumerate(IDS)),
        groups=3, replicas=2, cluster_id="remote-groups-test",
    )
    opts = NodeOptions(durable=False, write_timeout_s=WRITE_TIMEOUT_S, read_timeout_s=2.0)
    async with AsyncExitStack() as stack:
        c = Cluster({}, {}, stack)
        for i, n in enumerate(IDS):
            node = Node(spec, n, str(tmp_path / n), SECRET, opts)
            await node.start()
            c.nodes[n] = node

            async def stop(n: str = n) -> None:
                if n not in c.stopped:
                    await c.nodes[n].stop()

            stack.push_async_callback(stop)
            server = TestServer(create_app(node), host="127.0.0.1", port=base + 2 * i)
            c.clients[n] = await stack.enter_async_context(TestClient(server))
        for n, node in c.nodes.items():
            # The premise: each node hosts exactly the groups the placement gives it.
            assert node._local_groups() == [g for g in range(3) if n in PLACEMENT[g]]

        async def ready() -> bool:
            return all(node.readiness()[0] for node in c.nodes.values())

        await until(ready, 30, "every group to elect a leader")
        status, body = await send(c.clients["n3"], "PUT", f"/v1/namespaces/{NS}",
                                  json={"dim": DIM, "metric": "l2"})
        assert status == 201, body  # n3 lacks the catalog group 0: forwarded
        yield c


def mem(mid: str, vec: list[float], agent: str = "a", tags: list[str] | None = None) -> dict[str, Any]:
    return {"id": mid, "agent_id": agent, "text": f"text of {mid}", "embedding": vec,
            "tags": tags or [], "metadata": {"k": mid, "x": 0.1}}


async def get(client: TestClient[Any, Any], mid: str, tier: str,
              token: str | None = None, **params: str) -> tuple[int, Any, Any]:
    headers = {"Raftmem-Session": token} if token else {}
    async with client.get(f"/v1/namespaces/{NS}/memories/{mid}",
                          params={"consistency": tier, **params}, headers=headers) as r:
        return r.status, await r.json(), r.headers


def test_premise_every_node_lacks_one_group() -> None:
    assert PLACEMENT == {0: ("n1", "n2"), 1: ("n2", "n3"), 2: ("n3", "n1")}
    for n in IDS:
        assert len([g for g, m in PLACEMENT.items() if n not in m]) == 1


async def test_forwarded_writes_are_read_through_every_node_at_every_tier(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as c:
        for g in range(3):
            writer = c.lacking(g)
            (mid,) = c.ids_in(g, 1)
            vec = [float(g), 1.0, 2.0, 3.5]
            async with c.clients[writer].post(f"/v1/namespaces/{NS}/memories",
                                              json=mem(mid, vec)) as r:
                assert r.status == 201, await r.text()
                stored = await r.json()
                token = r.headers["Raftmem-Session"]
            assert stored["id"] == mid and stored["version"] == 1
            # The forwarded write's entry index reached the token.
            written = session.decode(token)[g]
            assert written > 0

            for reader in IDS:
                for tier in TIERS:
                    async def found(reader: str = reader, tier: str = tier, mid: str = mid,
                                    token: str = token) -> Any:
                        status, body, headers = await get(
                            c.clients[reader], mid, tier, token if tier == "session" else None,
                            include_embedding="true")
                        # Only an eventual read may miss a write that was acknowledged.
                        assert status == 200 or (tier == "eventual" and status == 404), body
                        return (body, headers) if status == 200 else None

                    body, headers = await until(found, 10, f"{mid} on {reader} at {tier}")
                    assert {k: v for k, v in body.items() if k != "embedding"} == stored
                    assert body["embedding"] == vec
                    assert headers["Raftmem-Consistency"] == tier
                    assert session.decode(headers["Raftmem-Session"])[g] >= written
                    if tier == "eventual":
                        assert headers["Raftmem-Replica"] in c.hosts(g)
                        assert f'"{g}"' in headers["Raftmem-Applied-Index"]


async def test_a_forwarded_writes_token_gives_read_your_writes_on_another_node(
    tmp_path: Path,
) -> None:
    async with three_nodes(tmp_path) as c:
        for g in range(3):
            writer = c.lacking(g)
            for i, mid in enumerate(c.ids_in(g, 5, prefix="s")):
                async with c.clients[writer].post(
                        f"/v1/namespaces/{NS}/memories",
                        json=mem(mid, [1.0, 0.0, 0.0, float(i)])) as r:
                    assert r.status == 201
                    token = r.headers["Raftmem-Session"]
                # Read at once, session tier, on each hosting node (one of them may be
                # a follower that has not applied the write yet: it must wait for it).
                for reader in c.hosts(g):
                    status, body, headers = await get(c.clients[reader], mid, "session", token)
                    assert status == 200, body
                    assert body["id"] == mid and body["version"] == 1
                    assert session.decode(headers["Raftmem-Session"])[g] >= session.decode(token)[g]
                # And a patch forwarded from the node lacking the group, read back elsewhere.
                async with c.clients[writer].patch(
                        f"/v1/namespaces/{NS}/memories/{mid}",
                        json={"text": "patched", "if_version": 1}) as r:
                    assert r.status == 200, await r.text()
                    token = r.headers["Raftmem-Session"]
                other = c.hosts(g)[i % 2]
                status, body, _ = await get(c.clients[other], mid, "session", token)
                assert status == 200 and body["text"] == "patched" and body["version"] == 2


async def test_list_search_and_batch_span_every_group_through_any_node(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as c:
        rng = np.random.default_rng(7)
        ids = [f"b{i:02d}" for i in range(30)]
        vecs = {mid: [float(x) for x in rng.standard_normal(DIM).astype(np.float32)] for mid in ids}
        assert {c.group_of(mid) for mid in ids} == {0, 1, 2}
        batch = [mem(mid, vecs[mid], agent=f"a{i % 2}", tags=["odd"] if i % 2 else [])
                 for i, mid in enumerate(ids)]
        status, body = await send(c.clients["n1"], "POST", f"/v1/namespaces/{NS}/memories/batch",
                                  json={"memories": batch, "request_id": "batch-1"})
        assert status == 200, body
        assert [r["ok"] for r in body["results"]] == [True] * len(ids)
        assert [r["memory"]["id"] for r in body["results"]] == ids

        # The same batch again is deduplicated, group by group, wherever the parts went.
        status, again = await send(c.clients["n1"], "POST", f"/v1/namespaces/{NS}/memories/batch",
                                   json={"memories": batch, "request_id": "batch-1"})
        assert status == 200 and again == body

        q = [0.5, -0.25, 1.0, 0.125]
        dist = {mid: float(np.linalg.norm(np.asarray(v, dtype=np.float64) - np.asarray(q)))
                for mid, v in vecs.items()}
        answers = []
        for n in IDS:
            status, listed = await send(c.clients[n], "GET", f"/v1/namespaces/{NS}/memories",
                                        params={"limit": "1000"})
            assert status == 200, listed
            assert [m["id"] for m in listed["memories"]] == ids
            assert listed["next_cursor"] is None

            # Pages whose items come from local and forwarded groups alike.
            paged, cursor = [], None
            while True:
                params = {"limit": "7", "agent_id": "a1", "consistency": "session"}
                if cursor:
                    params["cursor"] = cursor
                status, page = await send(c.clients[n], "GET", f"/v1/namespaces/{NS}/memories",
                                          params=params)
                assert status == 200, page
                paged += [m["id"] for m in page["memories"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert paged == ids[1::2]

            status, found = await send(c.clients[n], "POST", f"/v1/namespaces/{NS}/search",
                                       json={"embedding": q, "k": 8})
            assert status == 200, found
            hits = found["results"]
            assert [h["memory"]["id"] for h in hits] == sorted(ids, key=lambda m: (dist[m], m))[:8]
            for h in hits:
                assert abs(h["distance"] - dist[h["memory"]["id"]]) < 1e-4

            status, filtered = await send(
                c.clients[n], "POST", f"/v1/namespaces/{NS}/search",
                json={"embedding": q, "k": 100, "filter": {"tags_any": ["odd"]}})
            assert status == 200, filtered
            got = [h["memory"]["id"] for h in filtered["results"]]
            assert got == sorted(ids[1::2], key=lambda m: (dist[m], m))
            answers.append((listed, found, filtered))
        # Each node has its own mix of local and forwarded groups; the answers agree.
        assert answers[0] == answers[1] == answers[2]


async def test_forwarded_reads_return_exactly_what_the_local_replica_returns(
    tmp_path: Path,
) -> None:
    async with three_nodes(tmp_path) as c:
        for g in range(3):
            for i, mid in enumerate(c.ids_in(g, 3, prefix="x")):
                vec = [0.1 * (i + 1), 1 / 3, -2.5e-7, 1e10]
                await c.nodes[c.lacking(g)].put_memory(NS, mem(mid, vec, tags=["t"]), None)
        t = int(time.time() * 1000)
        specs = [
            ReadSpec("list", {"ns": NS, "agent_id": None, "tag": "t", "limit": 100,
                              "after_id": None, "now_ms": t}),
            ReadSpec("search", {"ns": NS, "vector": [0.1, 0.2, 0.3, 0.4], "k": 5,
                                "filter": {"agent_id": "a"}, "now_ms": t}),
            ReadSpec("get_namespace", {"ns": NS}),
            ReadSpec("list_namespaces"),
            ReadSpec("ownership"),
        ]
        opts = ReadOptions(consistency="linearizable")
        for g in range(3):
            mid = c.ids_in(g, 1, prefix="x")[0]
            get_spec = ReadSpec("get", {"ns": NS, "id": mid, "now_ms": None,
                                        "include_embedding": True})
            for spec in [*specs, get_spec]:
                here = await c.nodes[c.hosts(g)[0]]._query(g, opts, spec)
                forwarded = await c.nodes[c.lacking(g)]._query(g, opts, spec)
                assert here, (g, spec.op)
                assert forwarded == here, (g, spec.op)
                assert repr(forwarded) == repr(here), (g, spec.op)  # same types, same floats


async def test_internal_endpoints_refuse_requests_without_the_credential(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as c:
        (mid,) = c.ids_in(1, 1)
        host = c.clients[c.hosts(1)[0]]
        vec = [1.0, 2.0, 3.0, 4.0]
        payload = commands.encode(commands.put(NS, {**mem(mid, vec), "expires_at": None},
                                               int(time.time() * 1000), "forged", [1, 1]))
        read = {"spec": ReadSpec("get_namespace", {"ns": NS}).to_dict(), "tier": "eventual",
                "need": 0, "max_staleness_ms": None}
        before = await c.nodes["n2"].digests()
        for headers in ({}, {INTERNAL_HEADER: "0" * 64},
                        {INTERNAL_HEADER: internal_credential(b"another cluster")}):
            status, body = await send(host, "POST", "/internal/groups/1/propose",
                                      data=payload, headers=headers)
            error = assert_error(status, body, 403, "forbidden")
            assert "internal" in error["message"]
            status, body = await send(host, "POST", "/internal/groups/1/read",
                                      json=read, headers=headers)
            assert_error(status, body, 403, "forbidden")
        # Nothing was written: not readable anywhere, and the replica's content is unchanged.
        for n in IDS:
            status, body, _ = await get(c.clients[n], mid, "linearizable")
            assert_error(status, body, 404, "not_found")
        assert (await c.nodes["n2"].digests())["groups"]["1"]["digest"] == \
            before["groups"]["1"]["digest"]

        # With the credential, the node serves it; a node without the group refuses.
        auth = {INTERNAL_HEADER: internal_credential(SECRET)}
        status, body = await send(host, "POST", "/internal/groups/1/read", json=read, headers=auth)
        assert status == 200 and body["result"]["name"] == NS, body
        status, body = await send(c.clients[c.lacking(1)], "POST", "/internal/groups/1/read",
                                  json=read, headers=auth)
        assert_error(status, body, 503, "not_hosted")
        status, body = await send(host, "POST", "/internal/groups/1/propose",
                                  data=b"\x01not json", headers=auth)
        assert_error(status, body, 400, "invalid_request")

    # A service that is no node takes no internal requests at all.
    async with serve(FakeMemoryService()) as client:
        status, body = await send(client, "POST", "/internal/groups/0/read", json=read,
                                  headers={INTERNAL_HEADER: internal_credential(SECRET)})
        assert_error(status, body, 403, "forbidden")


async def test_a_forwarded_write_to_a_stopped_group_fails_definitely_in_time(
    tmp_path: Path,
) -> None:
    async with three_nodes(tmp_path) as c:
        g = 1
        writer = c.lacking(g)
        first, second = c.ids_in(g, 2)
        status, _ = await send(c.clients[writer], "POST", f"/v1/namespaces/{NS}/memories",
                               json=mem(first, [1.0, 1.0, 1.0, 1.0]))
        assert status == 201  # through the same pooled connections that are about to go away
        for n in c.hosts(g):
            await c.stop(n)

        started = time.monotonic()
        status, body = await send(c.clients[writer], "POST", f"/v1/namespaces/{NS}/memories",
                                  json=mem(second, [1.0, 1.0, 1.0, 1.0]))
        took = time.monotonic() - started
        error = assert_error(status, body, 503, "unavailable")  # definite: nothing written
        assert "unreachable" in error["message"], error
        assert took < WRITE_TIMEOUT_S + 1.0, took

        started = time.monotonic()
        status, body, _ = await get(c.clients[writer], first, "eventual")
        assert_error(status, body, 503, "unavailable")
        assert time.monotonic() - started < 10
