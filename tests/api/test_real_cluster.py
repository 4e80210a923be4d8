"""The API end to end against a real 3-node cluster: happy paths and bad input.

Bad input must get a clear error, change nothing, and leave every node up.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest

from tests.cluster.harness import Client, LocalCluster, running_cluster, wait_for

NS = "agents"
DIM = 16


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with running_cluster(str(tmp_path_factory.mktemp("api-cluster")), (NS, DIM, "cosine")) as c:
        yield c


def rand_vec(rng: np.random.Generator) -> list[float]:
    return [float(x) for x in rng.standard_normal(DIM)]


def snapshot_state(c: Client) -> list[dict]:
    out, cursor = [], None
    while True:
        r = c.get(f"/v1/namespaces/{NS}/memories?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status == 200, r
        out.extend(r.json()["memories"])
        cursor = r.json()["next_cursor"]
        if not cursor:
            return out


def all_nodes_healthy(cluster: LocalCluster) -> None:
    for nid in cluster.node_ids:
        assert cluster.procs[nid].poll() is None, f"{nid} died:\n{cluster.log_tail(nid)}"
        assert cluster.client(nid).get("/healthz").status == 200


def test_crud_and_search_across_nodes(cluster: LocalCluster) -> None:
    rng = np.random.default_rng(1)
    c1, c2, c3 = (cluster.client(n) for n in ("n1", "n2", "n3"))
    vecs = {}
    for i in range(40):
        v = rand_vec(rng)
        r = c1.post(f"/v1/namespaces/{NS}/memories",
                    {"id": f"m{i}", "agent_id": f"agent{i % 3}", "text": f"memory {i}", "embedding": v,
                     "tags": ["even" if i % 2 == 0 else "odd"], "metadata": {"i": i}})
        assert r.status == 201, r
        assert r.json()["version"] == 1
        vecs[f"m{i}"] = np.asarray(v)
    r = c2.get(f"/v1/namespaces/{NS}/memories/m7")
    assert r.status == 200 and r.json()["text"] == "memory 7" and r.json()["metadata"] == {"i": 7}

    r = c3.patch(f"/v1/namespaces/{NS}/memories/m7", {"text": "seven", "if_version": 1})
    assert r.status == 200 and r.json()["version"] == 2
    r = c1.patch(f"/v1/namespaces/{NS}/memories/m7", {"text": "stale", "if_version": 1})
    assert r.status == 409, r
    assert r.json()["error"]["definite"] is True
    assert c2.get(f"/v1/namespaces/{NS}/memories/m7").json()["text"] == "seven"

    q = rand_vec(rng)
    r = c2.post(f"/v1/namespaces/{NS}/search", {"embedding": q, "k": 5})
    assert r.status == 200, r
    got = [h["memory"]["id"] for h in r.json()["results"]]
    qv = np.asarray(q)
    cos = {k: 1 - float(v @ qv / (np.linalg.norm(v) * np.linalg.norm(qv))) for k, v in vecs.items()}
    expect = sorted(cos, key=lambda k: (cos[k], k))[:5]
    assert got == expect

    r = c3.post(f"/v1/namespaces/{NS}/search",
                {"embedding": q, "k": 50, "filter": {"agent_id": "agent1", "tags_any": ["odd"]}})
    hits = r.json()["results"]
    assert hits and all(h["memory"]["agent_id"] == "agent1" and "odd" in h["memory"]["tags"]
                        for h in hits)
    assert len(hits) == len([i for i in range(40) if i % 3 == 1 and i % 2 == 1])

    assert c1.delete(f"/v1/namespaces/{NS}/memories/m8").status in (200, 204)
    assert c2.get(f"/v1/namespaces/{NS}/memories/m8").status == 404


def test_ttl_memory_is_never_returned_after_expiry(cluster: LocalCluster) -> None:
    c = cluster.client("n2")
    r = c.post(f"/v1/namespaces/{NS}/memories",
               {"id": "ephemeral", "agent_id": "x", "text": "soon gone", "embedding": [1.0] * DIM,
                "ttl_s": 0.3})
    assert r.status == 201, r
    wait_for(lambda: c.get(f"/v1/namespaces/{NS}/memories/ephemeral").status == 404, 10,
             "the expired memory to disappear")


BAD_BODIES = [
    ("malformed json", b'{"agent_id": "a", "text": ', 400),
    ("not an object", b"[1, 2, 3]", 400),
    ("wrong dimension", {"agent_id": "a", "text": "t", "embedding": [1.0] * (DIM + 1)}, 400),
    ("NaN", b'{"agent_id": "a", "text": "t", "embedding": [NaN' + b", 1.0" * (DIM - 1) + b"]}", 400),
    ("overflow to inf", b'{"agent_id": "a", "text": "t", "embedding": [1e999' + b", 1.0" * (DIM - 1)
     + b"]}", 400),
    ("unknown field", {"agent_id": "a", "text": "t", "embedding": [1.0] * DIM, "colour": "red"}, 400),
    ("10,000 tags", {"agent_id": "a", "text": "t", "embedding": [1.0] * DIM,
                     "tags": [f"t{i}" for i in range(10_000)]}, 400),
    ("missing text", {"agent_id": "a", "embedding": [1.0] * DIM}, 400),
]


@pytest.mark.parametrize("name,body,status", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_is_rejected_and_changes_nothing(cluster: LocalCluster, name: str, body: object,
                                                   status: int) -> None:
    c = cluster.client("n1")
    before = snapshot_state(c)
    if isinstance(body, bytes):
        r = c.post(f"/v1/namespaces/{NS}/memories", raw=body)
    else:
        r = c.post(f"/v1/namespaces/{NS}/memories", body)
    assert r.status == status, (name, r)
    err = r.json()["error"]
    assert err["definite"] is True and err["code"] and err["message"]
    assert snapshot_state(c) == before
    all_nodes_healthy(cluster)


def test_unknown_namespace_is_404(cluster: LocalCluster) -> None:
    c = cluster.client("n3")
    r = c.post("/v1/namespaces/nope/memories", {"agent_id": "a", "text": "t", "embedding": [1.0] * DIM})
    assert r.status == 404 and r.json()["error"]["definite"] is True
    assert c.get("/v1/namespaces/nope/memories/x").status == 404
    assert c.post("/v1/namespaces/nope/search", {"embedding": [1.0] * DIM}).status == 404


def test_namespace_dimension_is_fixed(cluster: LocalCluster) -> None:
    c = cluster.client("n2")
    assert c.put(f"/v1/namespaces/{NS}", {"dim": DIM, "metric": "cosine"}).status == 200
    r = c.put(f"/v1/namespaces/{NS}", {"dim": DIM * 2, "metric": "cosine"})
    assert r.status == 409, r


def test_hundred_megabyte_body_gets_413_and_node_survives(cluster: LocalCluster) -> None:
    host, port = cluster.api("n2").split(":")
    before = snapshot_state(cluster.client("n2"))
    size = 100 * 1024 * 1024
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(f"POST /v1/namespaces/{NS}/memories HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk = b" " * (1 << 20)
        sent = 0
        try:
            while sent < size:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server may close the connection once it has answered
        s.settimeout(20)
        head = b""
        try:
            while b"\r\n" not in head:
                part = s.recv(4096)
                if not part:
                    break
                head += part
        except OSError:
            pass
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert snapshot_state(cluster.client("n2")) == before
    all_nodes_healthy(cluster)


def test_openapi_served(cluster: LocalCluster) -> None:
    r = cluster.client("n1").get("/openapi.json")
    assert r.status == 200
    assert "/v1/namespaces/{ns}/memories" in r.json()["paths"]


def test_non_finite_search_vector_is_rejected(cluster: LocalCluster) -> None:
    # Python's json would turn this into a float; the API must refuse it.
    c = cluster.client("n1")
    r = c.post(f"/v1/namespaces/{NS}/search", raw=b'{"embedding": [Infinity' + b", 1" * (DIM - 1) + b"]}")
    assert r.status == 400, r
    assert r.json()["error"]["code"] == "invalid_request"
