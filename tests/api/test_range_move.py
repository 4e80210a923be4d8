"""Range moves between groups in a real 3-node cluster (raftmem/rangemove.py).

The cluster of test_remote_groups (3 groups of 2 replicas; every node lacks one
group, so steps and reads are forwarded over HTTP). A part of group 0's range
moves to group 1 through ``POST /admin/ranges/move`` while writers add
memories and readers get and list them through every node; then each step is
shown to survive a crash of the driver right after it (the move stopped
there, then asked again).

What must hold: no client error (writes to the moving range wait, requests
for it are routed again); every acknowledged memory readable through every
node afterwards, from the new owner; a full listing taken *during* the move
never repeats a memory and never misses one acknowledged before it began.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from raftmem import rangemove
from raftmem.errors import Unavailable
from raftmem.keyspace import format_point, hash_key
from tests.api.helpers import send, until
from tests.api.test_remote_groups import NS, Cluster, mem, three_nodes

DIM = 4
LOADED = 240


async def until_async(pred: Any, timeout: float, what: str) -> None:
    """Poll the plain predicate ``pred()`` until true (deadline: ``timeout``)."""
    async def check() -> bool:
        return bool(pred())
    await until(check, timeout, what)


def vec(i: int) -> list[float]:
    return [float(i % 11), 1.0, float(i % 7), 0.5]


async def list_all(c: Cluster, node: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": "1000", "consistency": "linearizable"}
        if cursor:
            params["cursor"] = cursor
        status, body = await send(c.clients[node], "GET", f"/v1/namespaces/{NS}/memories",
                                  params=params)
        assert status == 200, body
        ids += [m["id"] for m in body["memories"]]
        cursor = body["next_cursor"]
        if not cursor:
            return ids


class Load:
    def __init__(self, c: Cluster, known: list[str]) -> None:
        self.c = c
        self.acked = list(known)
        self.errors: list[Any] = []
        self.listings: list[tuple[set[str], list[str]]] = []  # (acked before, listed)
        self.stop = asyncio.Event()

    async def writer(self, w: int) -> None:
        i = 0
        while not self.stop.is_set():
            mid = f"w{w}-{i}"
            node = random.choice(sorted(self.c.clients))
            status, body = await send(self.c.clients[node], "POST", f"/v1/namespaces/{NS}/memories",
                                      json={**mem(mid, vec(i)), "request_id": mid})
            if status == 201:
                self.acked.append(mid)
            else:
                self.errors.append(("write", mid, status, body))
            i += 1

    async def reader(self) -> None:
        while not self.stop.is_set():
            mid = random.choice(self.acked)
            node = random.choice(sorted(self.c.clients))
            status, body = await send(self.c.clients[node], "GET",
                                      f"/v1/namespaces/{NS}/memories/{mid}",
                                      params={"consistency": "linearizable"})
            if status != 200:
                self.errors.append(("get", mid, status, body))

    async def lister(self) -> None:
        while not self.stop.is_set():
            before = set(self.acked)
            listed = await list_all(self.c, random.choice(sorted(self.c.clients)))
            self.listings.append((before, listed))


def part_of_group0(c: Cluster, k: int, of: int) -> tuple[int, int]:
    """The k-th of ``of`` equal parts of group 0's range."""
    (r,) = [r for r in c.nodes["n1"].table.ranges if r.group == 0]
    step = (r.end - r.start) // of
    return r.start + k * step, r.start + (k + 1) * step


def in_range(mid: str, span: tuple[int, int]) -> bool:
    return span[0] <= hash_key(NS, mid) < span[1]


async def load_memories(c: Cluster) -> list[str]:
    ids = [f"m{i}" for i in range(LOADED)]
    status, body = await send(c.clients["n1"], "POST", f"/v1/namespaces/{NS}/memories/batch",
                              json={"memories": [mem(m, vec(i)) for i, m in enumerate(ids)]})
    assert status == 200, body
    return ids


async def check_all_readable(c: Cluster, acked: list[str]) -> None:
    for node in sorted(c.clients):
        listed = await list_all(c, node)
        assert len(listed) == len(set(listed)), f"{node} lists a memory twice"
        assert set(acked) <= set(listed), f"{node} misses {sorted(set(acked) - set(listed))[:5]}"
    for mid in acked[::7]:
        for node in sorted(c.clients):
            status, body = await send(c.clients[node], "GET",
                                      f"/v1/namespaces/{NS}/memories/{mid}")
            assert status == 200 and body["id"] == mid, (node, mid, status, body)


