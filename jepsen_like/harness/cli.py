"""`python -m jepsen_like run`: the harness's subcommand.

`add_run_parser(subparsers)` registers it on the package's argparse parser;
`run_main(args)` runs it and returns the exit code:

    0  every checker says valid            2  unknown (checker time limit, ...)
    1  a violation (or no recovery)        3  the harness itself failed
    130 interrupted (Ctrl-C / SIGTERM); the history so far is written and checked
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import sys
from pathlib import Path
from typing import Any

from jepsen_like.harness.cluster import node_addresses
from jepsen_like.harness.config import TIERS, RunConfig
from jepsen_like.nemesis.iptables import DEFAULT_ADDRESS_BASE
from jepsen_like.nemesis.nemeses import NAMES, parse_nemeses
from jepsen_like.nemesis.schedule import PARTITION_MODES, parse_range
from jepsen_like.workloads import WORKLOADS

EPILOG = """\
examples:
  python -m jepsen_like run --workload register --nemesis partition,kill --time 60
  python -m jepsen_like run --workload kv --nemesis pause --time 180 --seed 7
  python -m jepsen_like run --nemesis partition --node-arg=--unsafe-local-reads  # must fail
  python -m jepsen_like run --workload session --consistency session --nemesis partition \
      --address-base 127.0.0.31
  python -m jepsen_like run --workload kv --nemesis membership --time 180  # n4 joins, drains
  python -m jepsen_like run --workload kv --nemesis rebalance --time 180   # leaders move

