"""The benchmark suite's pure parts: percentiles, aggregation, splitting, top-k comparison."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

# bench/ is not an installed package: make the repository importable under plain `pytest` too
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.stats import (
    WorkerResult,
    aggregate,
    cpu_percent,
    latency_summary_ms,
    merge_counts,
    percentile,
    ratio,
    same_topk,
    split,
)


@pytest.mark.parametrize("p", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_agrees_with_numpy(p: float) -> None:
    rng = random.Random(p)
    for n in (1, 2, 3, 10, 101, 1000):
        xs = [rng.expovariate(1.0) for _ in range(n)]
        assert percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)), rel=1e-12)


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_in_ms() -> None:
    s = latency_summary_ms([0.001 * i for i in range(1, 101)])  # 1..100 ms
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == pytest.approx(100.0)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert all(math.isnan(v) for v in latency_summary_ms([]).values())


def test_aggregate_merges_processes() -> None:
    a = WorkerResult(latencies=[0.001, 0.002], items=2, errors={"503:unavailable": 1}, cpu_s=1.0)
    b = WorkerResult(latencies=[0.003, 0.004, 0.010], items=300, errors={"503:unavailable": 2,
                     "exc:ClientOSError": 1}, cpu_s=0.5)
    row = aggregate([a, b], window_s=2.0)
    assert row["ops"] == 5
    assert row["ops_per_s"] == 2.5
    assert row["items_per_s"] == 151.0
    assert row["errors"] == {"503:unavailable": 3, "exc:ClientOSError": 1}
    assert row["error_count"] == 4
    assert row["client_cpu_pct"] == [50.0, 25.0]
    assert row["client_procs"] == 2
    assert row["p50_ms"] == pytest.approx(3.0)
    with pytest.raises(ValueError):
        aggregate([a], 0)


def test_aggregate_of_nothing_is_zero_not_an_error() -> None:
    row = aggregate([WorkerResult(latencies=[], items=0)], window_s=1.0)
    assert row["ops"] == 0 and row["ops_per_s"] == 0
    assert math.isnan(row["p99_ms"])


def test_merge_counts_and_cpu_percent() -> None:
    assert merge_counts([{"a": 1}, {"a": 2, "b": 1}, {}]) == {"a": 3, "b": 1}
    assert cpu_percent({"n1": 10.0, "n2": 5.0, "gone": 1.0}, {"n1": 12.0, "n2": 5.5}, 4.0) == {
        "n1": 50.0, "n2": 12.5}


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(float("nan"), 1.0) is None


@pytest.mark.parametrize("c,procs,want", [
    (1, 2, [1]), (16, 2, [8, 8]), (17, 2, [9, 8]), (64, 3, [22, 21, 21]), (3, 8, [1, 1, 1]),
])
def test_split(c: int, procs: int, want: list[int]) -> None:
    assert split(c, procs) == want
    assert sum(split(c, procs)) == c


def test_split_refuses_zero() -> None:
    with pytest.raises(ValueError):
        split(0, 2)


def test_same_topk() -> None:
    want = [("a", 0.1), ("b", 0.2), ("c", 0.3)]
    assert same_topk(want, want)
    assert not same_topk(want[:2], want)  # fewer answers
    assert not same_topk([("a", 0.1), ("b", 0.2), ("x", 0.35)], want)  # a wrong neighbour
    # a tie at the cut-off decided the other way by float rounding is still exact
    assert same_topk([("a", 0.1), ("b", 0.2), ("d", 0.3 + 1e-7)], want)
    # two near-equal neighbours swapped
    assert same_topk([("b", 0.1), ("a", 0.1 + 1e-7), ("c", 0.3)],
                     [("a", 0.1), ("b", 0.1 + 1e-7), ("c", 0.3)])
    assert same_topk([], [])
