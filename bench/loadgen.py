"""The load generator: worker processes, each running asyncio + aiohttp.

The suite keeps a small pool of worker processes (``LoadGenPool``) for the
whole run; each measurement point sends every process it uses a ``Job`` and
collects one ``WorkerResult`` per process. A job names a workload, the base
URLs to spread requests over, the process's share of the concurrency, and a
wall-clock start: every process sleeps until then, runs a warm-up, then
measures a window of ``duration_s`` seconds. Only completions inside the
window count (latency and throughput alike).

A connection coroutine sends its requests one after another (a closed loop);
request ``seq`` of coroutine ``g`` goes to ``urls[(g + seq) % len(urls)]`` so
every node gets the same share, at any concurrency.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing as mp
import os
import queue
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench import data
from bench.stats import WorkerResult

JSON = {"Content-Type": "application/json"}
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class Failed(Exception):
    """A request that completed with an error; ``kind`` is how it is counted."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class Job:
    target: str  # "raftmem" | "etcd" | "const"
    workload: str  # see WORKLOADS
    urls: list[str]
    concurrency: int  # connection coroutines in this process
    start_at: float = 0.0  # wall clock (time.time()) when the warm-up begins
    warmup_s: float = 1.0
    duration_s: float = 5.0
    proc_index: int = 0
    conn_offset: int = 0  # index of this process's first coroutine among all processes
    params: dict[str, Any] = field(default_factory=dict)


async def _fail_from(r: aiohttp.ClientResponse) -> Failed:
    body = await r.read()
    code = ""
    try:
        err = orjson.loads(body).get("error")
        if isinstance(err, dict):
            code = str(err.get("code", ""))
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return Failed(f"{r.status}:{code}" if code else str(r.status))


Op = Callable[[aiohttp.ClientSession, str, "Conn"], Awaitable[int]]


@dataclass
class Conn:
    """Per-coroutine state: its index, request counter, rng and session token."""

    g: int
    seq: int
    rng: random.Random
    session_token: str | None = None