async def scenario_under_load(tmp_path: Path) -> dict[str, Any]:
    async with three_nodes(tmp_path) as c:
        ids = await load_memories(c)
        span = part_of_group0(c, 0, 2)
        moving = [m for m in ids if in_range(m, span)]
        load = Load(c, ids)
        tasks = [asyncio.create_task(load.writer(w)) for w in range(2)]
        tasks += [asyncio.create_task(load.reader()) for _ in range(2)]
        tasks.append(asyncio.create_task(load.lister()))
        # The load is under way before the move starts.
        await until_async(lambda: len(load.acked) > len(ids) + 10, 30, "writes before the move")
        status, report = await send(c.clients["n3"], "POST", "/admin/ranges/move", json={
            "start": format_point(span[0]), "end": format_point(span[1]), "to_group": 1})
        assert status == 200, report
        # A few more listings after the move, then stop.
        seen = len(load.listings)
        await until_async(lambda: len(load.listings) >= seen + 2, 30, "listings after the move")
        load.stop.set()
        await asyncio.gather(*tasks)
        await check_all_readable(c, load.acked)
        own = {g: rangemove_records for g, rangemove_records in
               (await rangemove.ownerships(c.nodes["n1"])).items()}
        return {"report": report, "moving": len(moving), "load": load, "own": own,
                "span": span, "acked": len(load.acked),
                "retries": sum(n.scatter_retries for n in c.nodes.values())}


def test_a_range_moves_between_groups_under_load(tmp_path: Path) -> None:
    out = asyncio.run(scenario_under_load(tmp_path))
    report, load = out["report"], out["load"]
    print("range move:", {k: out[k] for k in ("moving", "acked", "retries")}, report)
    steps = [s["step"] for s in report["steps"]]
    assert steps == ["freeze", "stage", "release", "activate", "done"], report
    staged = report["steps"][1]["memories"]
    assert staged >= out["moving"] > 0, report
    assert report["steps"][2]["deleted"] == staged == report["steps"][3]["activated"]
    assert load.errors == [], load.errors[:5]
    assert len(load.listings) >= 3
    for before, listed in load.listings:
        assert len(listed) == len(set(listed)), "a listing repeated a memory"
        assert before <= set(listed), f"a listing missed {sorted(before - set(listed))[:5]}"
    # Group 1 owns the moved part at the new version; group 0 no longer does.
    own = out["own"]
    start = out["span"][0]
    assert own[1].range_for(start) is not None and own[0].range_for(start) is None
    assert own[1].range_for(start).version == report["version"]


async def scenario_stopped_after_each_step(tmp_path: Path) -> dict[str, Any]:
    async with three_nodes(tmp_path) as c:
        ids = await load_memories(c)
        out: dict[Any, Any] = {}
        spans = [part_of_group0(c, k + 1, 4) for k in range(3)]
        for span, stop in zip(spans, ("freeze", "stage", "release"), strict=True):
            # The driver "crashes" right after ``stop`` (on n2), then the move is asked again.
            first = await rangemove.move_range(c.nodes["n2"], span[0], span[1], 2,
                                               stop_after=stop)
            assert first["steps"][-1]["step"] == stop, first
            listing = None
            if stop == "release":
                # No group serves the range now: a listing started here must
                # neither miss its memories nor return before they are served.
                retries = sum(n.scatter_retries for n in c.nodes.values())
                listing = asyncio.create_task(list_all(c, "n3"))
                await until_async(lambda r=retries: sum(
                    n.scatter_retries for n in c.nodes.values()) > r, 10,
                    "the listing to meet the released range")
                assert not listing.done()
            status, again = await send(c.clients["n1"], "POST", "/admin/ranges/move", json={
                "start": format_point(span[0]), "end": format_point(span[1]), "to_group": 2})
            assert status == 200, again
            out[stop] = (first, again)
            if listing is not None:
                listed = await asyncio.wait_for(listing, 30)
                assert sorted(listed) == sorted(set(listed)) and set(ids) <= set(listed)
            # Done already: asking once more changes nothing.
            status, third = await send(c.clients["n3"], "POST", "/admin/ranges/move", json={
                "start": format_point(span[0]), "end": format_point(span[1]), "to_group": 2})
            assert status == 200 and [s["step"] for s in third["steps"]] == ["done"], third
        await check_all_readable(c, ids)
        records = await rangemove.ownerships(c.nodes["n3"])
        out["owners"] = {k: [g for g, o in records.items() if o.range_for(span[0])]
                         for k, span in enumerate(spans)}
        return out


