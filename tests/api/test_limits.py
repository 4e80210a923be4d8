"""Oversized bodies: 413 ``payload_too_large`` without buffering, and the server keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import assert_error, assert_invalid, item, seeded, send

MB = 1024 * 1024
HUNDRED_MB = 100 * MB
MEMORIES = "/v1/namespaces/ns1/memories"


async def megabytes(total: int) -> AsyncIterator[bytes]:
    block = b" " * MB
    for _ in range(total // MB):
        yield block


async def assert_serving(client: Any, fake: FakeMemoryService, before: Any) -> None:
    assert fake.state() == before
    status, _ = await send(client, "GET", "/healthz")
    assert status == 200
    status, body = await send(client, "POST", MEMORIES, json=item(id="after"))
    assert (status, body["id"]) == (201, "after")


@pytest.mark.parametrize(
    ("how", "kwargs"),
    [
        ("chunked", {}),
        ("content-length", {"headers": {"Content-Length": str(HUNDRED_MB)}}),
        ("expect 100-continue", {"headers": {"Content-Length": str(HUNDRED_MB)},
                                 "expect100": True}),
    ],
)
async def test_hundred_megabytes_is_413(
    fake: FakeMemoryService, how: str, kwargs: dict[str, Any]
) -> None:
    await seeded(fake)
    before = fake.state()
    async with serve(fake) as client:
        status, body = await send(client, "POST", MEMORIES, data=megabytes(HUNDRED_MB), **kwargs)
        error = assert_error(status, body, 413, "payload_too_large")
        assert error["limit"] == 8 * MB
        await assert_serving(client, fake, before)
    assert [name for name, _ in fake.calls] == ["health", "put_memory"]


async def test_a_body_just_over_the_limit_is_413_and_at_the_limit_is_read(
    fake: FakeMemoryService,
) -> None:
    await seeded(fake)
    body = orjson.dumps(item(id="fits"))
    async with serve(fake, max_body_bytes=len(body)) as client:
        status, _ = await send(client, "POST", MEMORIES, data=body,
                               headers={"Content-Type": "application/json"})
        assert status == 201
        status, response = await send(client, "POST", MEMORIES, data=body + b" ")
        assert_error(status, response, 413, "payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            yield body
            yield b" "

        status, response = await send(client, "POST", MEMORIES, data=chunks())
        assert_error(status, response, 413, "payload_too_large")


async def test_413_on_a_route_that_would_also_refuse_the_input(fake: FakeMemoryService) -> None:
    """The declared size is judged before anything else that needs the body."""
    async with serve(fake) as client:
        status, body = await send(client, "POST", "/v1/namespaces/bad.name/search",
                                  data=megabytes(16 * MB),
                                  headers={"Content-Length": str(16 * MB)})
    assert_error(status, body, 413, "payload_too_large")


async def test_unsupported_expectation_is_417(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "POST", MEMORIES, data=b"{}",
                                  headers={"Expect": "something-else"})
    assert_error(status, body, 417, "expectation_failed")


async def _raw_upload(port: int, head: str, body_chunks: int, chunked: bool) -> bytes:
    """A client that ignores the answer and keeps pushing its whole body, then reads."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    block = b" " * MB
    if chunked:
        block = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    try:
        for _ in range(body_chunks):
            writer.write(block)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except ConnectionError:
        pass  # the server may close once it has answered and drained what it allows
    answer = await reader.read(4096)
    writer.close()
    return answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_raw_client_pushing_100_mb_while_others_are_served(
    fake: FakeMemoryService, chunked: bool
) -> None:
    await seeded(fake)
    before = fake.state()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUNDRED_MB}"
    head = (f"POST {MEMORIES} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n")
    async with serve(fake) as client:
        assert client.port is not None
        upload = asyncio.create_task(_raw_upload(client.port, head, 100, chunked))
        # While the upload is being refused and drained, other clients are served.
        for _ in range(3):
            status, _ = await send(client, "GET", "/healthz")
            assert status == 200
        answer = await upload
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"application/json" in answer
        assert b'"payload_too_large"' in answer
        await assert_serving(client, fake, before)


async def test_the_limit_is_configurable_and_judged_on_the_body_only(
    fake: FakeMemoryService,
) -> None:
    await seeded(fake)
    async with serve(fake, max_body_bytes=100) as client:
        status, body = await send(client, "POST", MEMORIES, json=item(text="x" * 200))
        assert_error(status, body, 413, "payload_too_large")
        # A GET with a long query string is not a body.
        status, body = await send(client, "GET", MEMORIES + "?cursor=" + "c" * 500)
        assert_invalid(status, body, "cursor")
