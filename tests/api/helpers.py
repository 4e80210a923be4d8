"""Assertions shared by the API tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from tests.api.fake_service import FakeMemoryService

DIM = 3


async def send(
    client: TestClient[Any, Any], method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """One request; asserts the response is JSON and returns (status, parsed body)."""
    async with client.request(method, path, **kwargs) as response:
        assert response.headers["Content-Type"] == "application/json", response.headers
        return response.status, orjson.loads(await response.read())


def assert_error(
    status: int, body: Any, expected_status: int, code: str, *, definite: bool = True
) -> dict[str, Any]:
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert error["definite"] is definite, error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def assert_invalid(status: int, body: Any, field: str | None) -> dict[str, Any]:
    error = assert_error(status, body, 400, "invalid_request")
    assert error["field"] == field, error
    return error


def item(**overrides: Any) -> dict[str, Any]:
    """A valid memory for a namespace of dimension DIM."""
    return {"agent_id": "agent-1", "text": "the sky is blue", "embedding": [1.0, 0.0, 0.0],
            **overrides}


async def seeded(fake: FakeMemoryService, ns: str = "ns1", metric: str = "cosine") -> None:
    """A namespace ``ns`` of dimension DIM with three memories a, b, c."""
    await fake.create_namespace(ns, DIM, metric)
    await fake.put_memory(ns, item(id="a", tags=["x"], metadata={"k": 1}), None)
    await fake.put_memory(ns, item(id="b", agent_id="agent-2", embedding=[0.0, 1.0, 0.0],
                                   tags=["x", "y"]), None)
    await fake.put_memory(ns, item(id="c", embedding=[0.0, 0.0, 1.0]), None)
    fake.calls.clear()


async def until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll the coroutine ``pred()`` until it returns something truthy (deadline: ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        v = await pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
