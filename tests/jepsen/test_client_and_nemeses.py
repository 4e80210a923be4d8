"""The register client against a small fake of the memory API, and the nemeses against a fake
cluster: no raftmem, no root."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from jepsen_like.harness.api import Api
from jepsen_like.nemesis.nemeses import KillNemesis, PartitionNemesis, PauseNemesis, Unsupported
from jepsen_like.workloads.client import RegisterClient


def _error(status: int, code: str, definite: bool) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": code, "definite": definite}}, status=status
    )


class FakeStore:
    """Just enough of the memory API: create, get, patch with if_version; faults on demand."""

    def __init__(self) -> None:
        self.memories: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.patch_fault: int | None = None  # answer PATCH with this status (504 / 503)
        self.race_create = False  # someone else creates the key just before our POST
        self.delay_s = 0.0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/namespaces/{ns}/memories", self.create)
        app.router.add_get("/v1/namespaces/{ns}/memories/{id}", self.get)
        app.router.add_patch("/v1/namespaces/{ns}/memories/{id}", self.patch)
        return app

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("POST", body["text"]))
        if self.race_create:
            self.memories[body["id"]] = {"id": body["id"], "text": "77", "version": 1}
            self.race_create = False
        if body["id"] in self.memories:
            return _error(409, "already_exists", True)
        self.memories[body["id"]] = {"id": body["id"], "text": body["text"], "version": 1}
        return web.json_response(self.memories[body["id"]], status=201)

    async def get(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.match_info["id"]))
        await asyncio.sleep(self.delay_s)
        m = self.memories.get(request.match_info["id"])
        if m is None:
            return _error(404, "not_found", True)
        return web.json_response(m)

    async def patch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("PATCH", body["text"]))
        await asyncio.sleep(self.delay_s)
        if self.patch_fault == 504:
            return _error(504, "commit_timeout", False)
        if self.patch_fault == 503:
            return _error(503, "no_leader", True)
        m = self.memories.get(request.match_info["id"])
        if m is None:
            return _error(404, "not_found", True)
        if body.get("if_version") not in (None, m["version"]):
            return _error(409, "version_mismatch", True)
        m.update(text=body["text"], version=m["version"] + 1)
        return web.json_response(m)


def with_store(
    test: Callable[[FakeStore, RegisterClient], Awaitable[None]], timeout_s: float = 2.0
) -> None:
    async def main() -> None:
        store = FakeStore()
        runner = web.AppRunner(store.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with Api(timeout_s) as api:
                await test(store, RegisterClient(api, f"http://127.0.0.1:{port}", "t"))
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_read_of_an_absent_or_null_key_is_none() -> None:
    async def t(store: FakeStore, client: RegisterClient) -> None:
        assert (await client.read("k")).value is None
        store.memories["k"] = {"id": "k", "text": "null", "version": 1}
        c = await client.read("k")
        assert (c.type, c.value, c.version) == ("ok", None, 1)
        store.memories["k"]["text"] = "12"
        assert (await client.read("k")).value == 12

    with_store(t)


def test_write_creates_an_absent_key_and_patches_an_existing_one() -> None:
    async def t(store: FakeStore, client: RegisterClient) -> None:
        assert (await client.write("k", 1)).type == "ok"
        assert store.memories["k"]["text"] == "1"
        assert (await client.write("k", 2)).type == "ok"
        assert store.memories["k"]["text"] == "2"
        assert [m for m, _ in store.requests] == ["PATCH", "POST", "PATCH"]

    with_store(t)


def test_write_that_loses_the_create_race_patches_again() -> None:
    async def t(store: FakeStore, client: RegisterClient) -> None:
        store.race_create = True
        c = await client.write("k", 5)
        assert c.type == "ok"
        assert store.memories["k"]["text"] == "5"
        assert [m for m, _ in store.requests] == ["PATCH", "POST", "PATCH"]

    with_store(t)


def test_cas_applies_only_at_the_version_it_compared() -> None:
    async def t(store: FakeStore, client: RegisterClient) -> None:
        store.memories["k"] = {"id": "k", "text": "3", "version": 4}
        ok = await client.cas("k", 3, 9)
        assert (ok.type, ok.value) == ("ok", [3, 9])
        assert store.memories["k"] == {"id": "k", "text": "9", "version": 5}
        mismatch = await client.cas("k", 3, 10)
        assert mismatch.type == "fail" and "value is 9" in (mismatch.error or "")
        assert store.requests[-1][0] == "GET"  # nothing was written

    with_store(t)


def test_cas_of_an_absent_key_is_a_create() -> None:
    async def t(store: FakeStore, client: RegisterClient) -> None:
        assert (await client.cas("k", None, 4)).type == "ok"
        assert store.memories["k"]["text"] == "4"
        assert (await client.cas("k", None, 5)).type == "fail"

    with_store(t)


def test_errors_the_server_calls_definite_fail_others_are_info() -> None:
    async def t(store: FakeStore, client: RegisterClient) -> None:
        store.memories["k"] = {"id": "k", "text": "1", "version": 1}
        store.patch_fault = 504
        c = await client.write("k", 2)
        assert (c.type, c.error) == ("info", "504 commit_timeout")
        store.patch_fault = 503
        assert (await client.write("k", 2)).type == "fail"
        assert (await client.cas("k", 1, 3)).type == "fail"

    with_store(t)


def test_a_timeout_is_info_for_a_write_and_fail_for_a_read() -> None:
    async def t(store: FakeStore, client: RegisterClient) -> None:
        store.memories["k"] = {"id": "k", "text": "1", "version": 1}
        store.delay_s = 1.0
        w = await client.write("k", 2)
        assert (w.type, w.error) == ("info", "timeout")
        r = await client.read("k")
        assert (r.type, r.value) == ("fail", None)

    with_store(t, timeout_s=0.3)


def test_a_refused_connection_is_a_definite_fail() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nobody listens there

    async def main() -> None:
        async with Api(1.0) as api:
            client = RegisterClient(api, f"http://127.0.0.1:{port}", "t")
            c = await client.write("k", 1)
            assert c.type == "fail" and (c.error or "").startswith("connect")

    asyncio.run(main())


# --------------------------------------------------------------------------- nemeses


class FakeControl:
    def __init__(self, seam_status: int = 200, leader: str | None = "n2") -> None:
        self.node_ids = ["n1", "n2", "n3"]
        self.calls: list[tuple[str, ...]] = []
        self.seam_status = seam_status
        self.leader = leader

    def address(self, node_id: str) -> str:
        return f"127.0.0.{10 + int(node_id[1:])}"

    async def leader_of(self, group: int) -> str | None:
        self.calls.append(("leader_of", str(group)))
        return self.leader

    async def replicas_of(self, group: int) -> list[str] | None:
        return None

    def kill(self, node_id: str) -> None:
        self.calls.append(("kill", node_id))

    def restart(self, node_id: str) -> None:
        self.calls.append(("restart", node_id))

    def pause(self, node_id: str) -> None:
        self.calls.append(("pause", node_id))

    def resume(self, node_id: str) -> None:
        self.calls.append(("resume", node_id))

    async def admin_post(self, node_id: str, path: str, body: Any) -> int:
        self.calls.append(("post", node_id, path, repr(body)))
        return self.seam_status


def test_kill_the_leader_then_restart_it() -> None:
    control = FakeControl(leader="n3")
    n = KillNemesis(control)
    params = {"target": "leader", "count": 1, "order": ["n1", "n2", "n3"], "group": 2}
    done = asyncio.run(n.inject(params))
    assert done["killed"] == ["n3"]
    assert asyncio.run(n.heal()) == {"restarted": ["n3"]}
    assert control.calls == [("leader_of", "2"), ("kill", "n3"), ("restart", "n3")]


def test_kill_falls_back_to_the_drawn_order_without_a_leader() -> None:
    control = FakeControl(leader=None)
    params = {"target": "leader", "count": 1, "order": ["n2", "n1", "n3"], "group": 0}
    assert asyncio.run(KillNemesis(control).inject(params))["killed"] == ["n2"]


def test_pause_then_resume_and_teardown_resumes_too() -> None:
    control = FakeControl()
    n = PauseNemesis(control)
    params = {"target": "random", "count": 1, "order": ["n1", "n2", "n3"], "group": 0}
    assert asyncio.run(n.inject(params))["paused"] == ["n1"]
    n.teardown()
    assert control.calls[-1] == ("resume", "n1")
    assert n.paused == []


def test_seam_partition_isolates_through_the_admin_endpoint() -> None:
    control = FakeControl(leader="n2")
    n = PartitionNemesis(control, via="seam")
    assert asyncio.run(n.setup())["via"] == "seam"
    info = asyncio.run(n.inject({"mode": "leader", "order": ["n1", "n2", "n3"], "group": 1}))
    assert info["leader"] == "n2"
    assert info["components"] == [["n1", "n3"], ["n2"]]
    posts = [c for c in control.calls if c[0] == "post" and c[2] == "/admin/faults/isolate"]
    assert posts == [
        ("post", "n1", "/admin/faults/isolate", "{'peers': ['n2']}"),
        ("post", "n2", "/admin/faults/isolate", "{'peers': ['n1', 'n3']}"),
        ("post", "n3", "/admin/faults/isolate", "{'peers': ['n2']}"),
    ]
    asyncio.run(n.heal())
    heals = [c[1] for c in control.calls[-3:] if c[2] == "/admin/faults/heal"]
    assert heals == ["n1", "n2", "n3"]


def test_partition_without_iptables_or_seam_is_reported_unsupported() -> None:
    n = PartitionNemesis(FakeControl(seam_status=404), via="seam")
    with pytest.raises(Unsupported, match="partition unsupported"):
        asyncio.run(n.setup())
