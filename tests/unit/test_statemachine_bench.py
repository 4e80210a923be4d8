"""Figures for statemachine/DESIGN.md (slow; excluded from the default run).

    pytest -m slow -s tests/unit/test_statemachine_bench.py

Prints apply throughput, search latency at 10k and 100k vectors (dim 384) for
several filter shapes (through the in-memory index and through vec0), and
snapshot write/install times.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raftmem import commands as C
from raftmem.statemachine import Reader, StateMachine, vecindex
from raftmem.statemachine.ops import load_namespace

DIM = 384
BATCH = 500
NOW = 10_000_000


def _best_ms(fn: Any, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def _load(sm: StateMachine, n: int, rng: np.random.Generator) -> float:
    """Fill namespace "ns" with n memories via put_batch; returns seconds spent in apply."""
    spent = 0.0
    for start in range(0, n, BATCH):
        mems = []
        for i in range(start, min(n, start + BATCH)):
            mems.append(
                {
                    "id": f"m{i:07d}",
                    "agent_id": f"agent{i % 10}",
                    "text": f"memory number {i}",
                    "embedding": rng.standard_normal(DIM).astype(np.float32),
                    "metadata": {"kind": ["note", "fact", "plan"][i % 3], "i": i},
                    "tags": [f"t{i % 20}"],
                    # 1% already expired at NOW but not purged: exercises the TTL path.
                    "expires_at": NOW - 1 if i % 100 == 0 else None,
                }
            )
        payload = C.encode(C.put_batch("ns", mems, 1_000 + start, None, None))
        t = time.perf_counter()
        sm.apply(sm.applied_index + 1, payload)
        spent += time.perf_counter() - t
    return spent


@pytest.mark.slow
@pytest.mark.parametrize("n", [10_000, 100_000])
def test_bench(tmp_path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    path = str(tmp_path / "state.db")
    sm = StateMachine(path)
    sm.apply(1, C.encode(C.create_namespace("ns", DIM, "cosine", 1, None)))
    load_s = _load(sm, n, rng)
    print(f"\n--- n={n} dim={DIM} cosine")
    print(f"put_batch({BATCH}) apply: {n / load_s:,.0f} memories/s")

    single = [
        C.encode(
            C.put(
                "ns",
                {
                    "id": f"single{i}",
                    "agent_id": "a",
                    "text": "x",
                    "embedding": rng.standard_normal(DIM),
                    "expires_at": None,
                },
                2_000_000,
                f"rid{i}",
                None,
            )
        )
        for i in range(200)
    ]
    t = time.perf_counter()
    for p in single:
        sm.apply(sm.applied_index + 1, p)
    print(f"put apply (with request id): {200 / (time.perf_counter() - t):,.0f}/s")

    reader = Reader(path)
    q = rng.standard_normal(DIM).astype(np.float32)
    cases: list[tuple[str, dict[str, Any] | None, int]] = [
        ("no filter (TTL only)", None, 10),
        ("no filter, k=100", None, 100),
        ("agent_id (10%)", {"agent_id": "agent3"}, 10),
        ("tags_any (5%)", {"tags_any": ["t7"]}, 10),
        ("metadata kind (33%)", {"metadata": {"kind": "fact"}}, 10),
        ("created_after (50%)", {"created_after": 1_000 + n // 2}, 10),
        ("agent+tag (0.5%)", {"agent_id": "agent3", "tags_all": ["t13"]}, 10),
    ]
    index = sm.search_index
    assert index is not None
    for label, flt, k in cases:
        ms = _best_ms(lambda flt=flt, k=k: reader.search("ns", q, k, flt, NOW))
        vecindex.unregister(index)  # the vec0 path, for comparison
        try:
            ms0 = _best_ms(lambda flt=flt, k=k: reader.search("ns", q, k, flt, NOW), repeat=3)
        finally:
            vecindex.register(index)
        print(f"search {label:<24} k={k:<4} index {ms:8.2f} ms   vec0 {ms0:8.1f} ms")
    st = index.stats()
    print(f"index: {st['rows']:,} rows, {st['bytes'] / 2**20:.1f} MiB")
    nsdef = load_namespace(reader._conn, "ns")
    assert nsdef is not None
    # The exact fallback (ties at vec0's cut-off, k > 4096), timed on its own.
    ms = _best_ms(lambda: reader._scan(nsdef, q.tobytes(), 10, "m.ns = ?", ["ns"]), repeat=2)
    print(f"search fallback full scan   k=10   {ms:8.1f} ms")
    print(f"get: {_best_ms(lambda: reader.get('ns', 'm0000007', NOW), 50) * 1000:.0f} us")
    ms = _best_ms(lambda: reader.list("ns", "agent1", None, 50, None, NOW))
    print(f"list(agent, 50): {ms:.1f} ms")

    snap = str(tmp_path / "snap.db")
    t = time.perf_counter()
    sm.snapshot_to(snap, b"meta")
    snap_s = time.perf_counter() - t
    size = os.path.getsize(snap) / 1e6
    print(f"snapshot_to: {snap_s * 1000:.0f} ms ({size:.0f} MB, includes fsync)")
    other = StateMachine(str(tmp_path / "other.db"))
    t = time.perf_counter()
    assert other.install_snapshot(snap)
    print(f"install_snapshot (with index rebuild): {(time.perf_counter() - t) * 1000:.0f} ms")
    t = time.perf_counter()
    other.search_index.rebuild(other._conn, other.applied_index)  # type: ignore[union-attr]
    print(f"index rebuild alone: {(time.perf_counter() - t) * 1000:.0f} ms")
    t = time.perf_counter()
    reader.digest()
    print(f"digest: {(time.perf_counter() - t) * 1000:.0f} ms")
    other.close()
    reader.close()
    sm.close()
