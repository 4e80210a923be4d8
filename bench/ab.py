"""Before/after of code changes: the same points on checkouts of several commits.

``python -m bench ab --commits A,B --points write:64,get:16:eventual --rounds 3``

For each commit a git worktree is checked out (and removed after); each round
starts a fresh 3-node cluster from every checkout in turn — the order reversed
every other round, so a machine that drifts during the run does not favour one
commit — loads ``--memories`` memories when a point reads, and measures each
point. The load generator is this checkout's (the same client for every
commit). It prints every round and the median per point and commit, and saves
them as JSON. A point is ``WORKLOAD:CONCURRENCY[:TIER]`` with the workloads of
``python -m bench run``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import orjson

from bench import data, procfs
from bench.loadgen import Job, LoadGenPool
from bench.stats import aggregate, split
from bench.systems import REPO, RaftmemCluster, http_json

# raftmem's workloads of bench/loadgen.py (Workloads.op); those that read loaded memories
WORKLOADS = ("write", "get", "mixed", "batch", "search", "search_agent", "list_agent")
READS = frozenset({"get", "mixed", "search", "search_agent", "list_agent"})


@dataclass(frozen=True)
class Point:
    workload: str
    concurrency: int
    tier: str = "linearizable"

    @property
    def label(self) -> str:
        tier = f" {self.tier}" if self.workload in READS else ""
        return f"{self.workload}{tier} c{self.concurrency}"


def parse_points(text: str) -> list[Point]:
    """``write:64,get:16:eventual`` → points; ValueError naming what is wrong."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or parts[0] not in WORKLOADS or not parts[1].isdigit():
            raise ValueError(f"point {item!r}: expected WORKLOAD:CONCURRENCY[:TIER], workloads "
                             f"{', '.join(sorted(WORKLOADS))}")
        if len(parts) == 3 and parts[2] not in ("linearizable", "lease", "session", "eventual"):
            raise ValueError(f"point {item!r}: unknown tier {parts[2]!r}")
        if int(parts[1]) < 1:
            raise ValueError(f"point {item!r}: concurrency must be at least 1")
        out.append(Point(parts[0], int(parts[1]), *parts[2:]))
    if not out:
        raise ValueError("no points")
    return out


def orders(commits: list[str], rounds: int) -> list[list[str]]:
    """The commits in each round: as given, then reversed, alternately."""
    return [list(commits) if r % 2 == 0 else list(reversed(commits)) for r in range(rounds)]


