"""``raftmem admin ...`` against the API (the fake service) served on a loopback port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web
from click.testing import CliRunner

from api import create_app
from raftmem.cli import format_table, main
from tests.api.fake_service import FakeMemoryService

TOKEN = "cli-token"


def _drop(*_: Any) -> Any:
    raise structlog.DropEvent


@pytest.fixture
def server() -> Iterator[tuple[str, FakeMemoryService]]:
    """The API over a fake service, on an ephemeral port, in a thread of its own."""
    fake = FakeMemoryService()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def up() -> None:
        app = create_app(fake, admin_token=TOKEN)
        # The server's access log would land in the output CliRunner captures.
        structlog.configure(processors=[_drop])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]

    def run() -> None:
        loop.run_until_complete(up())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the test server did not start"
    try:
        yield f"127.0.0.1:{box['port']}", fake
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        structlog.reset_defaults()


def run(args: list[str], token: str | None = TOKEN) -> Any:
    env = {"RAFTMEM_ADMIN_TOKEN": token} if token is not None else {"RAFTMEM_ADMIN_TOKEN": ""}
    return CliRunner().invoke(main, ["admin", *args], env=env, catch_exceptions=False)


def test_ranges_table_and_json(server: tuple[str, FakeMemoryService]) -> None:
    addr, _ = server
    res = run(["ranges", "--node", addr])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("routing epoch v1/c1")
    assert lines[1].split() == ["START", "END", "GROUP", "VERSION", "LEADER", "REPLICAS",
                                "CONFIRMED"]
    assert lines[2].split() == ["0000000000000000", "end", "0", "1", "fake-1", "fake-1", "yes"]
    res = run(["ranges", "--node", f"http://{addr}", "--json"])
    assert res.exit_code == 0 and orjson.loads(res.output)["ranges"][0]["group"] == 0


def test_rebalance_dry_run_lists_operators_and_reasons(
    server: tuple[str, FakeMemoryService]
) -> None:
    addr, fake = server
    res = run(["rebalance", "--dry-run", "--node", addr])
    assert res.exit_code == 0, res.output
    assert "OPERATOR" in res.output and "add_learner" in res.output
    assert "balance replicas" in res.output and "(dry run: nothing was changed)" in res.output
    assert fake.calls[-1] == ("rebalance", (True,))
    body = orjson.loads(run(["rebalance", "--dry-run", "--json", "--node", addr]).output)
    assert body["dry_run"] is True and body["operators"]


def test_rebalance_without_dry_run_says_why_not(server: tuple[str, FakeMemoryService]) -> None:
    addr, _ = server
    res = run(["rebalance", "--node", addr])
    assert res.exit_code == 1
    assert "HTTP 501 not_implemented" in res.output and "dry_run" in res.output


def test_cluster_and_operators(server: tuple[str, FakeMemoryService]) -> None:
    addr, _ = server
    res = run(["cluster", "--node", addr])
    assert res.exit_code == 0, res.output
    assert "NODE" in res.output and "fake-1" in res.output
    res = run(["operators", "--node", addr])
    assert res.exit_code == 0 and res.output.startswith("no operators")


def test_missing_token_and_unreachable_node_are_clear_errors(
    server: tuple[str, FakeMemoryService]
) -> None:
    addr, _ = server
    res = run(["ranges", "--node", addr], token=None)
    assert res.exit_code == 1
    assert "HTTP 401 unauthorized" in res.output and "RAFTMEM_ADMIN_TOKEN" in res.output
    res = run(["ranges", "--node", "127.0.0.1:1", "--timeout", "2"])
    assert res.exit_code == 1 and "cannot reach http://127.0.0.1:1" in res.output


def test_format_table() -> None:
    assert format_table(["A", "LONG"], [[1, None], ["xyz", "b"]]).splitlines() == [
        "A    LONG", "1    -", "xyz  b"]