class Workloads:
    """Request makers. Each op sends one request and returns the items it carried."""

    def __init__(self, job: Job) -> None:
        p = job.params
        self.job = job
        self.p = p
        self.seed = int(p.get("seed", 1))
        self.n_loaded = int(p.get("n_loaded", 0))
        self.agents = int(p.get("agents", data.AGENTS))
        self.k = int(p.get("k", 10))
        self.list_limit = int(p.get("list_limit", 20))
        self.batch_size = int(p.get("batch_size", 100))
        self.tier = str(p.get("tier", "linearizable"))
        self.run_id = str(p.get("run_id", os.getpid()))
        self.pool = data.vectors(self.seed + 7, 0, 64)  # vectors for new memories
        self.queries = data.queries(self.seed)
        self.etcd_keys = int(p.get("etcd_keys", 1000))
        self.etcd_value = base64.b64encode(data.etcd_value(0)).decode()

    # --- raftmem -------------------------------------------------------------------------

    def _new_memory(self, c: Conn) -> dict[str, Any]:
        i = c.seq
        mid = f"w-{self.run_id}-{self.job.proc_index}-{c.g}-{i}"
        return data.memory_body(i, self.pool[(c.g + i) % len(self.pool)], self.agents, mid=mid)

    async def write(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        body = orjson.dumps(self._new_memory(c), option=_NUMPY)
        async with s.post(f"{base}/v1/namespaces/{data.NS_WRITES}/memories", data=body,
                          headers=JSON) as r:
            if r.status >= 300:
                raise await _fail_from(r)
            await r.read()
        return 1

    async def get(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        mid = data.memory_id(c.rng.randrange(self.n_loaded))
        headers = {"Raftmem-Consistency": self.tier}
        if self.tier == "session" and c.session_token:
            headers["Raftmem-Session"] = c.session_token
        async with s.get(f"{base}/v1/namespaces/{data.NS}/memories/{mid}", headers=headers) as r:
            if r.status >= 300:
                raise await _fail_from(r)
            await r.read()
            token = r.headers.get("Raftmem-Session")
            if token:
                c.session_token = token
        return 1

    async def mixed(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        if c.rng.random() < 0.1:
            return await self.write(s, base, c)
        return await self.get(s, base, c)

    async def batch(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        items = []
        for j in range(self.batch_size):
            m = self._new_memory(c)
            m["id"] = f"{m['id']}-{j}"
            items.append(m)
        body = orjson.dumps({"memories": items}, option=_NUMPY)
        async with s.post(f"{base}/v1/namespaces/{data.NS_WRITES}/memories/batch", data=body,
                          headers=JSON) as r:
            if r.status >= 300:
                raise await _fail_from(r)
            res = orjson.loads(await r.read())["results"]
        bad = [x for x in res if not x.get("ok")]
        if bad:
            raise Failed(f"item:{bad[0].get('error', {}).get('code', '?')}")
        return len(res)

    def _search_body(self, c: Conn, filtered: bool) -> bytes:
        q = self.queries[c.rng.randrange(len(self.queries))]
        body: dict[str, Any] = {"embedding": q, "k": self.k}
        if filtered:
            body["filter"] = {"agent_id": data.agent_of(c.rng.randrange(self.agents), self.agents)}
        return orjson.dumps(body, option=_NUMPY)

    async def _search(self, s: aiohttp.ClientSession, base: str, c: Conn, filtered: bool) -> int:
        async with s.post(f"{base}/v1/namespaces/{data.NS}/search",
                          data=self._search_body(c, filtered),
                          headers={**JSON, "Raftmem-Consistency": self.tier}) as r:
            if r.status >= 300:
                raise await _fail_from(r)
            await r.read()
        return 1

    async def search(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        return await self._search(s, base, c, filtered=False)

    async def search_agent(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        return await self._search(s, base, c, filtered=True)

    async def list_agent(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        agent = data.agent_of(c.rng.randrange(self.agents), self.agents)
        url = (f"{base}/v1/namespaces/{data.NS}/memories?agent_id={agent}"
               f"&limit={self.list_limit}")
        async with s.get(url, headers={"Raftmem-Consistency": self.tier}) as r:
            if r.status >= 300:
                raise await _fail_from(r)
            await r.read()
        return 1

    # --- etcd (v3 JSON gateway) ----------------------------------------------------------

    async def etcd_put(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        key = f"bench/put/{self.run_id}/{self.job.proc_index}/{c.g}/{c.seq}".encode()
        body = orjson.dumps({"key": base64.b64encode(key).decode(), "value": self.etcd_value})
        async with s.post(f"{base}/v3/kv/put", data=body, headers=JSON) as r:
            if r.status >= 300:
                raise await _fail_from(r)
            await r.read()
        return 1

    async def _etcd_get(self, s: aiohttp.ClientSession, base: str, c: Conn,
                        serializable: bool) -> int:
        key = f"bench/get/{c.rng.randrange(self.etcd_keys)}".encode()
        body = orjson.dumps({"key": base64.b64encode(key).decode(), "serializable": serializable})
        async with s.post(f"{base}/v3/kv/range", data=body, headers=JSON) as r:
            if r.status >= 300:
                raise await _fail_from(r)
            got = orjson.loads(await r.read())
        if not got.get("kvs"):
            raise Failed("missing-key")
        return 1

    async def etcd_get_lin(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        return await self._etcd_get(s, base, c, serializable=False)

    async def etcd_get_ser(self, s: aiohttp.ClientSession, base: str, c: Conn) -> int:
        return await self._etcd_get(s, base, c, serializable=True)

    def op(self, name: str) -> Op:
        ops: dict[str, Op] = {
            "write": self.write, "get": self.get, "mixed": self.mixed, "batch": self.batch,
            "search": self.search, "search_agent": self.search_agent,
            "list_agent": self.list_agent,
            "etcd_put": self.etcd_put, "etcd_get_lin": self.etcd_get_lin,
            "etcd_get_ser": self.etcd_get_ser,
        }
        if name not in ops:
            raise ValueError(f"unknown workload {name!r}")
        return ops[name]


def _session(timeout_s: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None)
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


async def measure(job: Job) -> WorkerResult:
    """Run one job's closed-loop connections; measure the window after the warm-up."""
    op = Workloads(job).op(job.workload)
    lat: list[float] = []
    errors: dict[str, int] = {}
    items = 0
    cpu: dict[str, float] = {}
    async with _session(float(job.params.get("timeout_s", 60))) as s:
        await asyncio.sleep(max(0.0, job.start_at - time.time()))
        t0 = time.perf_counter()
        ws, we = t0 + job.warmup_s, t0 + job.warmup_s + job.duration_s

        async def cpu_marks() -> None:
            await asyncio.sleep(max(0.0, ws - time.perf_counter()))
            cpu["start"], cpu["t_start"] = time.process_time(), time.perf_counter()
            await asyncio.sleep(max(0.0, we - time.perf_counter()))
            cpu["end"], cpu["t_end"] = time.process_time(), time.perf_counter()

        async def conn(g: int) -> None:
            nonlocal items
            c = Conn(g=g, seq=0, rng=random.Random(hash((job.params.get("seed", 1), g, os.getpid()))))
            n = len(job.urls)
            while True:
                started = time.perf_counter()
                if started >= we:
                    return
                base = job.urls[(g + c.seq) % n]
                err: str | None = None
                carried = 0
                try:
                    carried = await op(s, base, c)
                except Failed as e:
                    err = e.kind
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    err = f"exc:{type(e).__name__}"
                done = time.perf_counter()
                c.seq += 1
                if ws <= done <= we:
                    if err is None:
                        lat.append(done - started)
                        items += carried
                    else:
                        errors[err] = errors.get(err, 0) + 1
                if err is not None:
                    await asyncio.sleep(0.01)  # no hot loop against a refusing server

        await asyncio.gather(cpu_marks(), *(conn(job.conn_offset + i)
                                            for i in range(job.concurrency)))
    window = cpu.get("t_end", we) - cpu.get("t_start", ws)
    return WorkerResult(latencies=lat, items=items, errors=errors,
                        cpu_s=cpu.get("end", 0.0) - cpu.get("start", 0.0), window_s=window)


MIN_SPLIT = 50  # a batch that keeps timing out is split in halves down to this size


async def load(job: Job, progress: Callable[[int], None]) -> WorkerResult:
    """Bulk-load loaded memories ``params.start .. params.end`` through the batch endpoint.

    Each request carries up to ``batch_size`` (<= 1000) memories and a request id,
    and is retried with the same id on an unavailable or indefinite answer, so a
    batch applies once. A batch that times out (504, indefinite) twice is split in
    two halves with ids of their own: the memories' ids are fixed, so whatever the
    timed-out batch did apply answers ``already_exists``, which counts as written.
    Every memory is written exactly once either way.
    """
    p = job.params
    seed, start, end = int(p["seed"]), int(p["start"]), int(p["end"])
    bs = int(p.get("batch_size", 1000))
    agents = int(p.get("agents", data.AGENTS))
    run_id = str(p.get("run_id", "load"))
    todo: list[tuple[int, int]] = [(b0, min(b0 + bs, end)) for b0 in range(start, end, bs)]
    todo.reverse()  # popped from the end: in order
    lat: list[float] = []
    errors: dict[str, int] = {}
    written = 0
    t_cpu = time.process_time()
    t_wall = time.perf_counter()
    async with _session(120.0) as s:

        async def post(g: int, b0: int, b1: int) -> bool:
            """One batch until it is written (True) or should be split (False)."""
            nonlocal written
            vecs = data.vectors(seed, b0, b1)
            items = [data.memory_body(i, vecs[i - b0], agents) for i in range(b0, b1)]
            body = orjson.dumps({"memories": items, "request_id": f"{run_id}-{b0}-{b1}"},
                                option=_NUMPY)
            timeouts = 0
            for attempt in range(30):
                base = job.urls[(g + attempt + b0 // bs) % len(job.urls)]
                t = time.perf_counter()
                try:
                    async with s.post(f"{base}/v1/namespaces/{data.NS}/memories/batch",
                                      data=body, headers=JSON) as r:
                        if r.status >= 300:
                            raise await _fail_from(r)
                        res = orjson.loads(await r.read())["results"]
                except (TimeoutError, Failed, aiohttp.ClientError, OSError) as e:
                    kind = e.kind if isinstance(e, Failed) else f"exc:{type(e).__name__}"
                    errors[kind] = errors.get(kind, 0) + 1
                    if kind.startswith("4"):
                        raise RuntimeError(f"batch {b0}..{b1} refused: {kind}") from e
                    if kind.startswith("504"):
                        timeouts += 1
                        if timeouts >= 2 and b1 - b0 >= 2 * MIN_SPLIT:
                            return False
                    await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
                    continue
                lat.append(time.perf_counter() - t)
                bad = [x["error"]["code"] for x in res
                       if not x.get("ok") and x["error"]["code"] != "already_exists"]
                if bad:
                    raise RuntimeError(f"batch {b0}..{b1}: items failed: {sorted(set(bad))}")
                written += len(res)
                progress(len(res))
                return True
            raise RuntimeError(f"batch {b0}..{b1} failed 30 times: {errors}")

        async def conn(g: int) -> None:
            while todo:
                b0, b1 = todo.pop()
                if not await post(g, b0, b1):
                    mid = (b0 + b1) // 2
                    errors["split"] = errors.get("split", 0) + 1
                    todo.extend([(mid, b1), (b0, mid)])

        await asyncio.gather(*(conn(job.conn_offset + i) for i in range(job.concurrency)))
    return WorkerResult(latencies=lat, items=written, errors=errors,
                        cpu_s=time.process_time() - t_cpu,
                        window_s=time.perf_counter() - t_wall)


def _worker_main(index: int, jobs: Any, results: Any) -> None:
    while True:
        item = jobs.get()
        if item is None:
            return
        kind, job = item
        try:
            if kind == "load":
                def progress(n: int) -> None:
                    results.put(("progress", index, n))
                res = asyncio.run(load(job, progress))
            else:
                res = asyncio.run(measure(job))
            results.put(("done", index, res))
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises
            results.put(("failed", index, traceback.format_exc()))


class LoadGenPool:
    """Worker processes that live for the whole run (spawned, so no inherited state)."""

    def __init__(self, procs: int) -> None:
        ctx = mp.get_context("spawn")
        self.results: Any = ctx.Queue()
        self.queues: list[Any] = []
        self.procs: list[Any] = []
        for i in range(procs):
            q = ctx.Queue()
            p = ctx.Process(target=_worker_main, args=(i, q, self.results), daemon=True,
                            name=f"bench-loadgen-{i}")
            p.start()
            self.queues.append(q)
            self.procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def submit(self, kind: str, jobs: list[Job]) -> None:
        if len(jobs) > len(self.procs):
            raise ValueError(f"{len(jobs)} jobs for {len(self.procs)} processes")
        for i, job in enumerate(jobs):
            self.queues[i].put((kind, job))

    def collect(self, n: int, timeout_s: float,
                progress: Callable[[int], None] | None = None) -> list[WorkerResult]:
        out: dict[int, WorkerResult] = {}
        deadline = time.monotonic() + timeout_s
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"load generators: {len(out)}/{n} answered in {timeout_s}s")
            try:
                kind, index, payload = self.results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [p.name for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"load-generator process died: {dead}") from None
                continue
            if kind == "progress":
                if progress:
                    progress(payload)
            elif kind == "failed":
                raise RuntimeError(f"load generator {index} failed:\n{payload}")
            else:
                out[index] = payload
        return [out[i] for i in sorted(out)]

    def close(self) -> None:
        for q in self.queues:
            q.put(None)
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
