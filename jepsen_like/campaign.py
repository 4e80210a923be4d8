"""Run many jepsen_like runs in a row and summarise their verdicts as a markdown table.

    python -m jepsen_like.campaign --workloads register,kv --nemeses partition,kill,pause \
        --runs 5 --time 180 --store ./store/campaign

    python -m jepsen_like.campaign --consistency lease,session,eventual --workloads register \
        --nemeses partition+kill --runs 5 --time 180 --address-base 127.0.0.31

A nemesis written ``partition+kill`` is one run with both nemeses; ``--consistency``
takes a list of tiers (each run passes one); ``--address-base`` lets a campaign run
beside another one on other loopback addresses (and its own iptables chain).

Each run is ``python -m jepsen_like run`` with a distinct seed; the table (and a
JSON file beside it) lists every run directory, its verdict and its counts, so a
claim in docs/jepsen.md can point at the runs that back it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import subprocess
import sys
import time
from typing import Any


def newest_run(store: pathlib.Path, before: set[str]) -> pathlib.Path | None:
    fresh = [p for p in store.iterdir() if p.is_dir() and p.name not in before]
    return max(fresh, key=lambda p: p.stat().st_mtime) if fresh else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workloads", default="register,kv")
    ap.add_argument("--nemeses", default="partition,kill,pause")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--time", type=int, default=180)
    ap.add_argument("--seed", type=int, default=1, help="first seed; each run adds one")
    ap.add_argument("--store", default="./store/campaign")
    ap.add_argument(
        "--consistency",
        default=None,
        help="read tiers, comma-separated: linearizable, lease, session, eventual "
        "(default: the server's, no --consistency)",
    )
    ap.add_argument("--address-base", default=None, help="passed to every run")
    ap.add_argument("--extra", action="append", default=[], help="extra argument for every run")
    ap.add_argument(
        "--stop-on-violation",
        action="store_true",
        help="stop after the first run whose checkers say false (exit 1); its run "
        "directory keeps the node data",
    )
    args = ap.parse_args(argv)

    store = pathlib.Path(args.store).resolve()
    store.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    seed = args.seed
    summary = store / "campaign.md"
    tiers: list[str | None] = list(args.consistency.split(",")) if args.consistency else [None]
    passthrough = ["--address-base", args.address_base] if args.address_base else []
    stopped = False
    for tier, workload, nemesis in itertools.product(
        tiers, args.workloads.split(","), args.nemeses.split(",")
    ):
        for _ in range(args.runs if not stopped else 0):
            before = {p.name for p in store.iterdir()}
            cmd = [
                *(sys.executable, "-m", "jepsen_like", "run"),
                *("--workload", workload, "--nemesis", nemesis.replace("+", ",")),
                *("--time", str(args.time), "--seed", str(seed), "--store", str(store)),
                *(["--consistency", tier] if tier else []),
                *passthrough,
                *("--no-progress", "--quiet"),
                *args.extra,
            ]
            t0 = time.monotonic()
            rc = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run_dir = newest_run(store, before)
            row: dict[str, Any] = {
                "tier": tier or "default",
                "workload": workload,
                "nemesis": nemesis,
                "seed": seed,
                "exit": rc,
                "seconds": round(time.monotonic() - t0),
                "run": run_dir.name if run_dir else None,
            }
            results = run_dir / "results.json" if run_dir else None
            if results and results.exists():
                row["results"] = json.loads(results.read_text())
            rows.append(row)
            seed += 1
            write_summary(summary, rows, args)
            print(
                f"{row['tier']:<13}{workload:<9}{nemesis:<16}seed {row['seed']:<4} exit {rc}  "
                f"{row['run']}",
                flush=True,
            )
            if args.stop_on_violation and rc == 1:
                print(f"violation in {row['run']}: campaign stopped", flush=True)
                stopped = True
                break
    (store / "campaign.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0 if all(r["exit"] == 0 for r in rows) else 1


def _verdict(r: dict[str, Any]) -> str:
    res = r.get("results") or {}
    checks = res.get("checkers") or res.get("verdicts") or {}
    if isinstance(checks, dict) and checks:
        return ", ".join(
            f"{k}: {v.get('valid', v) if isinstance(v, dict) else v}" for k, v in checks.items()
        )
    return "valid" if r["exit"] == 0 else f"exit {r['exit']}"


def _counts(r: dict[str, Any]) -> str:
    res = r.get("results") or {}
    chaos = (res.get("counts") or {}).get("chaos") or {}
    tot = chaos.get("total") or {}
    return " ".join(f"{k}={tot[k]}" for k in ("ok", "fail", "info") if k in tot)


def _writes_per_s(r: dict[str, Any]) -> str:
    """Acknowledged (ok) writes and cas per second of the chaos phase."""
    value = ((r.get("results") or {}).get("throughput") or {}).get("writes_ok_per_s")
    return "" if value is None else f"{value:.0f}"


def _actions(r: dict[str, Any]) -> str:
    """What the nemeses with a summary (membership, rebalance) did, counted per kind."""
    summaries = ((r.get("results") or {}).get("nemesis") or {}).get("summary") or {}
    parts = []
    for summary in summaries.values():
        parts += [f"{k}={v}" for k, v in summary.items() if k != "failures" and v]
    return " ".join(parts)


def write_summary(path: pathlib.Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    lines = [
        f"# jepsen_like campaign: {args.runs} x {args.time}s per tier, workload and nemesis",
        "",
        (
            "| tier | workload | nemesis | seed | exit | seconds | verdicts | ops | writes/s "
            "| nemesis actions | run directory |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('tier', 'default')} | {r['workload']} | {r['nemesis']} | {r['seed']} | "
            f"{r['exit']} | {r.get('seconds', '')} | "
            f"{_verdict(r)} | {_counts(r)} | {_writes_per_s(r)} | {_actions(r)} | {r['run']} |"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
