"""The PNG: throughput and p99 against concurrency, one line per workload (matplotlib)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(results: dict[str, Any], path: str) -> None:
    nodes = results.get("primary_nodes", 3)
    mem = results.get("main_memories", 0)
    series: dict[str, list[dict[str, Any]]] = {}
    for r in results.get("rows", []):
        if r.get("system") == "raftmem" and (r.get("nodes") != nodes or r.get("memories") != mem):
            continue
        series.setdefault(f"{r['system']}: {r['label']}", []).append(r)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6.5))
    cmap = matplotlib.colormaps["tab20"]
    colors = [cmap(i / 20) for i in range(20)]
    concurrencies: set[int] = set()
    for n, (name, rs) in enumerate(sorted(series.items())):
        rs.sort(key=lambda r: r["concurrency"])
        cs = [r["concurrency"] for r in rs]
        concurrencies.update(cs)
        style = "--" if name.startswith("etcd") else "-"
        color = colors[n % len(colors)]
        y = [r["items_per_s"] if r["workload"] == "batch" else r["ops_per_s"] for r in rs]
        y = [v if v > 0 else float("nan") for v in y]  # nothing completed: no point on a log axis
        ax1.plot(cs, y, style, marker="o", label=name, color=color)
        ax2.plot(cs, [r["p99_ms"] for r in rs], style, marker="o", label=name, color=color)
    for ref in results.get("reference", []):
        if ref["memories"] == mem:
            ax1.axhline(ref["ops_per_s"], color="grey", linestyle=":", linewidth=1)
            ax1.annotate(ref["label"], (1, ref["ops_per_s"]), fontsize=7, color="grey")
    for ax, title, unit in ((ax1, "throughput", "ops/s (batch: memories/s)"),
                            (ax2, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(concurrencies), [str(c) for c in sorted(concurrencies)])
        ax.set_yscale("log")
        ax.set_xlabel("concurrency (connections)")
        ax.set_ylabel(unit)
        ax.set_title(f"{title} — raftmem {nodes} nodes, {mem:,} memories; etcd 3 members")
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    load = [r.get("load1") for r in results.get("rows", []) if r.get("load1") is not None]
    if load:
        fig.suptitle(f"load average (1 min) during the points: {min(load):.2f}–{max(load):.2f} "
                     f"on {results.get('meta', {}).get('machine', {}).get('cores')} cores",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
