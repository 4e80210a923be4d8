"""A range move whose nodes crash (kill -9) after each step, in real node processes.

3 nodes, 4 groups of 3 replicas, 300 memories. Three parts of group 0's range
move to other groups; each move is stopped right after one step (freeze,
stage, release: ``stop_after``, as a crash of the driving node there would
end it), then the node that drove it and the leaders of both groups are
killed with SIGKILL and started again, and the move is asked again through
another node. Afterwards: every memory is listed exactly once through every
node and readable by id, each part is owned by exactly one group (its
target) as every node reads the groups' records, and new writes go through.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftmem.keyspace import format_point
from raftmem.placement.routing import initial_table
from tests.cluster.harness import LocalCluster, running_cluster, wait_for

NS = "crash"
DIM = 4
COUNT = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with running_cluster(str(tmp_path_factory.mktemp("rmcrash")), (NS, DIM, "l2")) as c:
        yield c


def memory(i: int) -> dict:
    return {"id": f"m{i}", "agent_id": "a", "text": f"t{i}", "embedding": [float(i % 5), 1.0, 0.5, 2.0]}


def list_all(cluster: LocalCluster, node: str) -> list[str]:
    ids: list[str] = []
    cursor = ""
    while True:
        q = f"/v1/namespaces/{NS}/memories?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        r = cluster.client(node).get(q)
        assert r.status == 200, r
        ids += [m["id"] for m in r.json()["memories"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return ids


def owners(cluster: LocalCluster, node: str, start: int) -> list[int]:
    """The groups whose own record owns ``start`` (as ``node`` reads them)."""
    r = cluster.client(node).get("/admin/cluster")
    assert r.status == 200
    out = []
    for gid, g in r.json()["groups"].items():
        for rng in g.get("ranges") or []:
            lo = int(rng["start"], 16)
            hi = 2**64 if rng["end"] == "end" else int(rng["end"], 16)
            if lo <= start < hi:
                out.append(int(gid))
    return sorted(out)


def restart(cluster: LocalCluster, nodes: set[str]) -> None:
    for n in sorted(nodes):
        cluster.kill(n)
    for n in sorted(nodes):
        cluster.start(n)
    cluster.wait_ready(timeout=60, nodes=sorted(nodes))


def test_a_move_survives_a_crash_after_each_step(cluster: LocalCluster) -> None:
    c = cluster.client("n1")
    for lo in range(0, COUNT, 100):
        r = c.post(f"/v1/namespaces/{NS}/memories/batch",
                   {"memories": [memory(i) for i in range(lo, lo + 100)]})
        assert r.status == 200, r
    table = initial_table(cluster.node_ids, cluster.spec.groups, cluster.spec.replicas)
    (g0,) = [r for r in table.ranges if r.group == 0]
    quarter = (g0.end - g0.start) // 4
    driven = {"freeze": "n1", "stage": "n2", "release": "n3"}
    for k, step in enumerate(("freeze", "stage", "release")):
        start, end = g0.start + k * quarter, g0.start + (k + 1) * quarter
        target = k + 1
        body = {"start": format_point(start), "end": format_point(end), "to_group": target}
        r = cluster.client(driven[step]).post("/admin/ranges/move", {**body, "stop_after": step})
        assert r.status == 200, r
        assert r.json()["steps"][-1]["step"] == step
        # The driver and both groups' leaders die (SIGKILL) and come back.
        victims = {driven[step]} | {n for g in (0, target)
                                    if (n := cluster.leader_of(g)) is not None}
        restart(cluster, victims)
        other = next(n for n in cluster.node_ids if n != driven[step])
        r = wait_for(lambda b=body, o=other: (resp := cluster.client(o).post(
            "/admin/ranges/move", b)).status == 200 and resp, 60, f"the move after {step}")
        assert r.json()["steps"][-1]["step"] == "done", r
        for n in cluster.node_ids:
            assert wait_for(lambda n=n, s=start, t=target: owners(cluster, n, s) == [t] or None, 10,
                            f"{n} to see group {target} alone own the part")
    expected = {f"m{i}" for i in range(COUNT)}
    for n in cluster.node_ids:
        listed = list_all(cluster, n)
        assert len(listed) == len(set(listed)), f"{n} lists a memory twice"
        assert set(listed) == expected, sorted(expected ^ set(listed))[:5]
    for i in range(0, COUNT, 7):
        r = cluster.client(cluster.node_ids[i % 3]).get(f"/v1/namespaces/{NS}/memories/m{i}")
        assert r.status == 200 and r.json()["text"] == f"t{i}", r
    # Writes route to the new owners (a new connection: n1 was restarted).
    c = cluster.client("n1")
    for i in range(COUNT, COUNT + 30):
        r = c.post(f"/v1/namespaces/{NS}/memories", memory(i))
        assert r.status == 201, r
