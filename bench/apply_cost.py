"""The cost of one replica applying bulk-load batches, without Raft or HTTP.

``python -m bench.apply_cost [--batches 5] [--batch-size 1000] [--dim 384]``
``python -m bench.apply_cost --single 3000``


Encodes ``put_batch`` commands as a node does, decodes them, and applies them
to a fresh state machine (SQLite + sqlite-vec + the search index), printing the
time per batch of each step and the top of a cProfile of the applies. Every
replica applies every entry, and a local cluster's replicas share this
machine's cores: this bounds the bulk-load rate (docs/benchmarks.md, "Bulk
load: where the time goes").

``--single N`` applies N single-memory ``put`` entries instead, committed one
by one and then in groups of 4, 16 and 64 entries (group commit, as the raft
host does per tick), and prints SQLite's time per statement for the one-by-one
case (docs/benchmarks.md, "Group commit").
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import random
import tempfile
import time
from typing import Any

from raftmem import commands as C
from raftmem.statemachine import StateMachine


def memory(mid: str, i: int, dim: int, rng: random.Random) -> dict[str, Any]:
    return {"id": mid, "agent_id": f"a{i % 100}", "text": "x" * 1000,
            "embedding": [rng.random() for _ in range(dim)],
            "metadata": {"k": i, "j": "v", "z": True}, "tags": ["t1", "t2"], "expires_at": None}


def batch(b: int, size: int, dim: int, rng: random.Random) -> bytes:
    ms = [memory(f"m{b}-{i}", i, dim, rng) for i in range(size)]
    return C.encode(C.put_batch("ns", ms, 1000 + b, f"r{b}", None))


def single(n: int, dim: int) -> None:
    """Single-memory entries, committed every 1, 4, 16 and 64 entries."""
    rng = random.Random(1)
    payloads = [C.encode(C.put("ns", memory(f"m{i}", i, dim, rng), 1000 + i, f"r{i}", None))
                for i in range(n)]
    for every in (1, 4, 16, 64):
        spent: collections.Counter[str] = collections.Counter()
        with tempfile.TemporaryDirectory() as d:
            sm = StateMachine(os.path.join(d, "state.db"))
            sm.apply(1, C.encode(C.create_namespace("ns", dim, "cosine", 1, "ns")))
            sm.group_commit = True
            if every == 1:
                def profile(sql: str, ns: int, spent: collections.Counter[str] = spent) -> None:
                    spent[" ".join(sql.split())[:60]] += ns
                sm._conn.set_profile(profile)
            t = time.perf_counter()
            for i, p in enumerate(payloads):
                sm.apply(2 + i, p)
                if (i + 1) % every == 0:
                    sm.flush()
            sm.flush()
            per = (time.perf_counter() - t) / n
            sm.close()
        print(f"commit every {every:>2} entries: {per * 1e6:.0f} us per entry")
        for sql, ns in spent.most_common(6):
            print(f"    {ns / n / 1000:7.1f} us per entry  {sql}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.apply_cost", description=__doc__)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--single", type=int, default=0, metavar="N",
                    help="N single-memory entries, committed one by one and in groups")
    args = ap.parse_args()
    if args.single:
        single(args.single, args.dim)
        return
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as d:
        sm = StateMachine(os.path.join(d, "state.db"))
        sm.apply(1, C.encode(C.create_namespace("ns", args.dim, "l2", 1, "ns")))
        t = time.perf_counter()
        payloads = [batch(b, args.batch_size, args.dim, rng) for b in range(args.batches)]
        encode = (time.perf_counter() - t) / args.batches
        t = time.perf_counter()
        for p in payloads:
            C.decode(p)
        decode = (time.perf_counter() - t) / args.batches
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        for i, p in enumerate(payloads):
            sm.apply(2 + i, p)
        prof.disable()
        apply = (time.perf_counter() - t) / args.batches
        sm.close()
    n = args.batch_size
    print(f"batch of {n} memories, {len(payloads[0]):,} bytes encoded")
    print(f"encode {encode * 1000:.1f} ms  decode {decode * 1000:.1f} ms  "
          f"apply {apply * 1000:.1f} ms ({apply / n * 1e6:.0f} us/memory, "
          f"{n / apply:,.0f} memories/s on one core)")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    print(out.getvalue())


if __name__ == "__main__":
    main()
