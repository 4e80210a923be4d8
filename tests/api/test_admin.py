"""Admin routes need ``Authorization: Bearer <token>`` when the app has an admin token."""

from __future__ import annotations

import pytest

from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
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


@pytest.mark.parametrize("method,path", [("GET", "/admin/ranges"), ("GET", "/admin/operators"),
                                         ("POST", "/admin/rebalance?dry_run=true")])
async def test_placement_routes_need_the_token(
    fake: FakeMemoryService, method: str, path: str
) -> None:
    async with serve(fake, admin_token=TOKEN) as client:
        status, body = await send(client, method, path)
        assert_error(status, body, 401, "unauthorized")
        assert fake.calls == []
        status, body = await send(client, method, path,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body


async def test_rebalance_dry_run_shows_operators_with_reasons(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/admin/rebalance?dry_run=true")
    assert status == 200 and body["dry_run"] is True
    assert body["operators"] and all(op["reason"] for op in body["operators"])
    assert {n["id"] for n in body["view"]["nodes"]} == {"n1", "n2", "n3", "n4"}
    assert fake.calls == [("rebalance", (True,))]


@pytest.mark.parametrize("query", ["", "?dry_run=false"])
async def test_rebalance_without_dry_run_is_refused_as_not_built(
    fake: FakeMemoryService, query: str
) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/admin/rebalance" + query)
    error = assert_error(status, body, 501, "not_implemented")
    assert "dry_run" in error["message"]


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
        assert status == 200 and ops["operators"] == [] and ops["executor"] == "not_built"
        status, body = await send(client, "DELETE", "/admin/operators")
    assert_error(status, body, 405, "method_not_allowed")
