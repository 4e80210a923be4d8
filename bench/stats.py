"""Percentiles and the aggregation of load-generator results. Pure: no I/O.

A load-generator process measures one *window* (after a warm-up) and sends back
a ``WorkerResult``: the latencies (seconds) of the requests that completed in
the window, how many items they carried (memories for a batch), the errors by
kind, and its own CPU seconds over the window. ``aggregate`` merges the
processes of one measurement point into a row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerResult:
    latencies: Sequence[float]  # seconds, requests completed inside the window
    items: int  # items carried by those requests (== len(latencies) but for batches)
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count, inside the window
    cpu_s: float = 0.0  # this process's CPU seconds over the window
    window_s: float = 0.0  # the window's length as this process measured it
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks.

    The same definition as ``numpy.percentile``'s default; NaN for no values.
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in 0..100, got {p}")
    if len(values) == 0:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds (NaN when there is none)."""
    xs = sorted(latencies_s)
    if not xs:
        nan = math.nan
        return {"p50_ms": nan, "p95_ms": nan, "p99_ms": nan, "mean_ms": nan, "max_ms": nan}
    return {
        "p50_ms": percentile(xs, 50) * 1e3,
        "p95_ms": percentile(xs, 95) * 1e3,
        "p99_ms": percentile(xs, 99) * 1e3,
        "mean_ms": sum(xs) / len(xs) * 1e3,
        "max_ms": xs[-1] * 1e3,
    }


def merge_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def aggregate(results: Sequence[WorkerResult], window_s: float) -> dict[str, Any]:
    """One measurement point from its load-generator processes' results.

    ``window_s`` is the planned window; throughput is completions inside it
    divided by it. Client CPU is given per process, in percent of one core.
    """
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    lat: list[float] = []
    for r in results:
        lat.extend(r.latencies)
    ops = len(lat)
    items = sum(r.items for r in results)
    errors = merge_counts(r.errors for r in results)
    row: dict[str, Any] = {
        "ops": ops,
        "ops_per_s": ops / window_s,
        "items_per_s": items / window_s,
        "errors": errors,
        "error_count": sum(errors.values()),
        "client_cpu_pct": [100.0 * r.cpu_s / window_s for r in results],
        "client_procs": len(results),
    }
    row.update(latency_summary_ms(lat))
    return row


def cpu_percent(before: Mapping[str, float], after: Mapping[str, float],
                seconds: float) -> dict[str, float]:
    """Per-process CPU in percent of one core from two CPU-seconds samples.

    A process missing from either sample is left out (it started or ended).
    """
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    return {k: 100.0 * (after[k] - before[k]) / seconds for k in before if k in after}


def ratio(num: float | None, den: float | None) -> float | None:
    """num/den, or None when either is missing, NaN or den is 0."""
    if num is None or den is None or math.isnan(num) or math.isnan(den) or den == 0:
        return None
    return num / den


def split(concurrency: int, procs: int) -> list[int]:
    """Connections per load-generator process: as even as possible, none with 0."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    procs = max(1, min(procs, concurrency))
    base, extra = divmod(concurrency, procs)
    return [base + (1 if i < extra else 0) for i in range(procs)]


def same_topk(got: Sequence[tuple[str, float]], want: Sequence[tuple[str, float]],
              tol: float = 1e-5) -> bool:
    """Whether a top-k answer is the exact one, up to float rounding among near ties.

    Both are ``(id, distance)`` best first. They agree when they have the same
    length, their distances agree position by position within ``tol``, and any
    id in one but not the other sits within ``tol`` of the k-th distance (a tie
    at the cut-off, decided differently by float32 rounding).
    """
    if len(got) != len(want):
        return False
    if any(abs(g[1] - w[1]) > tol for g, w in zip(got, want)):
        return False
    if not want:
        return True
    cut = want[-1][1]
    differ = {g[0] for g in got} ^ {w[0] for w in want}
    dist = {i: d for i, d in list(got) + list(want)}
    return all(abs(dist[i] - cut) <= tol for i in differ)