def medians(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{point label: {commit: median ops/s over the rounds}}."""
    seen: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        seen.setdefault(r["point"], {}).setdefault(r["commit"], []).append(r["ops_per_s"])
    return {p: {c: statistics.median(v) for c, v in by.items()} for p, by in seen.items()}


def table(rows: list[dict[str, Any]], commits: list[str]) -> str:
    """Markdown: one line per point, median ops/s per commit (every round's in brackets)."""
    med = medians(rows)
    per: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        per.setdefault((r["point"], r["commit"]), []).append(r["ops_per_s"])
    out = ["| point | " + " | ".join(f"`{c}` ops/s" for c in commits) + " |",
           "|---|" + "---|" * len(commits)]
    for p in med:
        cells = []
        for c in commits:
            runs = per.get((p, c), [])
            cells.append(f"{med[p][c]:,.0f} ({' / '.join(f'{v:,.0f}' for v in runs)})"
                         if runs else "–")
        out.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _measure(pool: LoadGenPool, cluster: RaftmemCluster, pt: Point, seconds: float,
             n_loaded: int, run_id: str) -> dict[str, Any]:
    start_at = time.time() + 0.5
    params = {"n_loaded": n_loaded, "seed": 1, "run_id": run_id, "tier": pt.tier,
              "batch_size": 100, "list_limit": 20}
    jobs, offset = [], 0
    for i, n in enumerate(split(pt.concurrency, len(pool.pids))):
        jobs.append(Job(target="raftmem", workload=pt.workload, urls=cluster.urls, concurrency=n,
                        start_at=start_at, warmup_s=2, duration_s=seconds, proc_index=i,
                        conn_offset=offset, params=params))
        offset += n
    pool.submit("measure", jobs)
    return aggregate(pool.collect(len(jobs), timeout_s=seconds + 180), seconds)


def _load(pool: LoadGenPool, cluster: RaftmemCluster, n: int) -> None:
    procs = len(pool.pids)
    jobs = [Job(target="raftmem", workload="load", urls=cluster.urls, concurrency=2,
                proc_index=i, conn_offset=2 * i,
                params={"seed": 1, "start": i * n // procs, "end": (i + 1) * n // procs,
                        "batch_size": 1000, "run_id": "ab-load"}) for i in range(procs)]
    pool.submit("load", jobs)
    pool.collect(len(jobs), timeout_s=1800)
    deadline = time.monotonic() + 300
    while not all(http_json(u + "/readyz", timeout=5)[0] == 200 for u in cluster.urls):
        if time.monotonic() > deadline:
            raise TimeoutError("nodes did not catch up within 300 s after the load")
        time.sleep(0.2)  # poll interval of a loop with its own deadline


def run(commits: list[str], points: list[Point], rounds: int, seconds: float, memories: int,
        out: str | None, host: str = "127.0.0.62", api_port: int = 27201,
        raft_port: int = 27301) -> list[dict[str, Any]]:
    shas = [subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", c], check=True,
                           capture_output=True, text=True).stdout.strip() for c in commits]
    work = tempfile.mkdtemp(prefix="raftmem-ab-")
    trees = {}
    rows: list[dict[str, Any]] = []
    pool = LoadGenPool(2)
    try:
        for sha in shas:
            trees[sha] = os.path.join(work, sha)
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach",
                            trees[sha], sha], check=True)
        for r, order in enumerate(orders(shas, rounds), start=1):
            for sha in order:
                cluster = RaftmemCluster(os.path.join(work, f"data-{sha}-{r}"), 3, host, api_port,
                                         raft_port, code_dir=trees[sha])
                try:
                    cluster.start()
                    for ns in (data.NS, data.NS_WRITES):
                        status, body = http_json(cluster.urls[0] + f"/v1/namespaces/{ns}",
                                                 {"dim": data.DIM, "metric": "cosine"},
                                                 method="PUT")
                        if status not in (200, 201):
                            raise RuntimeError(f"creating namespace {ns}: {status} {body}")
                    if any(p.workload in READS for p in points):
                        _load(pool, cluster, memories)
                    for k, pt in enumerate(points):
                        agg = _measure(pool, cluster, pt, seconds, memories, f"ab-{r}-{sha}-{k}")
                        row = {"round": r, "commit": sha, "point": pt.label,
                               "ops_per_s": round(agg["ops_per_s"], 1),
                               "p50_ms": agg["p50_ms"], "p99_ms": agg["p99_ms"],
                               "errors": agg["error_count"], "load1": procfs.loadavg()[0]}
                        rows.append(row)
                        print(f"round {r}  {sha}  {pt.label:<24} {row['ops_per_s']:>8,.0f} ops/s  "
                              f"p50 {agg['p50_ms']:.2f}  p99 {agg['p99_ms']:.2f} ms  "
                              f"errors {row['errors']}  load {row['load1']}", flush=True)
                finally:
                    cluster.stop()
                    shutil.rmtree(cluster.data_dir, ignore_errors=True)
    finally:
        pool.close()
        for tree in trees.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", tree],
                           check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    md = table(rows, shas)
    print(md)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "ab.json"), "wb") as f:
            f.write(orjson.dumps({"commits": shas, "points": [p.label for p in points],
                                  "rounds": rounds, "seconds": seconds, "memories": memories,
                                  "command": " ".join(sys.argv), "rows": rows},
                                 option=orjson.OPT_INDENT_2))
        with open(os.path.join(out, "ab.md"), "w") as f:
            f.write(md + "\n")
    return rows
