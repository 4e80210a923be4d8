"""The cost of one replica applying bulk-load batches, without Raft or HTTP.

``python -m bench.apply_cost [--batches 5] [--batch-size 1000] [--dim 384]``

Encodes ``put_batch`` commands as a node does, decodes them, and applies them
to a fresh state machine (SQLite + sqlite-vec + the search index), printing the
time per batch of each step and the top of a cProfile of the applies. Every
replica applies every entry, and a local cluster's replicas share this
machine's cores: this bounds the bulk-load rate (docs/benchmarks.md, "Bulk
load: where the time goes").
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import tempfile
import time

from raftmem import commands as C
from raftmem.statemachine import StateMachine


def batch(b: int, size: int, dim: int, rng: random.Random) -> bytes:
    ms = [{"id": f"m{b}-{i}", "agent_id": f"a{i % 100}", "text": "x" * 1000,
           "embedding": [rng.random() for _ in range(dim)],
           "metadata": {"k": i, "j": "v", "z": True}, "tags": ["t1", "t2"], "expires_at": None}
          for i in range(size)]
    return C.encode(C.put_batch("ns", ms, 1000 + b, f"r{b}", None))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.apply_cost", description=__doc__)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    args = ap.parse_args()
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
