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
