"""Read tiers from the query or the header become the ReadOptions the service sees."""

from __future__ import annotations

from typing import Any

import pytest

from raftmem.types import ReadOptions
from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import seeded, send

Read = tuple[str, str, dict[str, Any]]

GET: Read = ("GET", "/v1/namespaces/ns1/memories/a", {})
LIST: Read = ("GET", "/v1/namespaces/ns1/memories", {})
SEARCH: Read = ("POST", "/v1/namespaces/ns1/search", {"json": {"embedding": [1, 0, 0]}})


def opts_seen(fake: FakeMemoryService) -> ReadOptions:
    [(_, args)] = fake.calls
    [opts] = [a for a in args if isinstance(a, ReadOptions)]
    return opts


@pytest.mark.parametrize("read", [GET, LIST, SEARCH], ids=["get", "list", "search"])
@pytest.mark.parametrize(
    ("query", "headers", "expected"),
    [
        ("", {}, ReadOptions()),
        ("consistency=linearizable", {}, ReadOptions("linearizable")),
        ("consistency=lease", {}, ReadOptions("lease")),
        ("", {"Raftmem-Consistency": "eventual"}, ReadOptions("eventual")),
        ("consistency=eventual", {"Raftmem-Consistency": "eventual"}, ReadOptions("eventual")),
        ("consistency=eventual&max_staleness_ms=250", {}, ReadOptions("eventual", None, 250)),
        ("consistency=session", {"Raftmem-Session": "g1:17,g2:4"},
         ReadOptions("session", "g1:17,g2:4")),
        ("", {"Raftmem-Consistency": "session", "Raftmem-Session": "tok"},
         ReadOptions("session", "tok")),
        ("", {"Raftmem-Session": "tok"}, ReadOptions(session="tok")),
    ],
)
async def test_read_options(
    fake: FakeMemoryService,
    read: tuple[str, str, dict[str, Any]],
    query: str,
    headers: dict[str, str],
    expected: ReadOptions,
) -> None:
    await seeded(fake)
    method, path, kwargs = read
    separator = "&" if "?" in path else "?"
    async with serve(fake) as client:
        status, body = await send(client, method, path + (separator + query if query else ""),
                                  headers=headers, **kwargs)
    assert status == 200, body
    assert opts_seen(fake) == expected