def test_a_move_stopped_after_any_step_is_finished_by_asking_again(tmp_path: Path) -> None:
    out = asyncio.run(scenario_stopped_after_each_step(tmp_path))
    # Resumed where it stopped: after freeze or stage the move starts from the
    # freeze again (idempotent); after the release only the activation is left.
    assert [s["step"] for s in out["release"][1]["steps"]] == ["activate", "done"], out["release"]
    for stop in ("freeze", "stage"):
        assert [s["step"] for s in out[stop][1]["steps"]] == [
            "freeze", "stage", "release", "activate", "done"], out[stop]
    # Each part ends owned by group 2 alone.
    assert out["owners"] == {0: [2], 1: [2], 2: [2]}, out["owners"]


async def scenario_groups_per_node(tmp_path: Path) -> dict[str, Any]:
    async with three_nodes(tmp_path) as c:
        ids = await load_memories(c)
        load = Load(c, ids)
        tasks = [asyncio.create_task(load.writer(w)) for w in range(2)]
        tasks += [asyncio.create_task(load.reader()), asyncio.create_task(load.lister())]
        # 3 per node on 3 nodes, 2 replicas a group: ceil(9 / 2) = 5 data groups.
        async def target_set() -> Any:
            status, body = await send(c.clients["n2"], "PUT", "/admin/placement",
                                      json={"groups_per_node": 3})
            assert status in (200, 503), body  # 503: the PD is still starting
            return body if status == 200 else None

        assert await until(target_set, 30, "the target to be set") == {"groups_per_node": 3}

        async def grown() -> dict[int, Any] | None:
            try:
                records = await rangemove.ownerships(c.nodes["n1"])
            except Unavailable:
                return None  # a group recorded, its replicas not started yet

            if len(records) < 5 or any(r.frozen for o in records.values() for r in o.ranges):
                return None
            share = {g: sum(r.end - r.start for r in o.ranges) / 2**64
                     for g, o in records.items()}
            return share if min(share.values()) >= 0.1 else None

        share = await until(grown, 120, "two new groups owning their share of the ring")
        load.stop.set()
        await asyncio.gather(*tasks)
        await check_all_readable(c, load.acked)
        ops = await c.nodes["n1"].operators()
        kinds = [(r["kind"], r["group"]) for r in ops["finished"]]

        async def pd_table() -> Any:
            t = (await c.nodes["n1"].ranges())["pd_table"] or {}
            return t if {r["group"] for r in t.get("ranges", [])} == set(share) else None

        table = await until(pd_table, 30, "the PD to record the grown range table")
        held = {g: len([m for m in load.acked if c.nodes["n1"].table.group_for(NS, m) == g])
                for g in share}
        return {"share": share, "kinds": kinds, "load": load, "held": held,
                "failed": ops["failed"], "table": table}


def test_a_groups_per_node_target_creates_groups_and_moves_ranges_to_them(
    tmp_path: Path
) -> None:
    out = asyncio.run(scenario_groups_per_node(tmp_path))
    print("groups per node:", {k: out[k] for k in ("share", "kinds", "held", "failed")})
    # Two groups created, each given a share of the ring by a move. (Which
    # operators did it is the PD leader's history: it may have changed hands.)
    assert sorted(out["share"]) == [0, 1, 2, 3, 4]
    assert min(out["share"].values()) >= 0.1
    assert out["held"][3] > 0 and out["held"][4] > 0  # the new groups hold memories
    # The PD's recorded range table: the whole ring, newer than the initial one.
    assert out["table"]["version"] >= 2
    assert out["table"]["ranges"][0]["start"] == "0000000000000000"
    assert out["table"]["ranges"][-1]["end"] == "end"
    assert out["load"].errors == [], out["load"].errors[:5]
    for before, listed in out["load"].listings:
        assert len(listed) == len(set(listed)) and before <= set(listed)
