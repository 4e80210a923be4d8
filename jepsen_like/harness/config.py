"""Everything one run needs to know, as one value (built by the CLI, recorded in results.json)."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jepsen_like.nemesis.iptables import DEFAULT_ADDRESS_BASE, chain_for
from jepsen_like.nemesis.schedule import PARTITION_MODES

TIERS = ("linearizable", "lease", "session", "eventual")
# Tiers whose chaos-phase reads are not linearizable by design: the linearizability
# checker sees their writes, cas and (linearizable) final reads only.
WEAK_TIERS = ("session", "eventual")


@dataclass
class RunConfig:
    workload: str = "register"
    nemeses: list[str] = field(default_factory=list)  # [] = none
    time_s: float = 60.0
    nodes: int = 3
    concurrency: int | None = None  # default: 2 per node
    seed: int = 0
    consistency: str | None = None  # None: the server's default tier
    store: Path = Path("store")
    rate: float | None = None  # ops/s over all clients; None: as fast as they go
    node_args: list[str] = field(default_factory=list)
    keys: int | None = None  # default: the workload's
    read_fraction: float | None = None  # default: the workload's mix
    groups: int = 4
    op_timeout_s: float = 6.0
    fault_s: tuple[float, float] = (5.0, 10.0)
    healthy_s: tuple[float, float] = (5.0, 10.0)
    partition_modes: tuple[str, ...] = PARTITION_MODES
    partition_via: str = "auto"  # auto | iptables | seam
    checker_timeout_s: float = 120.0
    ready_timeout_s: float = 60.0
    recovery_timeout_s: float = 60.0
    final_read_timeout_s: float = 30.0
    address_base: str = DEFAULT_ADDRESS_BASE  # node i listens on address_base + (i - 1)
    max_staleness_ms: int | None = None  # eventual reads: ?max_staleness_ms=
    convergence_timeout_s: float = 30.0
    fault_quiet_s: float = 0.0  # > 0: clients pause at each fault until a new leader (or this)
    placement_timeout_s: float = 60.0  # membership/rebalance: deadline of a join, drain, ...
    keep_data: bool = False  # keep node data folders even when the run passes
    progress: bool = True
    name: str | None = None
    argv: list[str] = field(default_factory=list)

    @property
    def clients(self) -> int:
        return self.concurrency if self.concurrency is not None else 2 * self.nodes

    @property
    def spares(self) -> int:
        """Node slots beyond the cluster file: one for the placement nemeses (n4)."""
        return 1 if {"membership", "rebalance"} & set(self.nemeses) else 0

    @property
    def tier(self) -> str:
        return self.consistency or "linearizable"

    @property
    def chain(self) -> str:
        """The iptables chain of this run (one per address base)."""
        return chain_for(self.address_base)

    def label(self) -> str:
        tier = f"-{self.consistency}" if self.consistency else ""
        return self.name or f"{self.workload}{tier}-{'+'.join(self.nemeses) or 'none'}"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["store"] = str(self.store)
        doc["concurrency"] = self.clients
        return doc

    def replay_command(self) -> str:
        """A command line that repeats this run's workload, faults and seed."""
        args = [
            "python",
            "-m",
            "jepsen_like",
            "run",
            "--workload",
            self.workload,
            "--nemesis",
            ",".join(self.nemeses) or "none",
            "--time",
            f"{self.time_s:g}",
            "--nodes",
            str(self.nodes),
            "--concurrency",
            str(self.clients),
            "--seed",
            str(self.seed),
            "--groups",
            str(self.groups),
            "--fault-time",
            "{:g},{:g}".format(*self.fault_s),
            "--healthy-time",
            "{:g},{:g}".format(*self.healthy_s),
            "--partition-modes",
            ",".join(self.partition_modes),
        ]
        if self.keys is not None:
            args += ["--keys", str(self.keys)]
        if self.read_fraction is not None:
            args += ["--read-fraction", f"{self.read_fraction:g}"]
        if self.consistency:
            args += ["--consistency", self.consistency]
        if self.max_staleness_ms is not None:
            args += ["--max-staleness-ms", str(self.max_staleness_ms)]
        if self.fault_quiet_s:
            args += ["--fault-quiet", f"{self.fault_quiet_s:g}"]
        if self.placement_timeout_s != 60.0:
            args += ["--placement-timeout", f"{self.placement_timeout_s:g}"]
        if self.address_base != DEFAULT_ADDRESS_BASE:
            args += ["--address-base", self.address_base]
        if self.rate:
            args += ["--rate", f"{self.rate:g}"]
        for a in self.node_args:
            args.append(f"--node-arg={a}")
        return shlex.join(args)
