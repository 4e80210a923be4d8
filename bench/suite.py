"""The suites and one run: start systems, load, measure every point, write the results."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from bench import data, procfs, profiling, report
from bench.loadgen import Job, LoadGenPool
from bench.reference import Reference
from bench.stats import aggregate, cpu_percent, percentile, same_topk, split
from bench.systems import (
    ETCD_INSTALL,
    REPO,
    ConstServer,
    EtcdCluster,
    RaftmemCluster,
    etcd_binary,
    http_json,
)

# (workload, tier, label) — the tier is the read consistency (None for writes)
FULL: list[tuple[str, str | None, str]] = [
    ("write", None, "write one memory"),
    ("get", "linearizable", "get by id (linearizable)"),
    ("get", "lease", "get by id (lease)"),
    ("get", "session", "get by id (session)"),
    ("get", "eventual", "get by id (eventual)"),
    ("mixed", "linearizable", "90% get / 10% write"),
    ("batch", None, "batch insert"),
    ("search", "linearizable", "search k=10"),
    ("search_agent", "linearizable", "search k=10, one agent"),
    ("list_agent", "linearizable", "list by agent"),
]
SCALING = [w for w in FULL if w[0] in ("write", "search", "search_agent")]
ETCD: list[tuple[str, str | None, str]] = [
    ("etcd_put", None, "put 1 KB"),
    ("etcd_get_lin", "linearizable", "get (linearizable)"),
    ("etcd_get_ser", "serializable", "get (serializable)"),
]
PROFILED = [("write", None), ("get", "linearizable"), ("search", "linearizable")]


@dataclass
class Suite:
    name: str
    concurrencies: list[int]
    sizes: list[int]  # ascending; the last is the main size (every workload runs there)
    nodes: list[int]  # the first is the primary cluster (every workload); others: scaling only
    seconds: float
    warmup: float
    etcd: bool = True
    profile: bool = False
    full: bool = True  # False: only the scaling workloads anywhere
    ceiling_concurrencies: list[int] = field(default_factory=lambda: [16, 64])
    reference_seconds: float = 5.0
    exact_queries: int = 20


SUITES: dict[str, Suite] = {
    "quick": Suite("quick", [1, 16], [10_000], [3], seconds=3, warmup=1,
                   ceiling_concurrencies=[16], reference_seconds=2, exact_queries=10),
    "standard": Suite("standard", [1, 16, 64], [10_000, 100_000], [3, 5], seconds=10, warmup=2,
                      profile=True),
    # the 1M scaling run, a separate command: write and search only, no etcd
    "scale1m": Suite("scale1m", [1, 16, 64], [1_000_000], [3], seconds=10, warmup=2, etcd=False,
                     full=False, ceiling_concurrencies=[]),
}


@dataclass
class Options:
    suite: Suite
    out: Path
    client_procs: int = 2
    host: str = "127.0.0.61"
    api_port: int = 27001
    raft_port: int = 27101
    const_port: int = 27090
    etcd_hosts: list[str] = field(default_factory=lambda: ["127.0.0.71", "127.0.0.72",
                                                           "127.0.0.73"])
    work_dir: str | None = None  # where cluster data lives (default: a temp folder)
    keep_data: bool = False
    seed: int = 1
    batch_size: int = 100  # the batch-insert workload's memories per request
    load_batch: int = 1000  # the bulk load's memories per request (the API's maximum)
    load_concurrency: int = 4
    list_limit: int = 20
    workloads: list[str] | None = None  # only these workload names
    profile_seconds: int = 8
    command: str = ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sleep_until(t: float) -> None:
    d = t - time.time()
    if d > 0:
        time.sleep(d)


class Run:
    def __init__(self, opts: Options) -> None:
        self.o = opts
        self.s = opts.suite
        self.pool: LoadGenPool | None = None
        self.cleanups: list[Callable[[], None]] = []
        self.run_id = f"{os.getpid()}-{int(time.time())}"
        self.ref: Reference | None = None
        self.points = 0
        self.r: dict[str, Any] = {
            "meta": {"suite": asdict(self.s), "command": opts.command, "started": _now(),
                     "machine": procfs.machine(), "client_procs": opts.client_procs,
                     "load_start": procfs.loadavg(), "durability": {
                         "raftmem": "defaults (raftmem up: fsync on)",
                         "etcd": "defaults (WAL fsync on)"},
                     "batch_size": opts.batch_size, "load_batch": opts.load_batch,
                     "load_concurrency": opts.load_concurrency, "list_limit": opts.list_limit,
                     "agents": data.AGENTS, "dim": data.DIM,
                     "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")},
            "primary_nodes": self.s.nodes[0], "main_memories": self.s.sizes[-1],
            "ceiling": [], "rows": [], "reference": [], "exactness": [], "loads": [],
            "storage": [], "profiles": {}, "profile_points": [],
        }

    # --- helpers -------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        tqdm.write(msg, file=sys.stderr)

    def _wanted(self, workload: str) -> bool:
        return self.o.workloads is None or workload in self.o.workloads

    def point(self, system: str, workload: str, tier: str | None, label: str, urls: list[str],
              concurrency: int, pids: dict[str, int], params: dict[str, Any],
              procs: int | None = None, seconds: float | None = None,
              on_window: Callable[[], None] | None = None) -> dict[str, Any]:
        """One measurement point: jobs to the load generators, server CPU over the window."""
        assert self.pool is not None
        seconds = seconds if seconds is not None else self.s.seconds
        counts = split(concurrency, procs or self.o.client_procs)
        start_at = time.time() + 0.5
        self.points += 1  # new memories' ids carry the point's number: never reused
        p = {"seed": self.o.seed, "run_id": f"{self.run_id}-{self.points}",
             "tier": tier or "linearizable",
             "batch_size": self.o.batch_size, "list_limit": self.o.list_limit, **params}
        jobs, offset = [], 0
        for i, n in enumerate(counts):
            jobs.append(Job(target=system, workload=workload, urls=urls, concurrency=n,
                            start_at=start_at, warmup_s=self.s.warmup, duration_s=seconds,
                            proc_index=i, conn_offset=offset, params=p))
            offset += n
        self.pool.submit("measure", jobs)
        ws = start_at + self.s.warmup
        _sleep_until(ws)
        if on_window:
            on_window()
        cpu0 = procfs.sample_cpu(pids)
        _sleep_until(ws + seconds)
        cpu1 = procfs.sample_cpu(pids)
        mem = procfs.sample_memory(pids)
        load1 = procfs.loadavg()[0]
        res = self.pool.collect(len(jobs), timeout_s=self.s.warmup + seconds + 180)
        row = aggregate(res, seconds)
        row.update({
            "system": system, "workload": workload, "tier": tier, "label": label,
            "concurrency": concurrency, "seconds": seconds,
            "server_cpu_pct": {k: round(v, 1) for k, v in cpu_percent(cpu0, cpu1, seconds).items()},
            "rss_mb": {k: round(v.get("rss", 0) / 2**20, 1) for k, v in mem.items()},
            "load1": load1,
        })
        self.log(f"  {system:<8} {label:<28} c{concurrency:<3} {row['ops_per_s']:>9,.0f} ops/s"
                 + (f" ({row['items_per_s']:,.0f} mem/s)" if workload == "batch" else "")
                 + f"  p50 {row['p50_ms']:.2f}  p99 {row['p99_ms']:.2f} ms"
                 + f"  errors {row['error_count']}  load {load1}")
        return row

    # --- the client's ceiling --------------------------------------------------------------

    def ceiling(self) -> None:
        if not self.s.ceiling_concurrencies:
            return
        self.log("client ceiling (constant-answer server):")
        srv = ConstServer(self.o.host, self.o.const_port)
        srv.start()
        self.cleanups.append(srv.stop)
        try:
            assert srv.proc is not None
            pids = {"const": srv.proc.pid}
            procs_options = sorted({1, self.o.client_procs})
            for wl, label in (("get", "GET (get-by-id shape)"),
                              ("write", "POST one memory (~4 KB)")):
                for c in self.s.ceiling_concurrencies:
                    for procs in procs_options:
                        row = self.point("const", wl, None, f"{label}, {procs} proc", [srv.url],
                                         c, pids, {"n_loaded": 1000}, procs=procs)
                        row["system"] = "client-ceiling"
                        self.r["ceiling"].append(row)
        finally:
            srv.stop()

    # --- raftmem -------------------------------------------------------------------------

    def load(self, cluster: RaftmemCluster, nodes: int, frm: int, to: int) -> None:
        assert self.pool is not None
        bs = self.o.load_batch
        counts = split(self.o.load_concurrency, self.o.client_procs)
        nb = (to - frm + bs - 1) // bs
        # contiguous ranges of whole batches, one per process, sized by its concurrency
        jobs, b, offset = [], 0, 0
        for i, c in enumerate(counts):
            take = nb * c // self.o.load_concurrency if i < len(counts) - 1 else nb - b
            lo, hi = frm + b * bs, min(to, frm + (b + take) * bs)
            b += take
            jobs.append(Job(target="raftmem", workload="load", urls=cluster.urls, concurrency=c,
                            proc_index=i, conn_offset=offset,
                            params={"seed": self.o.seed, "start": lo, "end": hi,
                                    "batch_size": bs, "run_id": f"load-{self.run_id}-{nodes}"}))
            offset += c
        t0 = time.perf_counter()
        with tqdm(total=to - frm, desc=f"loading {frm:,}→{to:,} ({nodes} nodes)", unit="mem",
                  unit_scale=True, file=sys.stderr) as bar:
            self.pool.submit("load", jobs)
            res = self.pool.collect(len(jobs), timeout_s=3600, progress=bar.update)
        secs = time.perf_counter() - t0
        written = sum(r.items for r in res)
        if written != to - frm:
            raise RuntimeError(f"loaded {written} memories, expected {to - frm}")
        lat = [x for r in res for x in r.latencies]
        rate = written / secs
        self.r["loads"].append({
            "nodes": nodes, "from": frm, "to": to, "seconds": round(secs, 2),
            "memories_per_s": round(rate, 1), "batch": bs, "concurrency": self.o.load_concurrency,
            "requests": len(lat),
            "p50_batch_ms": round(percentile(lat, 50) * 1e3, 1) if lat else None,
            "retries": {k: v for r in res for k, v in r.errors.items()},
            "client_cpu_s": [round(r.cpu_s, 1) for r in res], "load1": procfs.loadavg()[0]})
        self.log(f"  loaded {written:,} memories in {secs:.1f}s = {rate:,.0f} memories/s")
        # let followers apply the backlog before anything is measured
        t_settle = time.monotonic()
        while not all(http_json(u + "/readyz", timeout=5)[0] == 200 for u in cluster.urls):
            if time.monotonic() - t_settle > 300:
                raise TimeoutError("nodes did not catch up within 300 s after the load")
            time.sleep(0.5)  # poll interval of a loop with its own deadline

    def reference(self, size: int) -> Reference:
        if self.ref is None or self.ref.n != size:
            self.ref = None  # free the previous one first
            with tqdm(total=size, desc=f"numpy reference: {size:,} vectors", unit="vec",
                      unit_scale=True, file=sys.stderr) as bar:
                self.ref = Reference(self.o.seed, size, progress=bar.update)
        return self.ref

    def measure_reference(self, size: int) -> None:
        ref = self.reference(size)
        qs = data.queries(self.o.seed)
        for filtered in (False, True):
            m = ref.measure(qs, 10, self.s.reference_seconds, filtered, seed=self.o.seed)
            m.update({"memories": size, "filtered": filtered, "load1": procfs.loadavg()[0],
                      "label": "numpy brute force, one agent" if filtered
                      else "numpy brute force"})
            self.r["reference"].append(m)
            self.log(f"  numpy    {m['label']:<28} c1   {m['ops_per_s']:>9,.0f} q/s"
                     f"  p50 {m['p50_ms']:.2f}  p99 {m['p99_ms']:.2f} ms")

    def exactness(self, cluster: RaftmemCluster, size: int, nodes: int) -> None:
        ref = self.reference(size)
        qs = data.queries(self.o.seed)
        for filtered in (False, True):
            checked = exact = 0
            bad: list[dict[str, Any]] = []
            for j in range(self.s.exact_queries):
                body: dict[str, Any] = {"embedding": [float(x) for x in qs[j]], "k": 10}
                agent = j % data.AGENTS if filtered else None
                if agent is not None:
                    body["filter"] = {"agent_id": data.agent_of(agent)}
                url = cluster.urls[j % len(cluster.urls)] + f"/v1/namespaces/{data.NS}/search"
                for _attempt in range(5):  # a definite 503 (no leader, read timeout): retry
                    status, got = http_json(url, body, timeout=60)
                    if status != 503:
                        break
                    time.sleep(1)  # back-off before asking again
                checked += 1
                if status != 200:
                    if len(bad) < 3:
                        bad.append({"query": j, "error": f"{status} {str(got)[:200]}"})
                    continue
                mine = [(h["memory"]["id"], float(h["distance"])) for h in got["results"]]
                want = ref.topk(qs[j], 10, agent)
                if same_topk(mine, want):
                    exact += 1
                elif len(bad) < 3:
                    bad.append({"query": j, "got": mine, "want": want})
            self.r["exactness"].append({"memories": size, "nodes": nodes, "filtered": filtered,
                                        "checked": checked, "exact": exact, "mismatches": bad})
            self.log(f"  exactness ({'one agent' if filtered else 'unfiltered'}): "
                     f"{exact}/{checked} top-10 answers equal numpy's")

    def storage(self, system: str, nodes: int, memories: int, stage: str,
                usage: dict[str, dict[str, int]]) -> None:
        self.r["storage"].append({"system": system, "nodes": nodes, "memories": memories,
                                  "stage": stage, "per_node": usage})

    def profile(self, cluster: RaftmemCluster, nodes: int, size: int, params: dict[str, Any]
                ) -> None:
        if profiling.py_spy() is None:
            self.log("  py-spy not found: no profile (python -m pip install py-spy)")
            return
        target = "n1"
        pid = cluster.node_pids[target]
        _, state = http_json(cluster.urls[0] + "/admin/cluster")
        leads = sorted(g for g, v in ((state or {}).get("groups") or {}).items()
                       if v.get("role") == "leader")
        for wl, tier in PROFILED:
            if not self._wanted(wl):
                continue
            label = next(lbl for w, t, lbl in FULL if w == wl and t == tier)
            path = str(self.o.out / f"profile-{wl}-{target}.txt")
            spy: list[Any] = []

            def start_spy(path: str = path, spy: list[Any] = spy) -> None:
                spy.append(profiling.record(pid, self.o.profile_seconds, path))

            self.log(f"  profiling {target} (pid {pid}) during {label} c16 …")
            row = self.point("raftmem", wl, tier, label + " [py-spy attached]", cluster.urls, 16,
                             cluster.node_pids, params, seconds=self.o.profile_seconds,
                             on_window=start_spy)
            row.update({"nodes": nodes, "memories": size})
            self.r["profile_points"].append(row)
            if spy:
                spy[0].wait(timeout=60)
            if os.path.exists(path):
                with open(path) as f:
                    summary = profiling.summarize(f)
                summary.update({"node": target, "leader_of_groups": leads, "workload": label,
                                "concurrency": 16})
                self.r["profiles"][f"{label} (c16)"] = summary

    def raftmem(self, nodes: int, primary: bool) -> None:
        base = self.o.work_dir or tempfile.gettempdir()
        ddir = tempfile.mkdtemp(prefix=f"raftmem-bench-{nodes}n-", dir=base)
        cluster = RaftmemCluster(ddir, nodes, self.o.host, self.o.api_port, self.o.raft_port)
        self.log(f"raftmem: starting {nodes} nodes in {ddir}")
        self.cleanups.append(cluster.stop)
        cluster.start()
        try:
            for ns in (data.NS, data.NS_WRITES):
                status, body = http_json(cluster.urls[0] + f"/v1/namespaces/{ns}",
                                         {"dim": data.DIM, "metric": "cosine"}, method="PUT")
                if status not in (200, 201):
                    raise RuntimeError(f"creating namespace {ns}: {status} {body}")
            loaded = 0
            for size in self.s.sizes:
                self.log(f"raftmem, {nodes} nodes, {size:,} memories:")
                self.load(cluster, nodes, loaded, size)
                loaded = size
                self.storage("raftmem", nodes, size, "after load", cluster.disk_usage())
                if primary:
                    self.measure_reference(size)
                self.exactness(cluster, size, nodes)
                main = size == self.s.sizes[-1] and primary and self.s.full
                params = {"n_loaded": size}
                for wl, tier, label in (FULL if main else SCALING):
                    if not self._wanted(wl):
                        continue
                    shown = f"batch insert ({self.o.batch_size}/request)" if wl == "batch" else (
                        f"list by agent (limit {self.o.list_limit})" if wl == "list_agent"
                        else label)
                    for c in self.s.concurrencies:
                        row = self.point("raftmem", wl, tier, shown, cluster.urls, c,
                                         cluster.node_pids, params)
                        row.update({"nodes": nodes, "memories": size,
                                    "replicas": cluster.replicas})
                        self.r["rows"].append(row)
                if main and self.s.profile:
                    self.profile(cluster, nodes, size, params)
            self.storage("raftmem", nodes, loaded, "end (incl. workload writes)",
                         cluster.disk_usage())
        finally:
            cluster.stop()
            self.cleanups.remove(cluster.stop)
            if not self.o.keep_data:
                shutil.rmtree(ddir, ignore_errors=True)

    # --- etcd ----------------------------------------------------------------------------

    def etcd(self) -> None:
        base = self.o.work_dir or tempfile.gettempdir()
        ddir = tempfile.mkdtemp(prefix="etcd-bench-", dir=base)
        cluster = EtcdCluster(ddir, self.o.etcd_hosts)
        self.r["meta"]["etcd_version"] = cluster.version
        self.log(f"etcd ({cluster.version}): starting 3 members in {ddir}")
        self.cleanups.append(cluster.stop)
        cluster.start()
        try:
            import base64

            keys = 1000
            for i in range(keys):
                status, body = http_json(cluster.urls[i % 3] + "/v3/kv/put", {
                    "key": base64.b64encode(f"bench/get/{i}".encode()).decode(),
                    "value": base64.b64encode(data.etcd_value(i)).decode()})
                if status != 200:
                    raise RuntimeError(f"etcd put failed: {status} {body}")
            for wl, tier, label in ETCD:
                for c in self.s.concurrencies:
                    row = self.point("etcd", wl, tier, label, cluster.urls, c, cluster.pids,
                                     {"etcd_keys": keys})
                    row.update({"nodes": 3, "memories": None})
                    self.r["rows"].append(row)
            self.storage("etcd", 3, 0, "end", cluster.disk_usage())
        finally:
            cluster.stop()
            self.cleanups.remove(cluster.stop)
            if not self.o.keep_data:
                shutil.rmtree(ddir, ignore_errors=True)

    # --- the whole run -------------------------------------------------------------------

    def phase(self, name: str, fn: Callable[[], None]) -> None:
        """Run one part; a failure is recorded and reported, and the run goes on."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - reported in the results, the run goes on
            self.log(f"FAILED: {name}: {e}")
            self.r.setdefault("failures", []).append({"phase": name, "error": str(e)[-2000:]})

    def execute(self) -> dict[str, Any]:
        self.o.out.mkdir(parents=True, exist_ok=True)
        self.log(f"bench: suite {self.s.name}, results in {self.o.out}, "
                 f"load average {procfs.loadavg()}")
        if self.s.etcd and etcd_binary() is None:
            raise SystemExit(f"etcd is not installed. Install it with:\n  {ETCD_INSTALL}\n"
                             "or run raftmem only with --no-etcd")
        self.pool = LoadGenPool(self.o.client_procs)
        try:
            self.phase("client ceiling", self.ceiling)
            for i, nodes in enumerate(self.s.nodes):
                self.phase(f"raftmem, {nodes} nodes",
                           functools.partial(self.raftmem, nodes, primary=i == 0))
                if i == 0 and self.s.etcd:
                    self.phase("etcd", self.etcd)
        finally:
            for fn in reversed(self.cleanups):
                fn()
            self.pool.close()
            self.r["meta"]["finished"] = _now()
            self.r["meta"]["load_end"] = procfs.loadavg()
            self.write()
        return self.r

    def write(self) -> None:
        out = self.o.out
        with open(out / "results.json", "wb") as f:
            f.write(orjson.dumps(self.r, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        md = report.render(self.r)
        (out / "results.md").write_text(md)
        try:
            from bench.plot import plot

            plot(self.r, str(out / "throughput_p99.png"))
        except ImportError:
            self.log("matplotlib not installed: no plot (pip install -e '.[bench]')")
        for name, s in self.r["profiles"].items():
            (out / f"profile-summary-{s['workload'].split()[0]}.md").write_text(
                profiling.format_summary(name, s))
        print(md)
        self.log(f"results: {out}/results.json, results.md, throughput_p99.png")


def options_from(args: Any) -> Options:
    suite = SUITES[args.suite]
    if args.memories:
        suite = replace(suite, sizes=sorted(int(x) for x in args.memories.split(",")))
    if args.nodes:
        suite = replace(suite, nodes=[int(x) for x in args.nodes.split(",")])
    if args.concurrency:
        suite = replace(suite, concurrencies=[int(x) for x in args.concurrency.split(",")])
    if args.seconds:
        suite = replace(suite, seconds=args.seconds)
    if args.no_etcd:
        suite = replace(suite, etcd=False)
    if args.no_ceiling:
        suite = replace(suite, ceiling_concurrencies=[])
    if args.profile is not None:
        suite = replace(suite, profile=args.profile)
    out = Path(args.out) if args.out else (
        REPO / "bench" / "results" / datetime.now().strftime("%Y%m%d-%H%M%S"))
    return Options(
        suite=suite, out=out, client_procs=args.client_procs, host=args.host,
        api_port=args.api_port, raft_port=args.raft_port, const_port=args.const_port,
        etcd_hosts=args.etcd_hosts.split(","), work_dir=args.work_dir, keep_data=args.keep_data,
        seed=args.seed, batch_size=args.batch_size, load_concurrency=args.load_concurrency,
        list_limit=args.list_limit,
        workloads=args.workloads.split(",") if args.workloads else None,
        command="python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
