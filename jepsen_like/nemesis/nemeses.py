"""The nemeses: each fault paired with its heal.

A nemesis sees the cluster only through `Control` (node ids, addresses, the
processes the harness started, the admin API), so it can be tested with a
fake. Protocol, in the order the harness calls it:

    setup()          once before the chaos phase; raises Unsupported if it cannot work here
    inject(params)   start one fault (params drawn by the schedule); returns what it did
    heal()           end the fault; returns what it did
    teardown()       synchronous, idempotent, safe from ``finally`` and ``atexit``
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from jepsen_like.nemesis import grudge as g
from jepsen_like.nemesis.iptables import CHAIN, Iptables


class Unsupported(RuntimeError):
    """This nemesis cannot run here; the message says why and what would make it work."""


class Control(Protocol):
    @property
    def node_ids(self) -> list[str]: ...

    def address(self, node_id: str) -> str: ...  # the node's loopback address, e.g. 127.0.0.11

    async def leader_of(self, group: int) -> str | None: ...

    async def replicas_of(self, group: int) -> list[str] | None: ...  # None: unknown

    def kill(self, node_id: str) -> None: ...  # SIGKILL

    def restart(self, node_id: str) -> None: ...  # start again on the same data folder

    def pause(self, node_id: str) -> None: ...  # SIGSTOP

    def resume(self, node_id: str) -> None: ...  # SIGCONT

    async def admin_post(self, node_id: str, path: str, body: Any) -> int: ...  # HTTP status


class Nemesis(Protocol):
    name: str

    async def setup(self) -> dict[str, Any]: ...

    async def inject(self, params: dict[str, Any]) -> dict[str, Any]: ...

    async def heal(self) -> dict[str, Any]: ...

    def teardown(self) -> None: ...


def _running(control: Control) -> list[str]:
    """The nodes whose process the harness keeps running (every node without spares)."""
    running = getattr(control, "running", None)
    return [n for n in control.node_ids if running is None or running(n)]


async def _targets(control: Control, params: dict[str, Any]) -> list[str]:
    """The nodes a kill or pause hits: the leader of the drawn group first if asked for.

    Only running nodes: a spare slot, or a node the membership nemesis stopped, is
    not there to be hit."""
    live = _running(control)
    order: list[str] = [n for n in params["order"] if n in live]
    chosen: list[str] = []
    if params.get("target") == "leader":
        leader = await control.leader_of(int(params["group"]))
        if leader is not None and leader in order:
            chosen.append(leader)
    for n in order:
        if len(chosen) >= int(params.get("count", 1)):
            break
        if n not in chosen:
            chosen.append(n)
    return chosen


class PartitionNemesis:
    """Cuts the network between node addresses: iptables when root, else the transport seam.

    Seam: ``POST /admin/faults/isolate {"peers": [...]}`` on a node makes it
    drop raft traffic with those peers; ``POST /admin/faults/heal`` undoes it.
    The seam cuts both directions at the node that is told, so a ring (which is
    one-directional) becomes symmetric there; the timeline records which
    mechanism ran.
    """

    name = "partition"

    def __init__(self, control: Control, via: str = "auto", chain: str = CHAIN) -> None:
        if via not in ("auto", "iptables", "seam"):
            raise ValueError(f"partition via {via!r}: expected auto, iptables or seam")
        self.control = control
        self.via = via
        self.chain = chain  # one per address base: runs on other addresses keep their own
        self.iptables: Iptables | None = None
        self.active: g.Grudge = {}

    async def setup(self) -> dict[str, Any]:
        why_not = Iptables.available()
        if self.via in ("auto", "iptables") and why_not is None:
            ipt = Iptables([self.control.address(n) for n in self.control.node_ids], self.chain)
            try:
                await asyncio.to_thread(ipt.install)
                self.iptables = ipt
                self.via = "iptables"
                return {"via": "iptables", "chain": ipt.chain}
            except Exception as exc:  # noqa: BLE001 - reported, then the seam is tried
                await asyncio.to_thread(ipt.remove)
                why_not = f"iptables failed: {exc}"
        if self.via == "iptables":
            raise Unsupported(f"partition via iptables unsupported: {why_not}")
        statuses = {
            n: await self.control.admin_post(n, "/admin/faults/heal", {})
            for n in self.control.node_ids
        }
        if any(s in (404, 405) for s in statuses.values()):
            raise Unsupported(
                f"partition unsupported: iptables unusable ({why_not}) and the nodes have no "
                f"transport-seam fault endpoint (POST /admin/faults/heal answered {statuses})"
            )
        if any(s != 200 for s in statuses.values()):
            raise Unsupported(f"partition: POST /admin/faults/heal answered {statuses}")
        self.via = "seam"
        return {"via": "seam", "iptables_unusable": why_not}

    async def _grudge(self, params: dict[str, Any]) -> tuple[g.Grudge, dict[str, Any]]:
        order: list[str] = list(params["order"])
        mode = params["mode"]
        info: dict[str, Any] = {"mode": mode}
        if mode == "halves":
            return g.halves(order), info
        if mode == "ring":
            return g.majority_ring(order), info
        if mode == "leader":
            leader = await self.control.leader_of(int(params["group"]))
            info["group"] = params["group"]
            info["leader"] = leader
            return g.isolate(leader if leader in order else order[0], order), info
        if mode == "isolate":
            return g.isolate(order[0], order), info
        if mode == "bridge":
            group = int(params["group"])
            leader = await self.control.leader_of(group)
            members = await self.control.replicas_of(group)
            replicas = [n for n in order if members is None or n in members]
            if leader not in replicas:
                leader = replicas[0]
            others = [n for n in replicas if n != leader]
            if not others:
                raise ValueError(f"a bridge needs two replicas of group {group}, not {replicas}")
            info.update(group=group, leader=leader, cut_from=others[0], bridge=others[1:2])
            return g.bridge(leader, others[0]), info
        raise ValueError(f"unknown partition mode {mode!r}")

    async def inject(self, params: dict[str, Any]) -> dict[str, Any]:
        grudge, info = await self._grudge(params)
        self.active = grudge
        pairs = g.drops(grudge)
        info["drops"] = [list(p) for p in pairs]
        info["components"] = g.components(grudge, self.control.node_ids)
        info["via"] = self.via
        if self.iptables is not None:
            addr = self.control.address
            await asyncio.to_thread(self.iptables.cut, [(addr(s), addr(d)) for s, d in pairs])
        else:
            statuses = {}
            for node, peers in sorted(grudge.items()):
                if peers:
                    statuses[node] = await self.control.admin_post(
                        node, "/admin/faults/isolate", {"peers": sorted(peers)}
                    )
            info["seam_statuses"] = statuses
        return info

    async def heal(self) -> dict[str, Any]:
        self.active = {}
        if self.iptables is not None:
            await asyncio.to_thread(self.iptables.heal)
            return {"via": "iptables"}
        statuses = {
            n: await self.control.admin_post(n, "/admin/faults/heal", {})
            for n in self.control.node_ids
        }
        return {"via": "seam", "seam_statuses": statuses}

    def teardown(self) -> None:
        if self.iptables is not None:
            self.iptables.remove()


class KillNemesis:
    """SIGKILL a minority of nodes (the leader of a group, or random ones); heal restarts them."""

    name = "kill"

    def __init__(self, control: Control) -> None:
        self.control = control
        self.down: list[str] = []

    async def setup(self) -> dict[str, Any]:
        return {}

    async def inject(self, params: dict[str, Any]) -> dict[str, Any]:
        targets = await _targets(self.control, params)
        for n in targets:
            self.control.kill(n)
            self.down.append(n)
        return {"target": params.get("target"), "killed": targets}

    async def heal(self) -> dict[str, Any]:
        restarted, self.down = self.down, []
        for n in restarted:
            self.control.restart(n)
        return {"restarted": restarted}

    def teardown(self) -> None:
        self.down = []


class PauseNemesis:
    """SIGSTOP a minority of nodes (a process that hangs, sockets open); heal sends SIGCONT."""

    name = "pause"

    def __init__(self, control: Control) -> None:
        self.control = control
        self.paused: list[str] = []

    async def setup(self) -> dict[str, Any]:
        return {}

    async def inject(self, params: dict[str, Any]) -> dict[str, Any]:
        targets = await _targets(self.control, params)
        for n in targets:
            self.control.pause(n)
            self.paused.append(n)
        return {"target": params.get("target"), "paused": targets}

    async def heal(self) -> dict[str, Any]:
        resumed, self.paused = self.paused, []
        for n in resumed:
            self.control.resume(n)
        return {"resumed": resumed}

    def teardown(self) -> None:
        for n in self.paused:
            try:
                self.control.resume(n)
            except Exception:  # noqa: BLE001, S110 - best effort; the cluster is torn down next
                pass
        self.paused = []


# Nemeses that move nodes, replicas and leaders through the placement driver
# (nemesis/placement.py); the harness gives them a spare node slot.
PLACEMENT = ("membership", "rebalance")
NAMES = ("none", "partition", "kill", "pause", *PLACEMENT)


def parse_nemeses(text: str) -> list[str]:
    """`"partition,kill"` → ["partition", "kill"]; ValueError for unknown ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("no nemesis given (use 'none' for a run without faults)")
    for n in names:
        if n not in NAMES:
            raise ValueError(f"unknown nemesis {n!r} (known: {', '.join(NAMES)})")
    if "none" in names and len(names) > 1:
        raise ValueError("'none' cannot be combined with other nemeses")
    if all(n in names for n in PLACEMENT):
        # Both would start, drain and re-register the same spare node.
        raise ValueError("'membership' and 'rebalance' cannot be combined")
    return [] if names == ["none"] else list(dict.fromkeys(names))


def build(
    name: str,
    control: Any,
    partition_via: str = "auto",
    chain: str = CHAIN,
    placement_timeout_s: float = 60.0,
    quiesce_s: float = 7.0,
) -> Nemesis:
    if name == "partition":
        return PartitionNemesis(control, partition_via, chain)
    if name == "kill":
        return KillNemesis(control)
    if name == "pause":
        return PauseNemesis(control)
    if name in PLACEMENT:
        from jepsen_like.nemesis.placement import MembershipNemesis, RebalanceNemesis

        cls = MembershipNemesis if name == "membership" else RebalanceNemesis
        return cls(control, timeout_s=placement_timeout_s, quiesce_s=quiesce_s)
    raise ValueError(f"no nemesis {name!r}")
