"""Admin routes (placement among them) and the internal placement route.

Admin routes need ``Authorization: Bearer <token>`` when the app has an admin token;
internal ones the cluster's internal credential."""

from __future__ import annotations

from typing import Any

import pytest

from api import schemas
from api.routes import OPERATIONS
from api.validation import Validator
from raftmem.errors import Unavailable
from raftmem.node import INTERNAL_HEADER, internal_credential
from tests.api.conftest import serve
from tests.api.fake_service import FAKE_SECRET, FakeMemoryService
from tests.api.helpers import assert_error, assert_invalid, send

TOKEN = "s3cret-token"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x",
     f"{TOKEN}"],
)
async def test_admin_without_the_token_is_401(
    fake: FakeMemoryService, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with serve(fake, admin_token=TOKEN) as client:
        async with client.get("/admin/cluster", headers=headers) as response:
            assert response.headers["WWW-Authenticate"] == "Bearer"
        status, body = await send(client, "GET", "/admin/cluster", headers=headers)
    assert_error(status, body, 401, "unauthorized")
    assert fake.calls == []


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_admin_with_the_token_is_served(fake: FakeMemoryService, scheme: str) -> None:
    async with serve(fake, admin_token=TOKEN) as client:
        status, body = await send(client, "GET", "/admin/cluster",
                                  headers={"Authorization": f"{scheme} {TOKEN}"})
    assert status == 200, body
    assert fake.calls == [("cluster_state", ())]


async def test_other_routes_need_no_token(fake: FakeMemoryService) -> None:
    async with serve(fake, admin_token=TOKEN) as client:
        for path in ("/healthz", "/readyz", "/openapi.json", "/v1/namespaces"):
            status, _ = await send(client, "GET", path)
            assert status == 200, path


async def test_without_a_configured_token_admin_is_open(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, _ = await send(client, "GET", "/admin/cluster")
    assert status == 200


async def test_fault_seam_routes_reach_the_service() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from api.app import create_app
    from tests.api.fake_service import FakeMemoryService

    svc = FakeMemoryService()
    async with TestClient(TestServer(create_app(svc))) as client:
        r = await client.post("/admin/faults/isolate", json={"peers": ["n2", "n3"]})
        assert r.status == 200 and svc.isolated == ["n2", "n3"]
        r = await client.post("/admin/faults/isolate", json={"peers": "n2"})
        assert r.status == 400 and svc.isolated == ["n2", "n3"]
        r = await client.post("/admin/faults/heal")
        assert r.status == 200 and svc.isolated == []


# --- placement admin routes -----------------------------------------------------------


def _valid(method: str, template: str, status: int, body: Any) -> None:
    """The answer matches the schema /openapi.json gives for it."""
    op = next(o for o in OPERATIONS if (o.method, o.path) == (method, template))
    Validator(schemas.COMPONENTS).validate(op.responses[status].schema or {}, body)


ADD_N4 = {"id": "n4", "api": "127.0.0.1:7004", "raft": "127.0.0.1:7104"}


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/admin/ranges", None), ("GET", "/admin/operators", None),
    ("POST", "/admin/rebalance?dry_run=true", None), ("POST", "/admin/rebalance", None),
    ("GET", "/admin/nodes", None), ("POST", "/admin/nodes", ADD_N4),
    ("DELETE", "/admin/nodes/fake-1", None),
])
async def test_placement_routes_need_the_token(
    fake: FakeMemoryService, method: str, path: str, body: Any
) -> None:
    async with serve(fake, admin_token=TOKEN) as client:
        status, answer = await send(client, method, path, json=body)
        assert_error(status, answer, 401, "unauthorized")
        assert fake.calls == []
        status, answer = await send(client, method, path, json=body,
                                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, answer
    assert fake.calls


async def test_rebalance_dry_run_shows_operators_with_reasons(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/admin/rebalance?dry_run=true")
    assert status == 200 and body["dry_run"] is True
    assert body["operators"] and all(op["reason"] for op in body["operators"])
    assert {n["id"] for n in body["view"]["nodes"]} == {"n1", "n2", "n3", "n4"}
    assert fake.calls == [("rebalance", (True,))]
    _valid("POST", "/admin/rebalance", 200, body)
    assert fake.executor.runs == []  # a dry run starts nothing


@pytest.mark.parametrize("query", ["", "?dry_run=false"])
async def test_rebalance_without_dry_run_runs_a_pass(
    fake: FakeMemoryService, query: str
) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/admin/rebalance" + query)
    assert status == 200, body
    assert body["dry_run"] is False and body["node"] == "fake-1"
    assert body["balanced"] is False
    started = body["started"]
    assert [(o["kind"], o["group"], o["status"]) for o in started] == [
        ("add_learner", 0, "running"), ("transfer_leader", 1, "running")]
    assert body["progress"]["counts"]["started"] == 2
    assert [o["id"] for o in body["progress"]["running"]] == [o["id"] for o in started]
    assert fake.calls == [("rebalance", (False,))]
    _valid("POST", "/admin/rebalance", 200, body)


async def test_operators_follow_the_executor_until_balanced(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, _ = await send(client, "POST", "/admin/rebalance")
        assert status == 200
        seen_steps: list[tuple[int, str, int]] = []
        for _ in range(20):  # a bounded number of passes, not a clock
            status, ops = await send(client, "GET", "/admin/operators")
            assert status == 200, ops
            _valid("GET", "/admin/operators", 200, ops)
            seen_steps += [(o["group"], o["step"], o["step_index"]) for o in ops["running"]]
            if ops["balanced"] and not ops["running"]:
                break
        else:
            pytest.fail(f"the fake executor never balanced: {ops}")
    assert ops["counts"] == {"running": 0, "started": 2, "done": 2, "failed": 0,
                             "cancelled": 0}
    assert sorted(o["group"] for o in ops["finished"]) == [0, 1]
    assert all(o["status"] == "done" and o["step_index"] == o["steps"]
               for o in ops["finished"])
    # every step of the add_learner operator was shown while it ran, in order
    assert [s for g, s, _ in seen_steps if g == 0] == [
        "create_learner", "add_learner", "catch_up", "record_group"]
    assert ops["auto_rebalance"] is True and ops["pd_leader"] == "fake-1"


async def test_a_failed_operator_carries_its_error(fake: FakeMemoryService) -> None:
    fake.executor.fail_groups = {1}
    async with serve(fake) as client:
        await send(client, "POST", "/admin/rebalance")
        for _ in range(3):
            status, ops = await send(client, "GET", "/admin/operators")
    assert status == 200
    [failed] = ops["failed"]
    assert failed["group"] == 1 and failed["status"] == "failed"
    assert failed["error"] == "transfer_leader: timed out after 30s"
    _valid("GET", "/admin/operators", 200, ops)


@pytest.mark.parametrize("query,field", [
    ("?dry_run=yes", "dry_run"), ("?dry_run=1", "dry_run"), ("?dry_run=true&dry_run=true", "dry_run"),
    ("?dryrun=true", "dryrun"), ("?dry_run=", "dry_run"),
])
async def test_rebalance_bad_query_is_400(fake: FakeMemoryService, query: str, field: str) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/admin/rebalance" + query)
    assert_invalid(status, body, field)
    assert fake.calls == []


async def test_ranges_and_operators(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, ranges = await send(client, "GET", "/admin/ranges")
        assert status == 200 and ranges["ranges"][0]["start"] == "0000000000000000"
        status, ops = await send(client, "GET", "/admin/operators")
        assert status == 200 and ops["running"] == [] and ops["executor"] == "running"
        assert ops["counts"]["started"] == 0
        status, body = await send(client, "DELETE", "/admin/operators")
    assert_error(status, body, 405, "method_not_allowed")


async def test_operators_error_maps_through(fake: FakeMemoryService) -> None:
    fake.fail_with = Unavailable("the placement driver has no reachable leader", code="no_leader")
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/admin/operators")
    assert_error(status, body, 503, "no_leader")


# --- nodes ------------------------------------------------------------------------------


async def test_add_node_registers_it_idempotently(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/admin/nodes", json=ADD_N4)
        assert status == 200, body
        assert body["changed"] is True and body["node"]["state"] == "up"
        assert {k: body["node"][k] for k in ("id", "api", "raft")} == ADD_N4
        _valid("POST", "/admin/nodes", 200, body)
        status, body = await send(client, "POST", "/admin/nodes", json=ADD_N4)
        assert status == 200 and body["changed"] is False
        status, listed = await send(client, "GET", "/admin/nodes")
    assert status == 200
    _valid("GET", "/admin/nodes", 200, listed)
    assert [(n["id"], n["state"], n["groups"]) for n in listed["nodes"]] == [
        ("fake-1", "up", [0, 1, 65000]), ("n4", "up", [0, 1])]
    assert fake.calls[:2] == [("add_node", ("n4", "127.0.0.1:7004", "127.0.0.1:7104"))] * 2


@pytest.mark.parametrize("body", [
    {**ADD_N4, "api": "127.0.0.1:7005"},  # the id with other addresses
    {**ADD_N4, "id": "n5"},  # another id on n4's addresses
])
async def test_add_node_conflict_is_400(fake: FakeMemoryService, body: dict[str, Any]) -> None:
    await fake.add_node(node_id="n4", api=ADD_N4["api"], raft=ADD_N4["raft"])
    async with serve(fake) as client:
        status, answer = await send(client, "POST", "/admin/nodes", json=body)
    assert_error(status, answer, 400, "conflict")
    assert set(fake.registry) == {"fake-1", "n4"}


@pytest.mark.parametrize("body,field", [
    ({**ADD_N4, "zone": "a"}, "zone"),  # unknown field
    ({"api": ADD_N4["api"], "raft": ADD_N4["raft"]}, "id"),  # missing id
    ({"id": "n4", "raft": ADD_N4["raft"]}, "api"),
    ({**ADD_N4, "id": ""}, "id"),
    ({**ADD_N4, "id": "n" * 65}, "id"),
    ({**ADD_N4, "id": "n 4"}, "id"),
    ({**ADD_N4, "id": "n4/x"}, "id"),
    ({**ADD_N4, "id": 4}, "id"),
    ({**ADD_N4, "api": "127.0.0.1"}, "api"),  # no port
    ({**ADD_N4, "api": "127.0.0.1:"}, "api"),
    ({**ADD_N4, "api": ":7004"}, "api"),  # no host
    ({**ADD_N4, "api": "127.0.0.1:0"}, "api"),
    ({**ADD_N4, "api": "127.0.0.1:65536"}, "api"),
    ({**ADD_N4, "api": "127.0.0.1:7004\n"}, "api"),
    ({**ADD_N4, "api": "http://127.0.0.1:7004"}, "api"),
    ({**ADD_N4, "raft": "host name:7104"}, "raft"),
    ({**ADD_N4, "raft": None}, "raft"),
    (["n4", "127.0.0.1:7004", "127.0.0.1:7104"], None),  # not an object
])
async def test_add_node_bad_input_is_400_and_reaches_nothing(
    fake: FakeMemoryService, body: Any, field: str | None
) -> None:
    async with serve(fake) as client:
        status, answer = await send(client, "POST", "/admin/nodes", json=body)
    assert_invalid(status, answer, field)
    assert fake.calls == []
    assert set(fake.registry) == {"fake-1"}


@pytest.mark.parametrize("raw", [b"", b"{", b'{"id": "n4",}', b"null"])
async def test_add_node_malformed_body_is_400(fake: FakeMemoryService, raw: bytes) -> None:
    async with serve(fake) as client:
        status, answer = await send(client, "POST", "/admin/nodes", data=raw,
                                    headers={"Content-Type": "application/json"})
    assert_error(status, answer, 400, "invalid_request")
    assert fake.calls == []


async def test_remove_node_drains_it(fake: FakeMemoryService) -> None:
    await fake.add_node("n4", ADD_N4["api"], ADD_N4["raft"])
    fake.calls.clear()
    async with serve(fake) as client:
        status, body = await send(client, "DELETE", "/admin/nodes/n4")
        assert status == 200, body
        assert body["changed"] is True and body["node"]["state"] == "draining"
        _valid("DELETE", "/admin/nodes/{id}", 200, body)
        states = []
        for _ in range(5):  # the fake moves one replica per look at the registry
            status, listed = await send(client, "GET", "/admin/nodes")
            states.append(next(n["state"] for n in listed["nodes"] if n["id"] == "n4"))
    assert fake.calls[0] == ("remove_node", ("n4",))
    assert states[:2] == ["draining", "draining"] and states[-1] == "removed"


@pytest.mark.parametrize("path,field", [
    ("/admin/nodes/n%204", "id"), ("/admin/nodes/" + "n" * 65, "id"), ("/admin/nodes/n%2F4", "id"),
])
async def test_remove_node_bad_id_is_400(fake: FakeMemoryService, path: str, field: str) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "DELETE", path)
    assert_invalid(status, body, field)
    assert fake.calls == []


async def test_remove_unknown_node_is_refused(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "DELETE", "/admin/nodes/n9")
    assert_error(status, body, 400, "not_found")


# --- the internal placement route -------------------------------------------------------

CREDENTIAL = {INTERNAL_HEADER: internal_credential(FAKE_SECRET)}


@pytest.mark.parametrize("headers", [
    {}, {INTERNAL_HEADER: ""}, {INTERNAL_HEADER: internal_credential(b"another-secret")},
    {"Authorization": f"Bearer {TOKEN}"},  # the admin token is no internal credential
])
async def test_internal_placement_needs_the_internal_credential(
    fake: FakeMemoryService, headers: dict[str, str]
) -> None:
    async with serve(fake, admin_token=TOKEN) as client:
        status, body = await send(client, "POST", "/internal/placement/register",
                                  json={"id": "n4", "api": ADD_N4["api"],
                                        "raft": ADD_N4["raft"]}, headers=headers)
    assert_error(status, body, 403, "forbidden")
    assert fake.calls == []
    assert set(fake.registry) == {"fake-1"}


async def test_internal_placement_reaches_the_placement_driver(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/internal/placement/describe", json={},
                                  headers=CREDENTIAL)
        assert status == 200, body
        assert body["spec"]["cluster_id"] == "fake" and "fake-1" in body["state"]["nodes"]
        status, body = await send(client, "POST", "/internal/placement/register", json=ADD_N4,
                                  headers=CREDENTIAL)
    assert status == 200 and body["changed"] is True
    assert ("pd.handle", ("register", ADD_N4)) in fake.calls
    assert fake.registry["n4"]["state"] == "up"


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'"register"', b"1", b"null"])
async def test_internal_placement_body_must_be_a_json_object(
    fake: FakeMemoryService, raw: bytes
) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/internal/placement/register", data=raw,
                                  headers={**CREDENTIAL, "Content-Type": "application/json"})
    assert_invalid(status, body, None)
    assert fake.calls == []


async def test_internal_placement_errors_map_through(fake: FakeMemoryService) -> None:
    fake.pd.unavailable = 1
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/internal/placement/register", json=ADD_N4,
                                  headers=CREDENTIAL)
        assert_error(status, body, 503, "not_leader")
        status, body = await send(client, "POST", "/internal/placement/nosuch", json={},
                                  headers=CREDENTIAL)
        assert_invalid(status, body, "action")
        status, body = await send(client, "POST", "/internal/placement/Bad-Action", json={},
                                  headers=CREDENTIAL)
    assert_invalid(status, body, "action")
