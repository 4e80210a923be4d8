"""Every route's happy path through the fake service."""

from __future__ import annotations

from raftmem.types import ReadOptions, SearchFilter
from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import DIM, item, seeded, send


async def test_healthz(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        assert await send(client, "GET", "/healthz") == (
            200, {"status": "ok", "node_id": "fake-1"})


async def test_readyz_ready_and_not_ready(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/readyz")
        assert (status, body["ready"]) == (200, True)
        fake.ready = False
        status, body = await send(client, "GET", "/readyz")
        assert (status, body) == (503, {"ready": False, "detail": {"groups": {"g1": "no_leader"}}})


async def test_openapi_is_served(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/openapi.json")
    assert status == 200
    assert body["openapi"] == "3.1.0"


async def test_put_namespace_creates_then_is_idempotent(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        async with client.put("/v1/namespaces/ns1", json={"dim": 8, "metric": "l2"}) as resp:
            assert resp.status == 201
            assert resp.headers["Location"] == "/v1/namespaces/ns1"
            assert (await resp.json())["dim"] == 8
        status, body = await send(client, "PUT", "/v1/namespaces/ns1",
                                  json={"dim": 8, "metric": "l2"})
        assert (status, body["metric"]) == (200, "l2")
    assert fake.namespaces["ns1"]["dim"] == 8


async def test_get_and_list_namespaces(fake: FakeMemoryService) -> None:
    await fake.create_namespace("b-ns", 4, "cosine")
    await fake.create_namespace("a_ns", 2, "l2")
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/v1/namespaces/b-ns")
        assert (status, body["dim"], body["metric"]) == (200, 4, "cosine")
        status, body = await send(client, "GET", "/v1/namespaces")
    assert status == 200
    assert [ns["name"] for ns in body["namespaces"]] == ["a_ns", "b-ns"]


async def test_post_memory_with_every_field(fake: FakeMemoryService) -> None:
    await fake.create_namespace("ns1", DIM, "cosine")
    request = item(id="m:1.a-b_c", metadata={"source": "chat", "n": [1, {"x": None}]},
                   tags=["lock", "t2"], ttl_s=1.5, request_id="req-1", embedding=[1, 2, 3.5])
    async with (
        serve(fake) as client,
        client.post("/v1/namespaces/ns1/memories", json=request) as resp,
    ):
        assert resp.status == 201
        assert resp.headers["Location"] == "/v1/namespaces/ns1/memories/m:1.a-b_c"
        body = await resp.json()
    assert "embedding" not in body
    assert body["id"] == "m:1.a-b_c"
    assert body["version"] == 1
    assert body["expires_at"] == body["created_at"] + 1500
    name, (ns, memory, request_id) = fake.calls[-1]
    assert (name, ns, request_id) == ("put_memory", "ns1", "req-1")
    assert memory == {key: value for key, value in request.items() if key != "request_id"}
    assert all(isinstance(x, float) for x in memory["embedding"])


async def test_post_memory_minimal_gets_an_assigned_id(fake: FakeMemoryService) -> None:
    await fake.create_namespace("ns1", DIM, "cosine")
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/v1/namespaces/ns1/memories", json=item())
    assert status == 201
    assert body["id"] == "m-000001"
    assert fake.calls[-1][1][1] == item()  # no defaults invented for optional fields


async def test_retried_post_with_same_request_id_applies_once(fake: FakeMemoryService) -> None:
    await fake.create_namespace("ns1", DIM, "cosine")
    async with serve(fake) as client:
        first = await send(client, "POST", "/v1/namespaces/ns1/memories",
                           json=item(request_id="r1"))
        again = await send(client, "POST", "/v1/namespaces/ns1/memories",
                           json=item(request_id="r1"))
    assert first == again
    assert len(fake.memories["ns1"]) == 1


async def test_get_memory_with_and_without_embedding(fake: FakeMemoryService) -> None:
    await seeded(fake)
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/v1/namespaces/ns1/memories/a")
        assert (status, body["id"], "embedding" in body) == (200, "a", False)
        status, body = await send(client, "GET",
                                  "/v1/namespaces/ns1/memories/a?include_embedding=true")
        assert (status, body["embedding"]) == (200, [1.0, 0.0, 0.0])
        status, body = await send(client, "GET",
                                  "/v1/namespaces/ns1/memories/a?include_embedding=false")
        assert (status, "embedding" in body) == (200, False)
    assert fake.calls[0] == ("get_memory", ("ns1", "a", ReadOptions(), False))
    assert fake.calls[1][1][3] is True


async def test_patch_memory(fake: FakeMemoryService) -> None:
    await seeded(fake)
    patch = {"text": "new", "embedding": [0, 1, 0], "metadata": {"m": 2}, "tags": ["z"],
             "agent_id": "agent-9", "ttl_s": 10, "if_version": 1, "request_id": "p1"}
    async with serve(fake) as client:
        status, body = await send(client, "PATCH", "/v1/namespaces/ns1/memories/a", json=patch)
    assert status == 200
    assert (body["text"], body["tags"], body["agent_id"], body["version"]) == (
        "new", ["z"], "agent-9", 2)
    assert body["metadata"] == {"m": 2}
    assert "embedding" not in body
    assert fake.memories["ns1"]["a"]["embedding"] == [0.0, 1.0, 0.0]
    name, (ns, memory_id, fields, if_version, request_id) = fake.calls[-1]
    assert (name, ns, memory_id, if_version, request_id) == ("patch_memory", "ns1", "a", 1, "p1")
    assert set(fields) == {"text", "embedding", "metadata", "tags", "agent_id", "ttl_s"}


async def test_patch_with_stale_version_is_409(fake: FakeMemoryService) -> None:
    await seeded(fake)
    async with serve(fake) as client:
        status, body = await send(client, "PATCH", "/v1/namespaces/ns1/memories/a",
                                  json={"text": "x", "if_version": 7})
    assert status == 409
    assert body["error"]["code"] == "version_mismatch"
    assert body["error"]["current_version"] == 1
    assert body["error"]["definite"] is True
    assert fake.memories["ns1"]["a"]["text"] == "the sky is blue"


async def test_delete_memory(fake: FakeMemoryService) -> None:
    await seeded(fake)
    async with serve(fake) as client:
        status, body = await send(client, "DELETE", "/v1/namespaces/ns1/memories/a")
        assert (status, body) == (200, {"deleted": True, "namespace": "ns1", "id": "a"})
        status, _ = await send(client, "DELETE", "/v1/namespaces/ns1/memories/b?if_version=1",
                               headers={"Content-Type": "application/json"})
        assert status == 200
        status, _ = await send(client, "DELETE", "/v1/namespaces/ns1/memories/c",
                               json={"if_version": 1, "request_id": "d1"})
        assert status == 200
    assert fake.memories["ns1"] == {}
    assert [c[1][2:] for c in fake.calls] == [(None, None), (1, None), (1, "d1")]


async def test_delete_with_stale_version_is_409(fake: FakeMemoryService) -> None:
    await seeded(fake)
    async with serve(fake) as client:
        status, body = await send(client, "DELETE", "/v1/namespaces/ns1/memories/a?if_version=2")
    assert (status, body["error"]["code"]) == (409, "version_mismatch")
    assert "a" in fake.memories["ns1"]


async def test_list_memories_pages_and_filters(fake: FakeMemoryService) -> None:
    await seeded(fake)
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/v1/namespaces/ns1/memories?limit=2")
        assert status == 200
        assert [m["id"] for m in body["memories"]] == ["a", "b"]
        assert all("embedding" not in m for m in body["memories"])
        cursor = body["next_cursor"]
        status, body = await send(client, "GET", "/v1/namespaces/ns1/memories",
                                  params={"limit": "2", "cursor": cursor})
        assert ([m["id"] for m in body["memories"]], body["next_cursor"]) == (["c"], None)
        status, body = await send(client, "GET", "/v1/namespaces/ns1/memories",
                                  params={"agent_id": "agent-1", "tag": "x"})
        assert [m["id"] for m in body["memories"]] == ["a"]
    assert fake.calls[0][1] == ("ns1", None, None, 2, None, ReadOptions())
    assert fake.calls[2][1][:5] == ("ns1", "agent-1", "x", 100, None)  # default limit


async def test_batch(fake: FakeMemoryService) -> None:
    await seeded(fake)
    batch = {"memories": [item(id="n1"), item(id="a")],
             "request_id": "b1"}
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/v1/namespaces/ns1/memories/batch", json=batch)
    assert status == 200
    ok, exists = body["results"]
    assert ok["ok"] is True and ok["memory"]["id"] == "n1" and "embedding" not in ok["memory"]
    assert (exists["ok"], exists["error"]["code"]) == (False, "already_exists")
    assert fake.calls[-1][1][2] == "b1"


async def test_search(fake: FakeMemoryService) -> None:
    await seeded(fake)
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/v1/namespaces/ns1/search",
                                  json={"embedding": [1, 0.1, 0], "k": 2})
        assert status == 200
        assert [r["memory"]["id"] for r in body["results"]] == ["a", "b"]
        assert all("embedding" not in r["memory"] for r in body["results"])
        assert body["results"][0]["score"] > body["results"][1]["score"]
        assert body["results"][0]["distance"] < body["results"][1]["distance"]
        status, body = await send(client, "POST", "/v1/namespaces/ns1/search",
                                  json={"embedding": [1, 0, 0], "include_embedding": True,
                                        "filter": {"tags_all": ["x", "y"]}})
        assert [r["memory"]["embedding"] for r in body["results"]] == [[0.0, 1.0, 0.0]]
    name, (ns, embedding, k, flt, opts) = fake.calls[0]
    assert (name, ns, embedding, k, flt, opts) == (
        "search", "ns1", [1.0, 0.1, 0.0], 2, SearchFilter(), ReadOptions())
    assert fake.calls[1][1][2] == 10  # default k


async def test_search_filter_is_passed_whole(fake: FakeMemoryService) -> None:
    await seeded(fake)
    where = {"agent_id": "agent-1", "tags_any": ["x", "q"], "tags_all": ["x"],
             "metadata": {"k": 1}, "created_after": 5, "created_before": 2**42}
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/v1/namespaces/ns1/search",
                                  json={"embedding": [0, 0, 1], "filter": where})
    assert status == 200
    assert [r["memory"]["id"] for r in body["results"]] == ["a"]
    flt = fake.calls[-1][1][3]
    assert flt == SearchFilter(agent_id="agent-1", tags_any=("x", "q"), tags_all=("x",),
                               metadata={"k": 1}, created_after=5, created_before=2**42)


async def test_admin_cluster(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/admin/cluster")
    assert status == 200
    assert body["nodes"][0]["id"] == "fake-1"


async def test_body_is_json_whatever_the_content_type_says(fake: FakeMemoryService) -> None:
    """curl -d sends application/x-www-form-urlencoded; the body is still read as JSON."""
    await fake.create_namespace("ns1", DIM, "cosine")
    async with serve(fake) as client:
        status, body = await send(
            client, "POST", "/v1/namespaces/ns1/memories",
            data=b'{"agent_id": "a", "text": "t", "embedding": [1, 0, 0]}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert status == 201, body
