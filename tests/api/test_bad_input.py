"""Bad input gets 400 ``invalid_request`` naming the field, never reaches the service,
and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import DIM, assert_error, assert_invalid, item, seeded, send

MEMORIES = "/v1/namespaces/ns1/memories"
MEMORY = "/v1/namespaces/ns1/memories/a"
SEARCH = "/v1/namespaces/ns1/search"
BATCH = "/v1/namespaces/ns1/memories/batch"
NAMESPACE = "/v1/namespaces/ns2"


def raw(text: str) -> dict[str, Any]:
    return {"data": text.encode(), "headers": {"Content-Type": "application/json"}}


def js(body: Any) -> dict[str, Any]:
    return {"json": body}


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


EMB = "[1, 0, 0]"

# (id, method, path, request kwargs, the field the error must name)
CASES: list[tuple[str, str, str, dict[str, Any], str | None]] = [
    # --- the body as a whole
    ("malformed json", "POST", MEMORIES, raw('{"agent_id": "a", "text": '), None),
    ("trailing garbage", "POST", MEMORIES, raw('{"agent_id": "a"} x'), None),
    ("empty body", "POST", MEMORIES, raw(""), None),
    ("whitespace body", "POST", MEMORIES, raw("  \n"), None),
    ("array body", "POST", MEMORIES, raw("[1, 2, 3]"), None),
    ("string body", "POST", MEMORIES, raw('"hello"'), None),
    ("null body", "POST", MEMORIES, raw("null"), None),
    ("invalid utf-8", "POST", MEMORIES, {"data": b'{"text": "\xff"}'}, None),
    ("lone surrogate", "POST", MEMORIES, raw('{"text": "\\ud800"}'), None),
    ("nested 2000 deep", "POST", MEMORIES, raw("[" * 2000 + "]" * 2000), None),
    ("no body at all", "POST", SEARCH, {}, None),
    # --- non-finite numbers: not JSON, and never turned into floats
    ("NaN", "POST", MEMORIES, raw('{"agent_id": "a", "text": "t", "embedding": [NaN, 0, 0]}'),
     None),
    ("Infinity", "POST", MEMORIES,
     raw('{"agent_id": "a", "text": "t", "embedding": [Infinity, 0, 0]}'), None),
    ("-Infinity", "POST", MEMORIES,
     raw('{"agent_id": "a", "text": "t", "embedding": [-Infinity, 0, 0]}'), None),
    ("overflow to inf", "POST", MEMORIES,
     raw('{"agent_id": "a", "text": "t", "embedding": [1e999, 0, 0]}'), None),
    ("NaN in metadata", "POST", MEMORIES,
     raw(f'{{"agent_id": "a", "text": "t", "embedding": {EMB}, "metadata": {{"x": NaN}}}}'),
     None),
    ("NaN search", "POST", SEARCH, raw('{"embedding": [0, NaN, 0]}'), None),
    ("beyond float32", "POST", MEMORIES, js(item(embedding=[1e39, 0, 0])), "embedding[0]"),
    # --- unknown and missing fields
    ("unknown field", "POST", MEMORIES, js(item(colour="red")), "colour"),
    ("missing text", "POST", MEMORIES, js({"agent_id": "a", "embedding": [1, 0, 0]}), "text"),
    ("missing agent_id", "POST", MEMORIES, js({"text": "t", "embedding": [1, 0, 0]}), "agent_id"),
    ("missing embedding", "POST", MEMORIES, js({"agent_id": "a", "text": "t"}), "embedding"),
    # --- wrong types
    ("agent_id number", "POST", MEMORIES, js(item(agent_id=5)), "agent_id"),
    ("agent_id empty", "POST", MEMORIES, js(item(agent_id="")), "agent_id"),
    ("text null", "POST", MEMORIES, js(item(text=None)), "text"),
    ("embedding string", "POST", MEMORIES, js(item(embedding="1,0,0")), "embedding"),
    ("embedding element string", "POST", MEMORIES, js(item(embedding=[1, "0", 0])),
     "embedding[1]"),
    ("embedding element bool", "POST", MEMORIES, js(item(embedding=[True, 0, 0])),
     "embedding[0]"),
    ("embedding element null", "POST", MEMORIES, js(item(embedding=[1, 0, None])),
     "embedding[2]"),
    ("embedding nested", "POST", MEMORIES, js(item(embedding=[[1], 0, 0])), "embedding[0]"),
    ("empty embedding", "POST", MEMORIES, js(item(embedding=[])), "embedding"),
    ("embedding 4097", "POST", MEMORIES, js(item(embedding=[0.5] * 4097)), "embedding"),
    ("metadata array", "POST", MEMORIES, js(item(metadata=[1])), "metadata"),
    ("metadata > 16 KiB", "POST", MEMORIES, js(item(metadata={"x": "y" * 16_400})), "metadata"),
    ("metadata too deep", "POST", MEMORIES, js(item(metadata=deep(40))), "metadata"),
    ("tags string", "POST", MEMORIES, js(item(tags="x")), "tags"),
    ("tag number", "POST", MEMORIES, js(item(tags=["a", 7])), "tags[1]"),
    ("tag empty", "POST", MEMORIES, js(item(tags=[""])), "tags[0]"),
    ("tag 129 chars", "POST", MEMORIES, js(item(tags=["t" * 129])), "tags[0]"),
    ("65 tags", "POST", MEMORIES, js(item(tags=[f"t{i}" for i in range(65)])), "tags"),
    ("10,000 tags", "POST", MEMORIES, js(item(tags=[f"t{i}" for i in range(10_000)])), "tags"),
    ("text > 64 KiB", "POST", MEMORIES, js(item(text="x" * (64 * 1024 + 1))), "text"),
    ("text > 64 KiB of UTF-8", "POST", MEMORIES, js(item(text="é" * 40_000)), "text"),
    ("ttl zero", "POST", MEMORIES, js(item(ttl_s=0)), "ttl_s"),
    ("ttl negative", "POST", MEMORIES, js(item(ttl_s=-1)), "ttl_s"),
    ("ttl string", "POST", MEMORIES, js(item(ttl_s="60")), "ttl_s"),
    ("ttl bool", "POST", MEMORIES, js(item(ttl_s=True)), "ttl_s"),
    ("ttl null on create", "POST", MEMORIES, js(item(ttl_s=None)), "ttl_s"),
    ("ttl 1e300", "POST", MEMORIES, js(item(ttl_s=1e300)), "ttl_s"),
    ("id empty", "POST", MEMORIES, js(item(id="")), "id"),
    ("id with space", "POST", MEMORIES, js(item(id="a b")), "id"),
    ("id with slash", "POST", MEMORIES, js(item(id="a/b")), "id"),
    ("id trailing newline", "POST", MEMORIES, js(item(id="ab\n")), "id"),
    ("id 129 chars", "POST", MEMORIES, js(item(id="i" * 129)), "id"),
    ("id number", "POST", MEMORIES, js(item(id=12)), "id"),
    ("request_id 129", "POST", MEMORIES, js(item(request_id="r" * 129)), "request_id"),
    # --- path parameters
    ("namespace with dot", "POST", "/v1/namespaces/bad.name/memories", js(item()), "ns"),
    ("namespace 65 chars", "GET", "/v1/namespaces/" + "n" * 65, {}, "ns"),
    ("namespace with space", "PUT", "/v1/namespaces/a%20b", js({"dim": 3, "metric": "l2"}), "ns"),
    ("memory id with space", "GET", "/v1/namespaces/ns1/memories/a%20b", {}, "id"),
    ("memory id 129", "DELETE", "/v1/namespaces/ns1/memories/" + "i" * 129, {}, "id"),
    # --- namespaces
    ("dim zero", "PUT", NAMESPACE, js({"dim": 0, "metric": "l2"}), "dim"),
    ("dim 4097", "PUT", NAMESPACE, js({"dim": 4097, "metric": "l2"}), "dim"),
    ("dim fractional", "PUT", NAMESPACE, js({"dim": 1.5, "metric": "l2"}), "dim"),
    ("dim string", "PUT", NAMESPACE, js({"dim": "3", "metric": "l2"}), "dim"),
    ("dim bool", "PUT", NAMESPACE, js({"dim": True, "metric": "l2"}), "dim"),
    ("metric unknown", "PUT", NAMESPACE, js({"dim": 3, "metric": "dot"}), "metric"),
    ("metric missing", "PUT", NAMESPACE, js({"dim": 3}), "metric"),
    ("namespace extra field", "PUT", NAMESPACE, js({"dim": 3, "metric": "l2", "x": 1}), "x"),
    # --- patch
    ("patch empty", "PATCH", MEMORY, js({}), None),
    ("patch only if_version", "PATCH", MEMORY, js({"if_version": 1, "request_id": "r"}), None),
    ("patch text number", "PATCH", MEMORY, js({"text": 5}), "text"),
    ("patch id", "PATCH", MEMORY, js({"text": "t", "id": "b"}), "id"),
    ("patch if_version negative", "PATCH", MEMORY, js({"text": "t", "if_version": -1}),
     "if_version"),
    ("patch if_version string", "PATCH", MEMORY, js({"text": "t", "if_version": "1"}),
     "if_version"),
    ("patch empty embedding", "PATCH", MEMORY, js({"embedding": []}), "embedding"),
    ("patch NaN", "PATCH", MEMORY, raw('{"embedding": [NaN, 0, 0]}'), None),
    ("patch 10,000 tags", "PATCH", MEMORY, js({"tags": ["t"] * 10_000}), "tags"),
    # --- delete
    ("delete if_version not int", "DELETE", MEMORY + "?if_version=abc", {}, "if_version"),
    ("delete if_version float", "DELETE", MEMORY + "?if_version=1.0", {}, "if_version"),
    ("delete body if_version", "DELETE", MEMORY, js({"if_version": "x"}), "if_version"),
    ("delete body unknown", "DELETE", MEMORY, js({"force": True}), "force"),
    ("delete body not object", "DELETE", MEMORY, raw("[1]"), None),
    ("delete query/body disagree", "DELETE", MEMORY + "?if_version=1", js({"if_version": 2}),
     "if_version"),
    # --- get and query parameters
    ("include_embedding yes", "GET", MEMORY + "?include_embedding=yes", {}, "include_embedding"),
    ("repeated parameter", "GET", MEMORY + "?include_embedding=true&include_embedding=false", {},
     "include_embedding"),
    ("unknown query parameter", "GET", MEMORY + "?verbose=1", {}, "verbose"),
    ("unknown tier", "GET", MEMORY + "?consistency=strong", {}, "consistency"),
    ("unknown tier header", "GET", MEMORY, {"headers": {"Raftmem-Consistency": "strong"}},
     "Raftmem-Consistency"),
    ("tier query/header disagree", "GET", MEMORY + "?consistency=eventual",
     {"headers": {"Raftmem-Consistency": "lease"}}, "consistency"),
    ("staleness without eventual", "GET", MEMORY + "?max_staleness_ms=10", {},
     "max_staleness_ms"),
    ("staleness negative", "GET", MEMORY + "?consistency=eventual&max_staleness_ms=-1", {},
     "max_staleness_ms"),
    ("empty session header", "GET", MEMORY, {"headers": {"Raftmem-Session": ""}},
     "Raftmem-Session"),
    ("unknown query on PUT", "PUT", NAMESPACE + "?dim=3", js({"dim": 3, "metric": "l2"}), "dim"),
    # --- list
    ("limit 0", "GET", MEMORIES + "?limit=0", {}, "limit"),
    ("limit 1001", "GET", MEMORIES + "?limit=1001", {}, "limit"),
    ("limit word", "GET", MEMORIES + "?limit=ten", {}, "limit"),
    ("limit fractional", "GET", MEMORIES + "?limit=1.5", {}, "limit"),
    ("limit huge", "GET", MEMORIES + "?limit=" + "9" * 40, {}, "limit"),
    ("tag empty", "GET", MEMORIES + "?tag=", {}, "tag"),
    ("cursor too long", "GET", MEMORIES + "?cursor=" + "c" * 1025, {}, "cursor"),
    # --- batch
    ("batch empty", "POST", BATCH, js({"memories": []}), "memories"),
    ("batch not a list", "POST", BATCH, js({"memories": item()}), "memories"),
    ("batch 1001", "POST", BATCH, js({"memories": [item()] * 1001}), "memories"),
    ("batch item missing text", "POST", BATCH,
     js({"memories": [item(), item(), {"agent_id": "a", "embedding": [1, 0, 0]}]}),
     "memories[2].text"),
    ("batch item NaN-free but bad tag", "POST", BATCH,
     js({"memories": [item(), item(tags=[1])]}), "memories[1].tags[0]"),
    ("batch item request_id", "POST", BATCH,
     js({"memories": [item(), item(request_id="r")]}), "memories[1].request_id"),
    ("batch item not object", "POST", BATCH, js({"memories": [item(), 5]}), "memories[1]"),
    ("batch missing memories", "POST", BATCH, js({"request_id": "r"}), "memories"),
    # --- search
    ("k zero", "POST", SEARCH, js({"embedding": [1, 0, 0], "k": 0}), "k"),
    ("k 1001", "POST", SEARCH, js({"embedding": [1, 0, 0], "k": 1001}), "k"),
    ("k fractional", "POST", SEARCH, js({"embedding": [1, 0, 0], "k": 2.5}), "k"),
    ("search missing embedding", "POST", SEARCH, js({"k": 3}), "embedding"),
    ("search unknown field", "POST", SEARCH, js({"embedding": [1, 0, 0], "top": 3}), "top"),
    ("filter unknown field", "POST", SEARCH,
     js({"embedding": [1, 0, 0], "filter": {"tag": "x"}}), "filter.tag"),
    ("filter not object", "POST", SEARCH, js({"embedding": [1, 0, 0], "filter": []}), "filter"),
    ("filter created_after string", "POST", SEARCH,
     js({"embedding": [1, 0, 0], "filter": {"created_after": "yesterday"}}),
     "filter.created_after"),
    ("filter created_before negative", "POST", SEARCH,
     js({"embedding": [1, 0, 0], "filter": {"created_before": -5}}), "filter.created_before"),
    ("filter 65 tags_any", "POST", SEARCH,
     js({"embedding": [1, 0, 0], "filter": {"tags_any": ["t"] * 65}}), "filter.tags_any"),
    ("filter metadata not object", "POST", SEARCH,
     js({"embedding": [1, 0, 0], "filter": {"metadata": "x"}}), "filter.metadata"),
    ("include_embedding string", "POST", SEARCH,
     js({"embedding": [1, 0, 0], "include_embedding": "yes"}), "include_embedding"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_bad_input_is_400_and_changes_nothing(
    fake: FakeMemoryService, method: str, path: str, kwargs: dict[str, Any], field: str | None
) -> None:
    await seeded(fake)
    before = fake.state()
    async with serve(fake) as client:
        status, body = await send(client, method, path, **kwargs)
        assert_invalid(status, body, field)
        assert await send(client, "GET", "/healthz") == (200, {"status": "ok", "node_id": "fake-1"})
    assert fake.calls == [("health", ())], "bad input reached the service"
    assert fake.state() == before


async def test_unknown_fields_are_all_named(fake: FakeMemoryService) -> None:
    await seeded(fake)
    async with serve(fake) as client:
        status, body = await send(client, "POST", MEMORIES, json=item(colour=1, size=2))
    error = assert_invalid(status, body, "colour")
    assert "colour" in error["message"] and "size" in error["message"]


async def test_ten_thousand_unknown_fields_give_a_short_message(fake: FakeMemoryService) -> None:
    await seeded(fake)
    async with serve(fake) as client:
        status, body = await send(client, "POST", MEMORIES,
                                  json=item(**{f"f{i}": i for i in range(10_000)}))
    error = assert_invalid(status, body, "f0")
    assert len(error["message"]) < 300


async def test_integral_float_is_an_integer(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "PUT", NAMESPACE, json={"dim": 3.0, "metric": "l2"})
    assert (status, body["dim"]) == (201, 3)
    assert fake.calls == [("create_namespace", ("ns2", 3, "l2"))]
    assert type(fake.calls[0][1][1]) is int


async def test_limits_are_inclusive(fake: FakeMemoryService) -> None:
    await fake.create_namespace("ns1", DIM, "cosine")
    exact = item(id="i" * 128, text="x" * 65536, tags=[f"t{i:03d}" for i in range(64)],
                 metadata={"x": "y" * (16 * 1024 - 8)}, request_id="r" * 128)
    async with serve(fake) as client:
        status, body = await send(client, "POST", MEMORIES, json=exact)
        assert status == 201, body
        status, body = await send(client, "GET", MEMORIES + "?limit=1000")
        assert status == 200


async def test_patch_ttl_null_removes_the_expiry(fake: FakeMemoryService) -> None:
    await fake.create_namespace("ns1", DIM, "cosine")
    await fake.put_memory("ns1", item(id="a", ttl_s=60), None)
    async with serve(fake) as client:
        status, body = await send(client, "PATCH", MEMORY, json={"ttl_s": None})
    assert (status, body["expires_at"]) == (200, None)


# --------------------------------------------------------------------------- cluster-state errors


async def test_wrong_dimension_is_400_dimension_mismatch(fake: FakeMemoryService) -> None:
    await seeded(fake)
    before = fake.state()
    async with serve(fake) as client:
        for method, path, body, field in [
            ("POST", MEMORIES, item(embedding=[1, 0]), "embedding"),
            ("PATCH", MEMORY, {"embedding": [1, 0, 0, 0]}, "embedding"),
            ("POST", SEARCH, {"embedding": [1]}, "embedding"),
            ("POST", BATCH, {"memories": [item(id="new"), item(embedding=[1] * 5)]},
             "memories[1].embedding"),
        ]:
            status, response = await send(client, method, path, json=body)
            error = assert_error(status, response, 400, "dimension_mismatch")
            assert error["field"] == field
    assert fake.state() == before


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/v1/namespaces/nope", {}),
        ("POST", "/v1/namespaces/nope/memories", js(item())),
        ("GET", "/v1/namespaces/nope/memories", {}),
        ("GET", "/v1/namespaces/nope/memories/a", {}),
        ("PATCH", "/v1/namespaces/nope/memories/a", js({"text": "t"})),
        ("DELETE", "/v1/namespaces/nope/memories/a", {}),
        ("POST", "/v1/namespaces/nope/memories/batch", js({"memories": [item()]})),
        ("POST", "/v1/namespaces/nope/search", js({"embedding": [1, 0, 0]})),
    ],
)
async def test_unknown_namespace_is_404(
    fake: FakeMemoryService, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    await seeded(fake)
    before = fake.state()
    async with serve(fake) as client:
        status, body = await send(client, method, path, **kwargs)
    assert_error(status, body, 404, "namespace_not_found")
    assert fake.state() == before


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [("GET", {}), ("PATCH", js({"text": "t"})), ("DELETE", {})],
)
async def test_unknown_memory_is_404(
    fake: FakeMemoryService, method: str, kwargs: dict[str, Any]
) -> None:
    await seeded(fake)
    before = fake.state()
    async with serve(fake) as client:
        status, body = await send(client, method, "/v1/namespaces/ns1/memories/zzz", **kwargs)
    assert_error(status, body, 404, "not_found")
    assert fake.state() == before


async def test_namespace_redefinition_is_409(fake: FakeMemoryService) -> None:
    await seeded(fake)
    before = fake.state()
    async with serve(fake) as client:
        status, body = await send(client, "PUT", "/v1/namespaces/ns1",
                                  json={"dim": DIM + 1, "metric": "cosine"})
    assert_error(status, body, 409, "namespace_conflict")
    assert fake.state() == before


async def test_existing_id_is_409(fake: FakeMemoryService) -> None:
    await seeded(fake)
    before = fake.state()
    async with serve(fake) as client:
        status, body = await send(client, "POST", MEMORIES, json=item(id="a", text="other"))
    assert_error(status, body, 409, "already_exists")
    assert fake.state() == before
