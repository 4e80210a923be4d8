"""Statistics of a recorded history for results.json (pure)."""

from __future__ import annotations

import math
from typing import Any

PERCENTILES = (50, 90, 95, 99)


def completions(events: list[dict[str, Any]], final: bool | None = None) -> list[dict[str, Any]]:
    """Completion events; `final` True/False selects the final reads / the chaos operations."""
    out = [e for e in events if e["type"] != "invoke"]
    if final is not None:
        out = [e for e in out if bool(e.get("final")) == final]
    return out


def counts(events: list[dict[str, Any]]) -> dict[str, Any]:
    """ok / fail / info per f, for the chaos phase and for the final reads."""

    def table(evs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        t: dict[str, dict[str, int]] = {}
        for e in evs:
            row = t.setdefault(e["f"], {"ok": 0, "fail": 0, "info": 0})
            row[e["type"]] += 1
        total = {"ok": 0, "fail": 0, "info": 0}
        for row in t.values():
            for k, v in row.items():
                total[k] += v
        t["total"] = total
        return t

    return {
        "chaos": table(completions(events, final=False)),
        "final": table(completions(events, final=True)),
    }


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def summary_ms(latencies_ns: list[int]) -> dict[str, Any]:
    if not latencies_ns:
        return {"n": 0}
    ms = sorted(x / 1e6 for x in latencies_ns)
    out: dict[str, Any] = {"n": len(ms), "mean": round(sum(ms) / len(ms), 3)}
    for p in PERCENTILES:
        out[f"p{p}"] = round(percentile(ms, p), 3)
    out["max"] = round(ms[-1], 3)
    return out


def latencies(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency percentiles (ms) of the chaos phase: per f for ok ops, and per completion type."""
    evs = completions(events, final=False)
    by_f: dict[str, list[int]] = {}
    by_type: dict[str, list[int]] = {}
    for e in evs:
        lat = e.get("latency_ns")
        if lat is None or e.get("synthetic"):
            continue
        by_type.setdefault(e["type"], []).append(lat)
        if e["type"] == "ok":
            by_f.setdefault(e["f"], []).append(lat)
    return {
        "ok_by_f": {f: summary_ms(v) for f, v in sorted(by_f.items())},
        "by_type": {t: summary_ms(v) for t, v in sorted(by_type.items())},
    }


def throughput(events: list[dict[str, Any]], phases: dict[str, list[int]]) -> dict[str, Any]:
    span = phases.get("chaos")
    if not span or len(span) < 2 or span[1] <= span[0]:
        return {}
    seconds = (span[1] - span[0]) / 1e9
    evs = completions(events, final=False)
    ok = sum(1 for e in evs if e["type"] == "ok")
    return {
        "seconds": round(seconds, 3),
        "ops_per_s": round(len(evs) / seconds, 2),
        "ok_per_s": round(ok / seconds, 2),
    }


def final_reads_verdict(
    final: dict[str, dict[str, Any]], keys: list[str], nodes: list[str]
) -> dict[str, Any]:
    """After heal and recovery every node must serve every key (liveness).

    Whether the values agree is reported, not judged: linearizability of the
    whole history (final reads included) is the linearizability checker's job.
    """
    missing = [[k, n] for k in keys for n in nodes if not final.get(k, {}).get(n, {}).get("ok")]
    diverged = sorted(
        k
        for k in keys
        if len({repr(r.get("value")) for r in final.get(k, {}).values() if r.get("ok")}) > 1
    )
    valid: Any = not missing if final else "unknown"
    out: dict[str, Any] = {
        "valid": valid,
        "keys": len(keys),
        "nodes": len(nodes),
        "diverged_keys": diverged,
    }
    if missing:
        out["unread"] = missing[:50]
    if not final:
        out["reason"] = "no final reads were made"
    return out
