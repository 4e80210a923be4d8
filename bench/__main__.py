"""``python -m bench run --suite quick|standard|scale1m`` (see docs/benchmarks.md).

Other subcommands: ``render RESULTS.json`` (markdown and plot again from saved
results), ``summarize-profile RAW`` (a py-spy raw file → markdown) and ``ab``
(the same points on checkouts of several commits: a change's before/after).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# The numpy reference is "one process, one query at a time": one BLAS thread, so that it is
# a single core's scan and not skewed by BLAS threads fighting the cluster for 2 cores. Set
# before numpy is first imported (the load-generator processes inherit it; they do no BLAS).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import orjson


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run a suite: fresh clusters, load, measure, report")
    run.add_argument("--suite", choices=["quick", "standard", "scale1m"], default="quick",
                     help="quick: c1/c16, 10k memories, 3 nodes (a couple of minutes); "
                          "standard: c1/16/64, 10k+100k, 3 and 5 nodes, etcd, profile; "
                          "scale1m: write and search at 1M memories")
    run.add_argument("--memories", help="sizes to load, comma-separated (the largest gets "
                                        "every workload), e.g. 10000,100000")
    run.add_argument("--nodes", help="node counts, comma-separated; the first is the primary "
                                     "cluster (every workload), e.g. 3 or 3,5")
    run.add_argument("--concurrency", help="concurrencies, comma-separated, e.g. 1,16,64")
    run.add_argument("--seconds", type=float, help="measured window per point")
    run.add_argument("--workloads", help="only these workloads (write,get,mixed,batch,search,"
                                         "search_agent,list_agent)")
    run.add_argument("--out", help="results folder [default: bench/results/<timestamp>/]")
    run.add_argument("--no-etcd", action="store_true", help="raftmem only (no etcd peer)")
    run.add_argument("--no-ceiling", action="store_true",
                     help="skip the load generator's ceiling (constant-answer server)")
    prof = run.add_mutually_exclusive_group()
    prof.add_argument("--profile", dest="profile", action="store_true", default=None,
                      help="py-spy one node during write/get/search at c16")
    prof.add_argument("--no-profile", dest="profile", action="store_false")
    run.add_argument("--client-procs", type=int, default=2,
                     help="load-generator processes (a point at concurrency c uses min(c, N))")
    run.add_argument("--host", default="127.0.0.61", help="loopback address of raftmem's nodes")
    run.add_argument("--api-port", type=int, default=27001)
    run.add_argument("--raft-port", type=int, default=27101)
    run.add_argument("--const-port", type=int, default=27090,
                     help="port of the constant-answer server (on --host)")
    run.add_argument("--etcd-hosts", default="127.0.0.71,127.0.0.72,127.0.0.73",
                     help="three loopback addresses for the etcd members (ports 2379/2380)")
    run.add_argument("--work-dir", help="where the clusters' data folders go [default: $TMPDIR]")
    run.add_argument("--keep-data", action="store_true", help="keep the data folders")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--batch-size", type=int, default=100,
                     help="memories per request of the batch-insert workload")
    run.add_argument("--load-concurrency", type=int, default=4,
                     help="batch requests in flight during the bulk load")
    run.add_argument("--list-limit", type=int, default=20, help="limit of the list workload")
    run.add_argument("--wait-for-load", type=float, default=None, metavar="LOAD1",
                     help="first wait until the 1-min load average is below LOAD1; give up "
                          "(exit 2) after --wait-timeout s")
    run.add_argument("--wait-timeout", type=float, default=3600)

    rend = sub.add_parser("render", help="markdown and plot again from a results.json")
    rend.add_argument("results")

    summ = sub.add_parser("summarize-profile", help="summarise a py-spy raw (collapsed) file")
    summ.add_argument("raw")

    ab = sub.add_parser("ab", help="the same points on checkouts of several commits, in "
                                   "alternating rounds (before/after of a change)")
    ab.add_argument("--commits", required=True, help="commits to compare, comma-separated")
    ab.add_argument("--points", required=True,
                    help="WORKLOAD:CONCURRENCY[:TIER], comma-separated, e.g. "
                         "write:64,get:16:eventual")
    ab.add_argument("--rounds", type=int, default=3)
    ab.add_argument("--seconds", type=float, default=8.0, help="measured window per point")
    ab.add_argument("--memories", type=int, default=5000,
                    help="memories loaded before points that read")
    ab.add_argument("--out", help="folder for ab.json and ab.md")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "render":
        from bench import report

        path = Path(args.results)
        results = orjson.loads(path.read_bytes())
        md = report.render(results)
        (path.parent / "results.md").write_text(md)
        try:
            from bench.plot import plot

            plot(results, str(path.parent / "throughput_p99.png"))
        except ImportError:
            print("matplotlib not installed: no plot", file=sys.stderr)
        print(md)
        return 0
    if args.cmd == "summarize-profile":
        from bench import profiling

        with open(args.raw) as f:
            print(profiling.format_summary(os.path.basename(args.raw), profiling.summarize(f)))
        return 0

    if args.cmd == "ab":
        from bench import ab

        try:
            points = ab.parse_points(args.points)
        except ValueError as e:
            print(f"--points: {e}", file=sys.stderr)
            return 2
        commits = [c for c in args.commits.split(",") if c]
        if len(commits) < 2 or args.rounds < 1:
            print("--commits needs at least two commits and --rounds at least 1", file=sys.stderr)
            return 2
        ab.run(commits, points, args.rounds, args.seconds, args.memories, args.out)
        return 0

    from bench.suite import Run, options_from

    if args.wait_for_load is not None:
        deadline = time.monotonic() + args.wait_timeout
        while os.getloadavg()[0] >= args.wait_for_load:
            if time.monotonic() > deadline:
                print(f"load average still {os.getloadavg()[0]:.2f} after {args.wait_timeout}s; "
                      "not running", file=sys.stderr)
                return 2
            time.sleep(10)  # poll interval of a wait that has its own deadline
    results = Run(options_from(args)).execute()
    return 1 if results.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
