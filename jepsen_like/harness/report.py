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
    writes = sum(1 for e in evs if e["type"] == "ok" and e["f"] in ("write", "cas"))
    return {
        "seconds": round(seconds, 3),
        "ops_per_s": round(len(evs) / seconds, 2),
        "ok_per_s": round(ok / seconds, 2),
        # acknowledged writes: write and cas operations answered ok
        "writes_ok_per_s": round(writes / seconds, 2),
    }


def without_chaos_reads(history: dict[str, Any]) -> dict[str, Any]:
    """The history without the reads of the chaos phase (their invocations and completions).

    What is left of a session or eventual run (writes, cas, the linearizable final
    reads) must still be linearizable: removing reads from a linearizable history
    leaves a linearizable history, since reads change no state.
    """
    dropped = {
        e["id"]
        for e in history["ops"]
        if e["type"] == "invoke" and e["f"] == "read" and not e.get("final")
    }
    doc = {k: v for k, v in history.items() if k != "ops"}
    doc["ops"] = [e for e in history["ops"] if e["id"] not in dropped]
    return doc


def eventual_stats(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the eventual reads' headers said: staleness, who served them, too_stale refusals."""
    reads = [e for e in completions(events, final=False) if e["f"] == "read"]
    staleness = sorted(e["staleness_ms"] for e in reads if isinstance(e.get("staleness_ms"), int))
    by_replica: dict[str, int] = {}
    for e in reads:
        if e["type"] == "ok" and e.get("replica") is not None:
            by_replica[str(e["replica"])] = by_replica.get(str(e["replica"]), 0) + 1
    out: dict[str, Any] = {
        "reads_ok": sum(1 for e in reads if e["type"] == "ok"),
        "with_staleness": len(staleness),
        "too_stale": sum(1 for e in reads if "too_stale" in str(e.get("error") or "")),
        "served_by": dict(sorted(by_replica.items())),
    }
    if staleness:
        out["staleness_ms"] = {
            "mean": round(sum(staleness) / len(staleness), 3),
            **{f"p{p}": percentile(staleness, p) for p in PERCENTILES},
            "max": staleness[-1],
            "stale_reads": sum(1 for x in staleness if x > 0),
        }
    return out


def final_reads_verdict(
    final: dict[str, dict[str, Any]],
    keys: list[str],
    nodes: list[str],
    require_agreement: bool = False,
) -> dict[str, Any]:
    """After heal and recovery every node must serve every key (liveness).

    Whether the values agree is reported, and judged only with
    `require_agreement` (eventual tier, where the final reads follow the
    convergence check): otherwise linearizability of the whole history (final
    reads included) is the linearizability checker's job.
    """
    missing = [[k, n] for k in keys for n in nodes if not final.get(k, {}).get(n, {}).get("ok")]
    diverged = sorted(
        k
        for k in keys
        if len({repr(r.get("value")) for r in final.get(k, {}).values() if r.get("ok")}) > 1
    )
    valid: Any = (not missing and not (require_agreement and diverged)) if final else "unknown"
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
    elif require_agreement and diverged:
        out["reason"] = f"nodes read different final values of {diverged[:10]}"
    return out
