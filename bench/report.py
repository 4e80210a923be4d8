"""Results → markdown: the tables, the ratios raftmem / etcd, the targets. Pure.

A *row* is one measurement point, a dict with at least ``system``,
``workload``, ``label``, ``concurrency``, ``nodes``, ``memories`` and the
fields of ``bench.stats.aggregate`` (``ops_per_s``, ``p50_ms`` …), plus
optionally ``server_cpu_pct`` and ``rss_mb`` (per process) and ``load1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from bench.stats import ratio

Row = dict[str, Any]

# (raftmem workload, raftmem tier, etcd workload, what is compared)
PAIRS: list[tuple[str, str | None, str, str]] = [
    ("write", None, "etcd_put", "write one memory / etcd put 1 KB"),
    ("get", "linearizable", "etcd_get_lin", "get linearizable / etcd linearizable get"),
    ("get", "lease", "etcd_get_lin", "get lease / etcd linearizable get"),
    ("get", "eventual", "etcd_get_ser", "get eventual / etcd serializable get"),
]


def fmt_num(x: float | None) -> str:
    """Throughput: thousands separators, no decimals under 10 only where it matters."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) < 10:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def fmt_ms(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - loop always returns


def fmt_errors(errors: dict[str, int] | None) -> str:
    if not errors:
        return "0"
    return ", ".join(f"{k}×{v}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1]))


def fmt_per_process(values: dict[str, float] | Sequence[float] | None, digits: int = 0) -> str:
    if not values:
        return "–"
    if isinstance(values, dict):
        return " · ".join(f"{k} {v:.{digits}f}" for k, v in values.items())
    return " + ".join(f"{v:.{digits}f}" for v in values)


def table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def throughput_cell(row: Row) -> str:
    """ops/s; for batches also the memories/s they carried."""
    if row.get("workload") == "batch" or row.get("items_per_s", row.get("ops_per_s")) != row.get(
            "ops_per_s"):
        return f"{fmt_num(row['items_per_s'])} mem/s ({fmt_num(row['ops_per_s'])} req/s)"
    return fmt_num(row["ops_per_s"])


def rows_table(rows: Sequence[Row], with_system: bool = False) -> str:
    header = (["system"] if with_system else []) + [
        "workload", "c", "ops/s", "p50 ms", "p95 ms", "p99 ms", "errors",
        "client CPU %", "server CPU % (per process)", "RSS MiB (per process)", "load 1m"]
    body = []
    for r in rows:
        cells = ([r["system"]] if with_system else []) + [
            r["label"], str(r["concurrency"]), throughput_cell(r), fmt_ms(r.get("p50_ms")),
            fmt_ms(r.get("p95_ms")), fmt_ms(r.get("p99_ms")), fmt_errors(r.get("errors")),
            fmt_per_process(r.get("client_cpu_pct")), fmt_per_process(r.get("server_cpu_pct")),
            fmt_per_process(r.get("rss_mb")),
            "–" if r.get("load1") is None else f"{r['load1']:.2f}"]
        body.append(cells)
    return table(header, body)


def find(rows: Sequence[Row], **match: Any) -> Row | None:
    """The last row whose fields equal ``match`` (None matches a missing field too)."""
    found = None
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            found = r
    return found


def ratios(rows: Sequence[Row], nodes: int, memories: int) -> list[Row]:
    """raftmem / etcd throughput for each pair at each concurrency both ran."""
    out: list[Row] = []
    for wl, tier, etcd_wl, what in PAIRS:
        for c in sorted({r["concurrency"] for r in rows if r.get("workload") == wl}):
            mine = find(rows, system="raftmem", workload=wl, tier=tier, concurrency=c,
                        nodes=nodes, memories=memories)
            theirs = find(rows, system="etcd", workload=etcd_wl, concurrency=c)
            if mine is None or theirs is None:
                continue
            out.append({"what": what, "concurrency": c, "raftmem": mine["ops_per_s"],
                        "etcd": theirs["ops_per_s"],
                        "ratio": ratio(mine["ops_per_s"], theirs["ops_per_s"]),
                        "raftmem_p99_ms": mine.get("p99_ms"), "etcd_p99_ms": theirs.get("p99_ms")})
    return out


def ratios_table(rs: Sequence[Row]) -> str:
    return table(["comparison", "c", "raftmem ops/s", "etcd ops/s", "raftmem / etcd",
                  "raftmem p99 ms", "etcd p99 ms"],
                 [[r["what"], str(r["concurrency"]), fmt_num(r["raftmem"]), fmt_num(r["etcd"]),
                   fmt_ratio(r["ratio"]), fmt_ms(r["raftmem_p99_ms"]), fmt_ms(r["etcd_p99_ms"])]
                  for r in rs])


def _verdict(ok: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[ok]


def targets(results: dict[str, Any]) -> list[Row]:
    """The issue's targets, evaluated on one run's results (honestly: unmeasured is said)."""
    rows: list[Row] = results.get("rows", [])
    nodes = results.get("primary_nodes", 3)
    mem = results.get("main_memories", 0)
    out: list[Row] = []

    def add(target: str, measured: str, ok: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": ok})

    rs = ratios(rows, nodes, mem)

    def ratio_target(what_prefix: str, target: str, only_c: int | None = None) -> None:
        sel = [r for r in rs if r["what"].startswith(what_prefix) and r["ratio"] is not None
               and (only_c is None or r["concurrency"] == only_c)]
        if not sel and only_c is not None:  # fall back to the highest concurrency run
            cand = [r for r in rs if r["what"].startswith(what_prefix) and r["ratio"] is not None]
            top = max((r["concurrency"] for r in cand), default=None)
            sel = [r for r in cand if r["concurrency"] == top]
        if not sel:
            add(target, "–", None)
            return
        measured = ", ".join(f"c{r['concurrency']} {fmt_ratio(r['ratio'])}" for r in sel)
        add(target, measured, all(r["ratio"] >= 1.0 for r in sel))

    ratio_target("write one memory", "writes at c64 ≥ 1.0× etcd puts", only_c=64)
    ratio_target("get linearizable", "linearizable gets ≥ 1.0× etcd linearizable gets")
    ratio_target("get eventual", "eventual gets ≥ 1.0× etcd serializable gets")

    s1 = find(rows, system="raftmem", workload="search", concurrency=1, nodes=nodes,
              memories=mem)
    add(f"search k=10 over {mem:,}: p99 ≤ 50 ms at c1",
        f"p99 {fmt_ms(s1['p99_ms'])} ms" if s1 else "–",
        None if s1 is None else bool(s1["p99_ms"] <= 50))

    s16 = find(rows, system="raftmem", workload="search", concurrency=16, nodes=nodes,
               memories=mem)
    ref = find(results.get("reference", []), memories=mem, filtered=False)
    if s16 and ref:
        r = ratio(s16["ops_per_s"], ref["ops_per_s"])
        add("search throughput at c16 ≥ 0.5× numpy brute force",
            f"{fmt_num(s16['ops_per_s'])} vs {fmt_num(ref['ops_per_s'])} q/s = {fmt_ratio(r)}",
            r is not None and r >= 0.5)
    else:
        add("search throughput at c16 ≥ 0.5× numpy brute force", "–", None)

    sa = find(rows, system="raftmem", workload="search_agent", concurrency=1, nodes=nodes,
              memories=mem)
    add("agent-filtered search p99 ≤ 10 ms (c1)",
        f"p99 {fmt_ms(sa['p99_ms'])} ms" if sa else "–",
        None if sa is None else bool(sa["p99_ms"] <= 10))

    loads = [x for x in results.get("loads", []) if x.get("nodes") == nodes]
    if loads:
        best = max(loads, key=lambda x: x["to"] - x["from"])
        add("bulk load ≥ 20,000 memories/s (batch endpoint)",
            f"{fmt_num(best['memories_per_s'])} mem/s ({best['from']:,}→{best['to']:,})",
            best["memories_per_s"] >= 20000)
    else:
        add("bulk load ≥ 20,000 memories/s (batch endpoint)", "–", None)

    ex = results.get("exactness", [])
    if ex:
        checked = sum(x["checked"] for x in ex)
        exact = sum(x["exact"] for x in ex)
        add("exact search results (vs numpy)", f"{exact}/{checked} queries exact",
            exact == checked)
    else:
        add("exact search results (vs numpy)", "–", None)
    errs = sum(r.get("error_count", 0) for r in rows if r.get("system") == "raftmem")
    add("no errors (raftmem, all points)", f"{errs} errors", errs == 0)
    return out


def targets_table(ts: Sequence[Row]) -> str:
    return table(["target", "measured", "verdict"],
                 [[t["target"], t["measured"], _verdict(t["met"])] for t in ts])


def _range(values: Sequence[float]) -> str:
    vs = [v for v in values if v is not None]
    return "–" if not vs else f"{min(vs):.2f}–{max(vs):.2f}"


def search_vs_reference(results: dict[str, Any]) -> str:
    rows: list[Row] = results.get("rows", [])
    refs: list[Row] = results.get("reference", [])
    nodes = results.get("primary_nodes", 3)
    body = []
    for ref in refs:
        wl = "search_agent" if ref["filtered"] else "search"
        mine = sorted((r for r in rows if r.get("system") == "raftmem" and r["workload"] == wl
                       and r.get("memories") == ref["memories"] and r.get("nodes") == nodes),
                      key=lambda r: r["concurrency"])
        cells = " · ".join(f"c{r['concurrency']} {fmt_num(r['ops_per_s'])} q/s, p99 "
                           f"{fmt_ms(r['p99_ms'])} ms" for r in mine) or "–"
        best = max((r["ops_per_s"] for r in mine), default=None)
        r16 = find(mine, concurrency=16)
        body.append([f"{ref['memories']:,}", "one agent" if ref["filtered"] else "all",
                     (f"{fmt_num(ref['ops_per_s'])} q/s, p50 {fmt_ms(ref['p50_ms'])}, "
                     f"p99 {fmt_ms(ref['p99_ms'])} ms"), cells,
                     fmt_ratio(ratio(r16["ops_per_s"], ref["ops_per_s"])) if r16 else "–",
                     fmt_ratio(ratio(best, ref["ops_per_s"]))])
    out = table(["memories", "filter", "numpy brute force (1 process, 1 BLAS thread)",
                 f"raftmem search k=10 ({nodes} nodes)", "raftmem c16 / numpy",
                 "best raftmem / numpy"], body)
    ex = results.get("exactness", [])
    if ex:
        out += "\nExactness (top-10 ids and distances equal to numpy's, ties aside):\n\n"
        out += table(["nodes", "memories", "filter", "exact / checked"],
                     [[str(x["nodes"]), f"{x['memories']:,}",
                       "one agent" if x["filtered"] else "all", f"{x['exact']}/{x['checked']}"]
                      for x in ex])
    return out


def scaling_table(results: dict[str, Any]) -> str:
    rows = [r for r in results.get("rows", []) if r.get("system") == "raftmem"
            and r["workload"] in ("write", "search", "search_agent")]
    rows.sort(key=lambda r: (r["workload"], r["nodes"], r["memories"], r["concurrency"]))
    return table(["workload", "nodes (replicas/group)", "memories", "c", "ops/s", "p50 ms",
                  "p99 ms", "errors", "server CPU % (per process)"],
                 [[r["label"], f"{r['nodes']} ({r.get('replicas', min(3, r['nodes']))})",
                   f"{r['memories']:,}", str(r["concurrency"]),
                   fmt_num(r["ops_per_s"]), fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                   fmt_errors(r.get("errors")), fmt_per_process(r.get("server_cpu_pct"))]
                  for r in rows])


def _ms_or_text(x: Any) -> str:
    return x if isinstance(x, str) else fmt_ms(x)  # older results stored it formatted


def loads_table(results: dict[str, Any]) -> str:
    return table(["nodes", "memories", "seconds", "memories/s", "batch × concurrency",
                  "median batch ms", "retries", "load 1m"],
                 [[str(x["nodes"]), f"{x['from']:,}→{x['to']:,}", f"{x['seconds']:.1f}",
                   fmt_num(x["memories_per_s"]), f"{x['batch']} × {x['concurrency']}",
                   _ms_or_text(x.get("p50_batch_ms")), fmt_errors(x.get("retries")),
                   f"{x['load1']:.2f}"]
                  for x in results.get("loads", [])])


def storage_table(results: dict[str, Any]) -> str:
    body = []
    for s in results.get("storage", []):
        per = s["per_node"]
        detail = " · ".join(
            f"{n} {fmt_bytes(v['total'])}"
            + (f" (sqlite {fmt_bytes(v['sqlite'])}, raft {fmt_bytes(v['raft'])})"
               if "sqlite" in v else "")
            for n, v in per.items())
        body.append([s["system"], str(s["nodes"]), f"{s['memories']:,}" if s["memories"] else "–",
                     s["stage"], fmt_bytes(sum(v["total"] for v in per.values())), detail])
    return table(["system", "nodes", "memories", "when", "all nodes", "per node"], body)


def profiles_md(results: dict[str, Any], top: int = 6) -> str:
    out = []
    for name, s in results.get("profiles", {}).items():
        threads = ", ".join(f"{k} {v}%" for k, v in s["threads"].items())
        waiting = s.get("waiting", 0.0)
        hot = ", ".join(f"`{k}` {v}%" for k, v in s["inclusive"][:top])
        selfs = ", ".join(f"`{k}` {v}%" for k, v in s["self"][:top])
        out.append(f"* **{name}**, node {s.get('node')} (leader of groups "
                   f"{s.get('leader_of_groups')}), {s['samples']} samples, {waiting}% of them waiting — "
                   f"threads: {threads}.\n"
                   f"  Inclusive: {hot}.\n  Self: {selfs}.")
    return "\n".join(out) + ("\n" if out else "")


def render(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    suite = meta.get("suite", {})
    rows: list[Row] = results.get("rows", [])
    nodes = results.get("primary_nodes", 3)
    mem = results.get("main_memories", 0)
    m = meta.get("machine", {})
    loads = [r.get("load1") for r in rows + results.get("ceiling", [])]
    parts = [
        f"# raftmem benchmark — suite `{suite.get('name', '?')}`\n",
        f"* command: `{meta.get('command', '')}`",
        f"* run: {meta.get('started', '?')} → {meta.get('finished', '?')} (UTC)",
        (f"* machine: {m.get('cores')} cores ({m.get('cpu', '?')}), {m.get('memory_gib')} GiB, "
        f"Python {m.get('python')}, Linux {m.get('kernel')}"),
        (f"* load average (1 min): {meta.get('load_start', ['?'])[0]} at start, "
        f"{_range(loads)} during the points, {meta.get('load_end', ['?'])[0]} at the end"),
        (f"* durability: raftmem {meta.get('durability', {}).get('raftmem')}; etcd "
        f"{meta.get('durability', {}).get('etcd')} ({meta.get('etcd_version', 'not run')})"),
        (f"* load generator: {meta.get('client_procs')} processes (asyncio + aiohttp), closed "
        f"loop, {suite.get('seconds')} s window after {suite.get('warmup')} s warm-up per point"),
        (f"* data: memories of 1 KB text, {meta.get('dim')}-d embedding, 2 tags, 3 metadata "
        f"keys; {meta.get('agents')} agents; reads at the tier shown (searches and lists: "
        f"linearizable); batch workload {meta.get('batch_size')} memories/request; bulk load "
        f"{meta.get('load_batch')}/request × {meta.get('load_concurrency')} in flight"),
        "",
        *([(f"**{len(results['failures'])} part(s) of this run failed**: see *Failures* at "
            "the end.\n")] if results.get("failures") else []),
        "## Targets\n",
        targets_table(targets(results)),
        f"## raftmem ({nodes} nodes, {mem:,} memories)\n",
        rows_table([r for r in rows if r.get("system") == "raftmem" and r.get("nodes") == nodes
                    and r.get("memories") == mem]),
    ]
    etcd_rows = [r for r in rows if r.get("system") == "etcd"]
    if etcd_rows:
        parts += ["## etcd (3 members, JSON gateway)\n", rows_table(etcd_rows),
                  "## raftmem / etcd\n", ratios_table(ratios(rows, nodes, mem))]
    if results.get("reference"):
        parts += ["## Search vs numpy brute force\n", search_vs_reference(results)]
    parts += ["## Scaling: write and search by size and node count\n", scaling_table(results),
              "## Bulk loads (batch endpoint)\n", loads_table(results),
              "## Storage\n", storage_table(results)]
    if results.get("ceiling"):
        parts += ["## Load-generator ceiling (constant-answer server)\n",
                  rows_table(results["ceiling"])]
    if results.get("profiles"):
        parts += ["## Profile (py-spy, one node)\n", profiles_md(results)]
    if results.get("failures"):
        parts += ["## Failures (the run went on without these parts)\n"]
        parts += [f"* **{f['phase']}**: `{f['error'].strip().splitlines()[-1]}`\n"
                  for f in results["failures"]]
    return "\n".join(parts)
