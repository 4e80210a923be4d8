"""The in-memory vector index (statemachine/vecindex.py) against a brute-force reference.

Every search here must equal a numpy float64 reference over a model of the
replicated data: same ids in the same (distance, id) order, same distances.
Most tests forbid the SQLite (vec0) path, so the answers are the index's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raftmem import commands as C
from raftmem.statemachine import Reader, StateMachine, ops, vecindex
from raftmem.statemachine.ops import load_namespace
from tests.unit.test_statemachine_search import matches

DIM = 6
AGENTS = ["a0", "a1", "a2", "a3", "rare"]
TAGS = ["red", "green", "blue"]


class World:
    """A state machine plus a plain-Python model of what it holds."""

    def __init__(self, path: str, metric: str) -> None:
        self.path = path
        self.metric = metric
        self.sm = StateMachine(path)
        self.index = 0
        self.ts = 1_000
        self.model: dict[str, dict[str, Any]] = {}
        assert self.apply(C.create_namespace("ns", DIM, metric, 1, None))["ok"]

    def apply(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        return self.sm.apply(self.index, C.encode(cmd))

    def tick(self) -> int:
        self.ts += 10
        return self.ts

    def put(
        self,
        mid: str,
        emb: np.ndarray,
        agent: str,
        tags: list[str] | None = None,
        md: dict[str, Any] | None = None,
        expires_at: int | None = None,
    ) -> None:
        ts = self.tick()
        m = {
            "id": mid,
            "agent_id": agent,
            "text": mid,
            "embedding": emb.astype(np.float32),
            "tags": tags or [],
            "metadata": md or {},
            "expires_at": expires_at,
        }
        res = self.apply(C.put("ns", m, ts, None, None))
        assert res["ok"], res
        self.model[mid] = {**m, "created_at": ts}

    def patch(self, mid: str, fields: dict[str, Any]) -> None:
        res = self.apply(C.patch("ns", mid, fields, None, self.tick(), None, None))
        assert res["ok"], res
        rec = self.model[mid]
        for key, value in fields.items():
            rec[key] = np.asarray(value, dtype=np.float32) if key == "embedding" else value

    def delete(self, mid: str) -> None:
        assert self.apply(C.delete("ns", mid, None, self.tick(), None, None))["ok"]
        del self.model[mid]

    def purge(self, now: int) -> None:
        assert self.apply(C.purge(now, 0))["ok"]
        for mid in [m for m, r in self.model.items() if r["expires_at"] is not None]:
            if self.model[mid]["expires_at"] <= now:
                del self.model[mid]

    def permanent(self) -> list[str]:
        """Ids that never expire, sorted."""
        return sorted(m for m, r in self.model.items() if r["expires_at"] is None)

    def live(self, now: int) -> list[str]:
        return [
            m for m, r in self.model.items() if r["expires_at"] is None or r["expires_at"] > now
        ]

    def reference(
        self, q: np.ndarray, k: int, flt: dict[str, Any] | None, now: int
    ) -> list[tuple[str, float]]:
        return reference(self.model, self.metric, q, k, flt, now)


def reference(
    model: dict[str, dict[str, Any]],
    metric: str,
    q: np.ndarray,
    k: int,
    flt: dict[str, Any] | None,
    now: int,
) -> list[tuple[str, float]]:
    """Brute force in float64 over the stored float32 vectors, reported as float32."""
    q64 = np.asarray(q, dtype=np.float32).astype(np.float64)
    out = []
    for mid, m in model.items():
        if not matches(m, flt, now):
            continue
        x = m["embedding"].astype(np.float64)
        if metric == "cosine":
            d = 1.0 - float(x @ q64) / (float(np.linalg.norm(x)) * float(np.linalg.norm(q64)))
        else:
            d = float(np.sqrt(((x - q64) ** 2).sum()))
        out.append((float(np.float32(d)), mid))
    out.sort()
    return [(mid, d) for d, mid in out[:k]]


def hits_of(results: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(h["memory"]["id"], h["distance"]) for h in results]


def assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [m for m, _ in got] == [m for m, _ in want]
    for (_, dg), (_, dw) in zip(got, want, strict=True):
        assert dg == pytest.approx(dw, rel=1e-6, abs=1e-6)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 32 rows, so that every test crosses many block boundaries."""
    monkeypatch.setattr(vecindex, "_MAX_ROWS", 32)


@pytest.fixture
def index_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any search that the index does not answer itself."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("search fell back to the SQLite path")

    monkeypatch.setattr(Reader, "_knn", boom)
    monkeypatch.setattr(Reader, "_scan", boom)