Each run writes STORE/<workload>[-<tier>]-<nemeses>-<timestamp>/: history.json, results.json,
timeline.html, nodes/<id>/node.log. Exit code: 0 valid, 1 violation, 2 unknown,
3 harness error, 130 interrupted.
"""


def _nemeses(text: str) -> list[str]:
    try:
        return parse_nemeses(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _range(text: str) -> tuple[float, float]:
    try:
        return parse_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in PARTITION_MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(
            f"partition modes are {', '.join(PARTITION_MODES)}; got {text!r}"
        )
    return modes


def _address_base(text: str) -> str:
    try:
        node_addresses(1, text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return str(ipaddress.IPv4Address(text))


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return v


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return v

    return parse


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="start a cluster, run a workload under faults, check the history",
        description="Start real raftmem nodes on 127.0.0.11.. (--address-base), run a "
        "workload against them "
        "while a nemesis injects faults, heal, read every key, and check linearizability.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="register",
        help="register: a few hot keys with read/write/cas; kv: many keys, "
        "created by their first write; session: one key per client, each write read back "
        "at once (default register)",
    )
    p.add_argument(
        "--nemesis",
        type=_nemeses,
        default=[],
        metavar="NAME[,NAME...]",
        help=f"faults to inject: {', '.join(NAMES)} (default none)",
    )
    p.add_argument(
        "--time",
        type=_positive(float),
        default=60.0,
        metavar="SECONDS",
        help="length of the chaos phase (default 60)",
    )
    p.add_argument("--nodes", type=_positive(int), default=3, help="node processes (default 3)")
    p.add_argument(
        "--concurrency",
        type=_positive(int),
        default=None,
        help="client processes, bound round-robin to nodes (default 2 per node)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seeds the fault schedule and the generators (default random, recorded)",
    )
    p.add_argument(
        "--consistency",
        choices=TIERS,
        default=None,
        help="read tier passed as ?consistency= (default: the server's, linearizable). "
        "linearizable and lease are checked for linearizability; session by the session "
        "checker (read-your-writes, monotonic reads) with per-client session tokens; "
        "eventual by convergence of the replicas after heal (GET /admin/digests)",
    )
    p.add_argument(
        "--max-staleness-ms",
        type=int,
        default=None,
        metavar="MS",
        help="with --consistency eventual: passed as ?max_staleness_ms= on reads",
    )
    p.add_argument(
        "--convergence-timeout",
        type=_positive(float),
        default=30.0,
        metavar="SECONDS",
        help="with --consistency eventual: how long the replicas may take to agree after "
        "heal and quiescence (default 30)",
    )
    p.add_argument(
        "--fault-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="clients stop invoking 0.1 s before each fault and resume when the fault's "
        "group has a new leader, or after SECONDS (default 0: off). Lines up a quiet log "
        "with an election, e.g. for bridge partitions against leases",
    )
    p.add_argument(
        "--address-base",
        type=_address_base,
        default=DEFAULT_ADDRESS_BASE,
        metavar="A.B.C.D",
        help=f"loopback address of n1; node i gets the (i-1)-th next one (default "
        f"{DEFAULT_ADDRESS_BASE}). The iptables chain is named after it, so runs with "
        "different bases can run at the same time",
    )
    p.add_argument(
        "--store",
        type=Path,
        default=Path("store"),
        help="parent folder of run directories (default ./store)",
    )
    p.add_argument(
        "--rate",
        type=_positive(float),
        default=None,
        help="target operations per second over all clients (default unthrottled)",
    )
    p.add_argument(
        "--node-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every node (repeatable), e.g. --node-arg=--unsafe-local-reads",
    )
    p.add_argument(
        "--keys",
        type=_positive(int),
        default=None,
        help="number of keys (default: register 3, kv 64); register with 1 key "
        "is checked as one cas-register",
    )
    p.add_argument(
        "--read-fraction",
        type=_fraction,
        default=None,
        metavar="F",
        help="share of reads in the register and kv mixes (0..1); the other operations "
        "keep their proportions (default: register 0.5, kv 0.5)",
    )
    p.add_argument("--groups", type=_positive(int), default=4, help="shard groups (default 4)")
    p.add_argument(
        "--op-timeout",
        type=_positive(float),
        default=6.0,
        metavar="SECONDS",
        help="per-request client timeout; a timed-out write is info (default 6)",
    )
    p.add_argument(
        "--fault-time",
        type=_range,
        default=(5.0, 10.0),
        metavar="LO,HI",
        help="seconds each fault lasts, drawn uniformly (default 5,10)",
    )
    p.add_argument(
        "--healthy-time",
        type=_range,
        default=(5.0, 10.0),
        metavar="LO,HI",
        help="seconds between faults, drawn uniformly (default 5,10)",
    )
    p.add_argument(
        "--partition-modes",
        type=_modes,
        default=PARTITION_MODES,
        metavar="MODE[,MODE...]",
        help="partition shapes to draw from: halves, isolate (a random node), "
        "leader (the leader of a group), ring (majority ring), bridge (cut the leader of a "
        "group from one follower only) (default all)",
    )
    p.add_argument(
        "--partition-via",
        choices=("auto", "iptables", "seam"),
        default="auto",
        help="iptables chain (root) or the nodes' transport-seam fault endpoints "
        "(default auto: iptables when usable)",
    )
    p.add_argument(
        "--checker-timeout",
        type=_positive(float),
        default=120.0,
        metavar="SECONDS",
        help="linearizability checker time limit; past it the verdict is unknown",
    )
    p.add_argument(
        "--placement-timeout",
        type=_positive(float),
        default=60.0,
        metavar="SECONDS",
        help="membership and rebalance: how long a join, a drain, a re-registration or a "
        "leadership transfer may take before the nemesis reports it failed (a drain that "
        "does not finish is cancelled) (default 60)",
    )
    p.add_argument("--ready-timeout", type=_positive(float), default=60.0, metavar="SECONDS")
    p.add_argument("--recovery-timeout", type=_positive(float), default=60.0, metavar="SECONDS")
    p.add_argument(
        "--keep-data",
        action="store_true",
        help="keep node data folders of a passing run (always kept on failure)",
    )
    p.add_argument("--name", default=None, help="run directory prefix (default WORKLOAD-NEMESES)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no status lines")
    p.set_defaults(func=run_main, handler=run_main)
    return p


def config_from_args(args: argparse.Namespace, argv: list[str] | None = None) -> RunConfig:
    return RunConfig(
        workload=args.workload,
        nemeses=list(args.nemesis),
        time_s=args.time,
        nodes=args.nodes,
        concurrency=args.concurrency,
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        consistency=args.consistency,
        address_base=args.address_base,
        max_staleness_ms=args.max_staleness_ms,
        convergence_timeout_s=args.convergence_timeout,
        fault_quiet_s=args.fault_quiet,
        placement_timeout_s=args.placement_timeout,
        store=args.store,
        rate=args.rate,
        node_args=list(args.node_arg),
        keys=args.keys,
        read_fraction=args.read_fraction,
        groups=args.groups,
        op_timeout_s=args.op_timeout,
        fault_s=args.fault_time,
        healthy_s=args.healthy_time,
        partition_modes=args.partition_modes,
        partition_via=args.partition_via,
        checker_timeout_s=args.checker_timeout,
        ready_timeout_s=args.ready_timeout,
        recovery_timeout_s=args.recovery_timeout,
        keep_data=args.keep_data,
        progress=not (args.no_progress or args.quiet),
        name=args.name,
        argv=list(argv if argv is not None else sys.argv[1:]),
    )


def run_main(args: argparse.Namespace) -> int:
    from jepsen_like.harness.runner import execute

    cfg = config_from_args(args)
    quiet = bool(args.quiet)

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    outcome = execute(cfg, say)
    res = outcome.results
    total = res["counts"]["chaos"].get("total", {})
    print(f"run directory: {outcome.run_dir}")
    for name, c in res["checkers"].items():
        detail = ""
        if c.get("valid") is False and "window" in c:
            detail = f" (key {c.get('key')!r}, op {c.get('op')}, window {c.get('window')})"
        if c.get("scope"):
            detail += f" [{c['scope']}]"
        if c.get("reason"):
            detail += f" — {c['reason']}"
        print(f"{name}: {c.get('valid')}{detail}")
    print(
        f"operations: ok={total.get('ok', 0)} fail={total.get('fail', 0)} "
        f"info={total.get('info', 0)}; seed {cfg.seed}"
    )
    for name, summary in (res["nemesis"].get("summary") or {}).items():
        counts = " ".join(f"{k}={v}" for k, v in summary.items() if k != "failures")
        print(f"nemesis {name}: {counts or 'nothing done'}")
        for failure in summary.get("failures") or []:
            print(f"nemesis {name} failure: {failure}")
    for e in res["errors"]:
        print(f"error: {e.strip().splitlines()[-1] if e.strip() else e}", file=sys.stderr)
    print(f"valid: {res['valid']} (exit {outcome.exit_code})")
    return outcome.exit_code
