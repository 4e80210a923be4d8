"""How long the checker takes: the 10k-operation kv history, and growth with concurrency.

    python -m jepsen_like.checker.bench            # the figures in docs/checker.md
    python -m jepsen_like.checker.bench --quick    # fewer seeds and sizes

Histories come from `generate` (linearizable by construction); each is written
to a file and checked from it, so times include reading and validating the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from jepsen_like.checker.check import check_history, partitions
from jepsen_like.checker.generate import corrupt, generate_history
from jepsen_like.checker.history import load_history, parse_history
from jepsen_like.checker.search import search


def in_flight(raw: dict[str, Any]) -> float:
    """Mean number of operations open on the same key at an invocation (itself included)."""
    open_on: dict[Any, int] = {}
    key_of: dict[int, Any] = {}
    seen = []
    for ev in raw["ops"]:
        key = ev["key"]
        if ev["type"] == "invoke":
            open_on[key] = open_on.get(key, 0) + 1
            key_of[ev["id"]] = key
            seen.append(open_on[key])
        else:
            open_on[key_of[ev["id"]]] -= 1
    return statistics.fmean(seen) if seen else 0.0


def timed_check(raw: dict[str, Any], timeout: float, directory: Path) -> tuple[float, Any]:
    path = directory / "history.json"
    path.write_bytes(orjson.dumps(raw))
    start = time.perf_counter()
    result = check_history(load_history(path), timeout)
    return time.perf_counter() - start, result


def no_forced_moves(raw: dict[str, Any], timeout: float) -> tuple[float, Any]:
    """The search without forced moves (every op branches), for comparison."""
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    verdict: Any = True
    for part in partitions(parse_history(raw)):
        model = dataclasses.replace(part.model, observes=lambda _x: False)
        found = search(
            model,
            part.inputs,
            [op.call for op in part.ops],
            [op.ret if op.type == "ok" else None for op in part.ops],
            deadline,
        )
        if found.linearizable is not True:
            verdict = found.linearizable
            break
    return time.perf_counter() - start, verdict


def headline(seeds: list[int], timeout: float, directory: Path) -> None:
    print("## kv: 10,000 operations, 100 keys, 20 processes\n")
    print("| seed | in flight per key | verdict | seconds | corrupted: verdict | seconds |")
    print("|---:|---:|---|---:|---|---:|")
    for seed in seeds:
        raw = generate_history(ops=10_000, keys=100, processes=20, model="kv", seed=seed)
        seconds, result = timed_check(raw, timeout, directory)
        bad_seconds, bad = timed_check(corrupt(raw, 1, seed), timeout, directory)
        print(
            f"| {seed} | {in_flight(raw):.2f} | {_v(result.linearizable)} | {seconds:.3f} "
            f"| {_v(bad.linearizable)} | {bad_seconds:.3f} |",
            flush=True,
        )
    print()


def growth(
    processes: list[int], seeds: list[int], ops: int, timeout: float, directory: Path
) -> None:
    print(f"## One register (cas-register), {ops} operations, by concurrent processes\n")
    print(f"Median over seeds {seeds}; time limit {timeout:g} s (past it: unknown).\n")
    print(
        "| processes | in flight | verdicts | seconds (median) | seconds (max) "
        "| without forced moves (median) |"
    )
    print("|---:|---:|---|---:|---:|---:|")
    for n in processes:
        times, verdicts, flights, plain = [], [], [], []
        plain_unknown = 0
        for seed in seeds:
            raw = generate_history(ops=ops, processes=n, model="cas-register", seed=seed)
            flights.append(in_flight(raw))
            seconds, result = timed_check(raw, timeout, directory)
            times.append(seconds)
            verdicts.append(_v(result.linearizable))
            plain_seconds, plain_verdict = no_forced_moves(raw, timeout)
            plain.append(plain_seconds)
            plain_unknown += plain_verdict == "unknown"
        unknown = f" ({plain_unknown} unknown)" if plain_unknown else ""
        print(
            f"| {n} | {statistics.fmean(flights):.1f} | {' '.join(verdicts)} "
            f"| {statistics.median(times):.3f} | {max(times):.3f} "
            f"| {statistics.median(plain):.3f}{unknown} |",
            flush=True,
        )
    print()


def _v(verdict: Any) -> str:
    return "unknown" if verdict == "unknown" else str(verdict).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepsen_like.checker.bench")
    parser.add_argument("--quick", action="store_true", help="fewer seeds and sizes")
    parser.add_argument("--timeout", type=float, default=30.0, help="per history (s)")
    args = parser.parse_args(argv)
    seeds = [1, 2] if args.quick else [1, 2, 3]
    procs = [1, 2, 4, 8, 16] if args.quick else [1, 2, 4, 8, 12, 16, 20, 24, 32, 40, 48]
    print(f"python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d')}\n")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        headline(seeds, args.timeout, directory)
        growth(procs, seeds, 2000, args.timeout, directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
