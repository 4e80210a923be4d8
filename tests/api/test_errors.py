"""The one error seam: every failure is JSON ``{"error": {code, message, definite, ...}}``."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from raftmem.errors import (
    CommitTimeout,
    Conflict,
    EpochMismatch,
    Internal,
    NotFound,
    RaftmemError,
    Unavailable,
    ValidationError,
)
from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import assert_error, item, seeded, send


@pytest.mark.parametrize(
    ("error", "status", "code", "definite", "details"),
    [
        (ValidationError("bad", field="x"), 400, "invalid_request", True, {"field": "x"}),
        (NotFound("gone"), 404, "not_found", True, {}),
        (Conflict("v", code="version_mismatch", current_version=3), 409, "version_mismatch",
         True, {"current_version": 3}),
        (Unavailable("not leader", leader_hint="n2"), 503, "unavailable", True,
         {"leader_hint": "n2"}),
        (EpochMismatch("stale", epoch=[4, 2]), 503, "epoch_mismatch", True, {"epoch": [4, 2]}),
        (CommitTimeout("deadline"), 504, "commit_timeout", False, {}),
        (Internal("bug"), 500, "internal", False, {}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_service_errors_keep_status_code_definiteness_and_details(
    fake: FakeMemoryService,
    error: RaftmemError,
    status: int,
    code: str,
    definite: bool,
    details: dict[str, Any],
) -> None:
    fake.fail_with = error
    async with serve(fake) as client:
        got_status, body = await send(client, "GET", "/v1/namespaces")
    assert body == {"error": {"code": code, "message": error.message, "definite": definite,
                              **details}}
    assert got_status == status


async def test_unserialisable_error_details_still_give_the_error(
    fake: FakeMemoryService,
) -> None:
    fake.fail_with = Unavailable("not leader", leader_hint=object())
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/v1/namespaces")
    assert body == {"error": {"code": "unavailable", "message": "not leader", "definite": True}}
    assert status == 503


async def test_write_timeout_is_indefinite(fake: FakeMemoryService) -> None:
    await seeded(fake)
    fake.fail_with = CommitTimeout("no commit within 5 s")
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/v1/namespaces/ns1/memories",
                                  json=item(request_id="r1"))
    assert_error(status, body, 504, "commit_timeout", definite=False)


async def test_unexpected_exception_is_500_logged_and_the_server_survives(
    fake: FakeMemoryService,
) -> None:
    fake.fail_with = RuntimeError("secret detail")
    async with serve(fake) as client:
        with capture_logs() as logs:
            status, body = await send(client, "GET", "/v1/namespaces")
        error = assert_error(status, body, 500, "internal", definite=False)
        assert "secret detail" not in error["message"]
        assert error["error_id"] in error["message"]
        status, _ = await send(client, "GET", "/v1/namespaces")
        assert status == 200
    [logged] = [e for e in logs if e["event"] == "unhandled_error"]
    assert logged["log_level"] == "error"
    assert logged["error_id"] == error["error_id"]
    assert logged["exc_info"] is True
    [access] = [e for e in logs if e["event"] == "http_request"]
    assert (access["status"], access["error_code"]) == (500, "internal")


async def test_unexpected_exception_traceback_reaches_the_log(
    fake: FakeMemoryService, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_with = ZeroDivisionError("boom")
    async with serve(fake) as client:
        status, _ = await send(client, "GET", "/healthz")
    assert status == 500
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: boom" in err


async def test_no_such_route_is_404_json(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        for path in ("/nope", "/v1/namespaces/ns1/", "/v1", "/admin/nope"):
            status, body = await send(client, "GET", path)
            assert_error(status, body, 404, "not_found")
    assert fake.calls == []


async def test_wrong_method_is_405_json_with_allow(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        async with client.request("DELETE", "/v1/namespaces/ns1") as response:
            assert response.status == 405
            assert response.headers["Content-Type"] == "application/json"
            assert set(response.headers["Allow"].split(",")) == {"GET", "PUT"}
            body = await response.json()
        assert_error(response.status, body, 405, "method_not_allowed")
        async with client.request("HEAD", "/healthz") as response:  # no implicit HEAD routes
            assert response.status == 405
            assert response.headers["Content-Type"] == "application/json"


async def test_every_response_is_json(fake: FakeMemoryService) -> None:
    """A sample of every kind of answer: success, each error class, docs, probes."""
    await seeded(fake)
    fake.ready = False
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/admin/cluster", {}),
        ("DELETE", "/v1/namespaces/ns1/memories/a", {}),
        ("GET", "/v1/namespaces/ns1/memories/a", {}),
        ("POST", "/v1/namespaces/ns1/memories", {"data": b"{"}),
        ("POST", "/v1/namespaces/ns1/memories", {"data": b" " * (9 * 1024 * 1024)}),
        ("PUT", "/v1/namespaces/ns1", {"json": {"dim": 9, "metric": "l2"}}),
        ("GET", "/missing", {}),
        ("POST", "/healthz", {}),
    ]
    async with serve(fake) as client:
        statuses = [(await send(client, method, path, **kw))[0] for method, path, kw in requests]
    assert statuses == [200, 503, 200, 200, 200, 404, 400, 413, 409, 404, 405]