@pytest.fixture(params=["cosine", "l2"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    w = World(str(tmp_path / "state.db"), request.param)
    yield w
    w.sm.close()


def populate(w: World, rng: np.random.Generator, n: int) -> None:
    base = rng.standard_normal((n, DIM)).astype(np.float32)
    base[n // 2 : n // 2 + 12] = base[0]  # exact ties
    for i in range(n):
        agent = "rare" if i % 50 == 0 else AGENTS[i % 4]
        tags = [t for j, t in enumerate(TAGS) if (i >> j) & 1]
        md: dict[str, Any] = {"n": i % 3, "color": ["red", "blue"][i % 2]}
        expires = None if i % 6 else w.ts + 2_000 + 37 * i
        w.put(f"m{(i * 7919) % 10007:05d}", base[i], agent, tags, md, expires)


FILTERS: list[dict[str, Any] | None] = [
    None,
    {"agent_id": "a1"},
    {"agent_id": "rare"},
    {"agent_id": "nobody"},
    {"tags_any": ["red"]},
    {"tags_all": ["red", "green", "blue"]},
    {"metadata": {"n": 2}},
    {"agent_id": "a2", "tags_any": ["blue"], "metadata": {"color": "red"}},
    {"created_after": 1_500, "created_before": 3_000},
]


def check_all(w: World, rng: np.random.Generator, reader: Reader, now: int) -> None:
    queries = [rng.standard_normal(DIM).astype(np.float32) for _ in range(3)]
    queries.append(next(iter(w.model.values()))["embedding"])  # an exact match (and ties)
    for q in queries:
        for flt in FILTERS:
            for k in (1, 5, 40):
                got = hits_of(reader.search("ns", q, k, flt, now))
                assert_same(got, w.reference(q, k, flt, now))


def test_index_matches_brute_force_through_every_kind_of_change(
    world: World, index_only: None
) -> None:
    rng = np.random.default_rng(7)
    populate(world, rng, 300)
    with Reader(world.path) as r:
        check_all(world, rng, r, world.ts)
        ids = sorted(world.model)
        for step in range(240):
            mid = ids[int(rng.integers(len(ids)))]
            kind = step % 8
            if mid not in world.model or mid not in world.live(world.ts + 10):
                world.put(
                    mid, rng.standard_normal(DIM), AGENTS[step % 5], ["green"], {"n": step % 3}
                )
            elif kind == 0:
                world.patch(mid, {"embedding": rng.standard_normal(DIM).tolist()})
            elif kind == 1:
                world.patch(mid, {"agent_id": AGENTS[(step // 8) % 5]})
            elif kind == 2:
                world.patch(mid, {"expires_at": world.ts + 500})
            elif kind == 3:
                world.patch(mid, {"text": "only text", "tags": ["blue"], "metadata": {"n": 1}})
            elif kind == 4:
                world.delete(mid)
            elif kind == 5:
                world.patch(mid, {"embedding": rng.standard_normal(DIM).tolist(), "agent_id": "a0"})
            elif kind == 6:
                world.patch(mid, {"expires_at": None})
            else:
                world.put(f"new{step}", rng.standard_normal(DIM), "rare", ["red"], {"n": 2})
            if step % 60 == 59:
                check_all(world, rng, r, world.ts)
        # TTL judged at the caller's time, before and after the purge removes rows.
        later = world.ts + 3_000
        check_all(world, rng, r, later)
        world.purge(later)
        check_all(world, rng, r, later)
        stats = world.sm.search_index.stats() if world.sm.search_index else {}
        assert stats["live"] == len(world.model) and stats["disabled_namespaces"] == 0
        assert stats["bytes"] > stats["vector_bytes"] > 0


def test_index_answers_as_of_the_readers_snapshot(world: World, index_only: None) -> None:
    rng = np.random.default_rng(11)
    populate(world, rng, 200)
    q = rng.standard_normal(DIM).astype(np.float32)
    flts: list[dict[str, Any] | None] = [None, {"agent_id": "a1"}, {"tags_any": ["red"]}]
    now = world.ts
    with Reader(world.path) as r:
        with r.transaction():
            before = {i: world.reference(q, 10, f, now) for i, f in enumerate(flts)}
            snapshot = r.applied_index()
            # Change exactly what the reader is about to find, and add nearer rows.
            for mid, _ in before[0][:5] + before[1][:3]:
                if mid in world.model:
                    world.delete(mid)
            for mid, _ in before[2][:3]:
                if mid in world.model:
                    world.patch(mid, {"embedding": (-q).tolist(), "agent_id": "a3"})
            world.put("nearest", q, "a1", ["red"])
            assert world.sm.applied_index > snapshot
            for i, f in enumerate(flts):
                assert_same(hits_of(r.search("ns", q, 10, f, now)), before[i])
            assert r.applied_index() == snapshot
        for f in flts:
            got = hits_of(r.search("ns", q, 10, f, now))
            assert got[0][0] == "nearest"
            assert_same(got, world.reference(q, 10, f, now))


def test_postfilter_falls_back_to_sqlite_rowids_when_selective(
    world: World, index_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(5)
    populate(world, rng, 300)
    calls: list[int] = []
    real = vecindex._Search._select

    def counting(self: Any, *args: Any) -> Any:
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(vecindex._Search, "_select", counting)
    with Reader(world.path) as r:
        for budget in (1, 8, 10_000):
            monkeypatch.setattr(vecindex, "POSTFILTER_BUDGET", budget)
            check_all(world, rng, r, world.ts)
    assert calls


def test_rolled_back_entry_leaves_no_trace_in_the_index(
    world: World, index_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    populate(world, rng, 40)
    victim = world.permanent()[0]
    index = world.sm.search_index
    assert index is not None
    before = index.stats()

    def half_then_boom(conn: Any, cmd: dict[str, Any]) -> dict[str, Any]:
        ops.delete(conn, {**cmd, "op": "delete", "id": victim, "if_version": None})
        ops.put(conn, cmd)
        raise RuntimeError("bug")

    q = world.model[victim]["embedding"]
    monkeypatch.setitem(ops.HANDLERS, "put", half_then_boom)
    with pytest.raises(Exception, match="bug"):
        world.put("ghost", q, "a0")
    monkeypatch.undo()
    world.index -= 1  # the entry was not applied
    after = index.stats()
    assert (after["live"], after["disabled_namespaces"]) == (before["live"], 0)
    monkeypatch.setattr(Reader, "_knn", lambda *a: pytest.fail("fell back"))
    with Reader(world.path) as r:
        assert_same(
            hits_of(r.search("ns", q, 5, None, world.ts)), world.reference(q, 5, None, world.ts)
        )
        # The same entry applied again works, and the index sees it.
        world.put("ghost", q, "a0")
        got = hits_of(r.search("ns", q, 50, {"agent_id": "a0"}, world.ts))
        assert "ghost" in [m for m, _ in got]
        assert_same(got, world.reference(q, 50, {"agent_id": "a0"}, world.ts))


def test_compaction_with_writes_in_between(world: World) -> None:
    rng = np.random.default_rng(13)
    populate(world, rng, 200)
    index = world.sm.search_index
    assert index is not None
    ids = world.permanent()
    for mid in ids[:60]:
        world.delete(mid)
    for mid in ids[60:110]:
        world.patch(mid, {"embedding": rng.standard_normal(DIM).tolist()})
    nid = 1
    q = rng.standard_normal(DIM).astype(np.float32)
    with Reader(world.path) as old, Reader(world.path) as r:
        with old.transaction():
            old_snapshot = old.applied_index()
            old_want = world.reference(q, 15, None, world.ts)
            world.delete(old_want[0][0])
            plan = index.compact_begin(nid)
            assert plan is not None
            world.delete(ids[120])
            world.put("during-copy", q, "a1")
            index.compact_copy(plan)
            world.patch(ids[130], {"agent_id": "rare", "embedding": q.tolist()})
            world.delete(ids[140])
            world.put("after-copy", -q, "rare")
            assert index.compact_finish(plan)
            stats = index.stats()
            assert stats["compactions"] == 1 and stats["live"] == len(world.model)
            assert stats["rows"] < 200 + 50
            # Too old for the new generation: the index declines, vec0 answers.
            assert index.search(nid, old_snapshot, q, 15, world.ts, None, lambda r: {}) is None
            assert_same(hits_of(old.search("ns", q, 15, None, world.ts)), old_want)

        def boom(*args: Any) -> Any:
            raise AssertionError("fell back")

        r._knn = boom  # type: ignore[method-assign]
        check_all(world, rng, r, world.ts)
        for mid in world.permanent()[-30:]:
            world.delete(mid)
        world.patch("after-copy", {"embedding": q.tolist()})
        check_all(world, rng, r, world.ts)
        assert index.stats()["disabled_namespaces"] == 0


def test_background_compaction(world: World, index_only: None) -> None:
    rng = np.random.default_rng(17)
    populate(world, rng, 120)
    index = world.sm.search_index
    assert index is not None
    index.compact_min_dead = 20
    for mid in world.permanent()[:60]:
        world.delete(mid)
        if index._compactor is not None:
            index._compactor.join()
    assert index.stats()["compactions"] >= 1
    with Reader(world.path) as r:
        check_all(world, rng, r, world.ts)


def test_rebuilt_on_open_and_after_snapshot_install(tmp_path: Path, index_only: None) -> None:
    rng = np.random.default_rng(19)
    w = World(str(tmp_path / "a.db"), "l2")
    populate(w, rng, 150)
    for mid in w.permanent()[:20]:
        w.patch(mid, {"embedding": rng.standard_normal(DIM).tolist(), "agent_id": "rare"})
    for mid in w.permanent()[-15:]:  # holes in vec0's chunks
        w.delete(mid)
    snap = str(tmp_path / "snap.db")
    w.sm.snapshot_to(snap, b"meta")
    w.sm.close()
    # Reopen: the index is loaded from SQLite.
    w.sm = StateMachine(w.path)
    with Reader(w.path) as r:
        check_all(w, rng, r, w.ts)
    w.sm.close()
    # Install into a replica that holds something else.
    other = World(str(tmp_path / "b.db"), "l2")
    other.put("stale", np.ones(DIM), "a0")
    index = other.sm.search_index
    assert index is not None
    assert other.sm.install_snapshot(snap)
    assert index.stats()["rebuilds"] == 2 and index.stats()["live"] == len(w.model)
    other.model, other.ts = w.model, w.ts
    with Reader(other.path) as r:
        check_all(other, rng, r, other.ts)
        other.index = other.sm.applied_index
        other.put("after-install", np.zeros(DIM), "rare")
        check_all(other, rng, r, other.ts)
    other.sm.close()


def test_seal_sends_newer_snapshots_to_sqlite(world: World) -> None:
    populate(world, np.random.default_rng(23), 20)
    index = world.sm.search_index
    assert index is not None
    q = np.ones(DIM, dtype=np.float32)
    at = world.sm.applied_index
    assert index.search(1, at, q, 3, world.ts, None, lambda r: {}) is not None
    index.seal(at - 1)
    assert index.search(1, at, q, 3, world.ts, None, lambda r: {}) is None
    with Reader(world.path) as r:
        assert_same(
            hits_of(r.search("ns", q, 3, None, world.ts)), world.reference(q, 3, None, world.ts)
        )


def test_vectors_beyond_float32_safety_go_to_sqlite(tmp_path: Path) -> None:
    w = World(str(tmp_path / "s.db"), "l2")
    w.put("small", np.ones(DIM), "a0")
    w.put("huge", np.full(DIM, 1e16), "a0")
    index = w.sm.search_index
    assert index is not None
    q = np.ones(DIM, dtype=np.float32)
    assert index.search(1, w.sm.applied_index, q, 2, w.ts, None, lambda r: {}) is None
    assert index.stats()["disabled_namespaces"] == 1
    with Reader(w.path) as r:
        assert [m for m, _ in hits_of(r.search("ns", q, 2, None, w.ts))] == ["small", "huge"]
    w.sm.close()


def test_without_a_state_machine_in_process_search_uses_sqlite(tmp_path: Path) -> None:
    path = str(tmp_path / "n.db")
    with StateMachine(path, search_index=False) as sm:
        sm.apply(1, C.encode(C.create_namespace("ns", 2, "l2", 1, None)))
        assert sm.search_index is None
        with Reader(path) as r:
            assert vecindex.lookup(r._index_key) is None
            assert r.search("ns", np.ones(2, dtype=np.float32), 3, None, 5) == []
            nsdef = load_namespace(r._conn, "ns")
            assert nsdef is not None and nsdef.nid == 1


def test_same_answers_as_the_vec0_path(world: World) -> None:
    rng = np.random.default_rng(29)
    populate(world, rng, 250)
    index = world.sm.search_index
    assert index is not None
    with Reader(world.path) as r:
        for q in [rng.standard_normal(DIM).astype(np.float32) for _ in range(4)]:
            for flt in FILTERS:
                for k in (1, 10, 100):
                    got = r.search("ns", q, k, flt, world.ts)
                    vecindex.unregister(index)
                    try:
                        want = r.search("ns", q, k, flt, world.ts)
                    finally:
                        vecindex.register(index)
                    assert [h["memory"] for h in got] == [h["memory"] for h in want]
                    for g, w in zip(got, want, strict=True):
                        assert g["distance"] == pytest.approx(w["distance"], abs=1e-5)
                        assert g["score"] == pytest.approx(w["score"], abs=1e-5)


def test_concurrent_readers_see_their_snapshot(tmp_path: Path) -> None:
    """Readers search on threads while entries apply (and compactions run): each
    answer must be the reference at the applied index its transaction saw."""
    rng = np.random.default_rng(31)
    w = World(str(tmp_path / "c.db"), "cosine")
    populate(w, rng, 150)
    index = w.sm.search_index
    assert index is not None
    index.compact_min_dead = 25
    # Precompute the commands and the model after each of them.
    plan: list[dict[str, Any]] = []
    history: dict[int, dict[str, dict[str, Any]]] = {w.index: dict(w.model)}
    model = {m: dict(r) for m, r in w.model.items()}
    ts, at = w.ts, w.index
    for step in range(300):
        ts += 10
        at += 1
        live = sorted(model)
        mid = live[int(rng.integers(len(live)))]
        if step % 3 == 0:
            emb = rng.standard_normal(DIM).astype(np.float32)
            plan.append(C.patch("ns", mid, {"embedding": emb}, None, ts, None, None))
            model[mid] = {**model[mid], "embedding": emb}
        elif step % 3 == 1:
            plan.append(C.delete("ns", mid, None, ts, None, None))
            del model[mid]
        else:
            emb = rng.standard_normal(DIM).astype(np.float32)
            m = {"id": f"c{step}", "agent_id": AGENTS[step % 5], "text": "", "embedding": emb}
            plan.append(C.put("ns", {**m, "expires_at": None}, ts, None, None))
            model[m["id"]] = {**m, "tags": [], "metadata": {}, "expires_at": None, "created_at": ts}
        history[at] = dict(model)
    # populate's expiring rows are all gone by then, in every version of the model
    now = max(r["expires_at"] or 0 for r in w.model.values()) + 1
    queries = [rng.standard_normal(DIM).astype(np.float32) for _ in range(8)]
    done = threading.Event()
    failures: list[str] = []
    checked = [0]

    def read() -> None:
        with Reader(w.path) as r:
            i = 0
            while not done.is_set() or i < 4:
                q = queries[i % len(queries)]
                flt = [None, {"agent_id": "a1"}][i % 2]
                with r.transaction():
                    s = r.applied_index()
                    got = hits_of(r.search("ns", q, 7, flt, now))
                want = reference(history[s], "cosine", q, 7, flt, now)
                if [m for m, _ in got] != [m for m, _ in want]:
                    failures.append(f"at {s}: {got} != {want}")
                checked[0] += 1
                i += 1

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for cmd in plan:
            w.apply(cmd)
    finally:
        done.set()
        for t in threads:
            t.join()
        if index._compactor is not None:
            index._compactor.join()
    assert not failures, failures[:3]
    assert checked[0] >= 12
    assert index.stats()["compactions"] >= 1
    w.sm.close()


def test_rebuild_falls_back_to_vec0s_own_scan(
    tmp_path: Path, index_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(37)
    w = World(str(tmp_path / "f.db"), "cosine")
    populate(w, rng, 60)
    w.sm.close()

    def wrong(conn: Any, nid: int, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rows = sorted(w.model)
        yield np.arange(1, len(rows) + 1, dtype=np.int64), np.ones((len(rows), dim), np.float32)

    monkeypatch.setattr(vecindex, "_stored_chunks", wrong)
    w.sm = StateMachine(w.path)
    assert w.sm.search_index is not None
    assert w.sm.search_index.stats()["disabled_namespaces"] == 0
    with Reader(w.path) as r:
        check_all(w, rng, r, w.ts)
    w.sm.close()


def test_stats_are_found_by_path_while_the_state_machine_is_open(tmp_path: Path) -> None:
    w = World(str(tmp_path / "s.db"), "l2")
    populate(w, np.random.default_rng(41), 40)
    via_other_spelling = str(tmp_path / "." / "s.db")
    st = vecindex.stats_for(via_other_spelling)
    assert st is not None and st["live"] == len(w.model) and st["bytes"] > 0
    assert st["reserved_bytes"] >= st["vector_bytes"] == st["rows"] * DIM * 4
    w.sm.close()
    assert vecindex.stats_for(via_other_spelling) is None
