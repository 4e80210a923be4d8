"""Write and read latency (p50/p99) and throughput at a few concurrencies.

Run against a running cluster (``raftmem up``)::

    python bench/quick.py --data-dir ./raftmem-data --seconds 10 --concurrency 1,16

It creates the namespace ``bench`` (384-d, cosine) if needed, then for each
concurrency runs a write phase (one memory per request: ~1 KB text, 384-d
embedding, tags, metadata) and a linearizable read phase (get by id of the
memories written) at each tier of ``--tiers``, spreading requests over every node.
Session reads carry no token here, so they measure the local-read path. Prints a table and,
with ``--json FILE``, writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import time
from typing import Any

import aiohttp
import numpy as np
import orjson

DIM = 384
COUNTER = itertools.count()  # shared by every phase: ids never repeat within a run


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    return float(np.percentile(np.asarray(xs), p))


async def phase(name: str, urls: list[str], concurrency: int, seconds: float,
                make: Any) -> dict[str, Any]:
    lat: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds

    async def worker(w: int) -> None:
        async with aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode()) as s:
            base = urls[w % len(urls)]
            while time.monotonic() < stop_at:
                i = next(COUNTER)
                method, path, body = make(i)
                t0 = time.perf_counter()
                async with s.request(method, base + path, data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    ok = r.status < 300
                dt = time.perf_counter() - t0
                if ok:
                    lat.append(dt)
                else:
                    errors[str(r.status)] = errors.get(str(r.status), 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - t0
    return {
        "phase": name, "concurrency": concurrency, "ops": len(lat),
        "ops_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(percentile(lat, 50) * 1e3, 2), "p99_ms": round(percentile(lat, 99) * 1e3, 2),
        "errors": errors,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="./raftmem-data")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--json", default=None)
    ap.add_argument("--tiers", default="linearizable",
                    help="read tiers to measure, comma-separated (linearizable,lease,session,eventual)")
    args = ap.parse_args()
    with open(os.path.join(args.data_dir, "cluster.json"), "rb") as f:  # noqa: ASYNC230 - before any load
        urls = [f"http://{n['api']}" for n in orjson.loads(f.read())["nodes"]]
    async with aiohttp.ClientSession() as s, s.put(
        urls[0] + "/v1/namespaces/bench", json={"dim": DIM, "metric": "cosine"}
    ) as r:
        assert r.status in (200, 201), await r.text()

    rng = np.random.default_rng(0)
    vecs = [[float(x) for x in rng.standard_normal(DIM)] for _ in range(64)]
    text = "x" * 1000
    run = f"{os.getpid()}-{int(time.time())}"
    written: list[str] = []

    def make_write(i: int) -> tuple[str, str, bytes]:
        mid = f"{run}-{i}"
        written.append(mid)
        body = {"id": mid, "agent_id": f"agent-{i % 16}", "text": text, "embedding": vecs[i % 64],
                "tags": ["bench", f"t{i % 8}"], "metadata": {"i": i, "run": run}}
        return "POST", "/v1/namespaces/bench/memories", orjson.dumps(body)

    def make_read(tier: str) -> Any:
        def make(i: int) -> tuple[str, str, bytes | None]:
            mid = random.choice(written)
            return "GET", f"/v1/namespaces/bench/memories/{mid}?consistency={tier}", None
        return make

    rows = []
    for c in (int(x) for x in args.concurrency.split(",")):
        rows.append(await phase("write", urls, c, args.seconds, make_write))
        for tier in args.tiers.split(","):
            rows.append(await phase(f"read ({tier})", urls, c, args.seconds, make_read(tier)))
    print(f"{'phase':<22}{'conc':>5}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}  errors")
    for row in rows:
        print(f"{row['phase']:<22}{row['concurrency']:>5}{row['ops_per_s']:>10}{row['p50_ms']:>9}"
              f"{row['p99_ms']:>9}  {row['errors'] or ''}")
    if args.json:
        with open(args.json, "wb") as out:  # noqa: ASYNC230 - after the load
            out.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    asyncio.run(main())
