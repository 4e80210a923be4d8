"""The placement driver (PD) as it runs inside a node.

The PD's state (node registry, groups and their replicas, settings:
``pdstate.py``) is replicated by its own Raft group, ``PD_GROUP``, hosted on
the first three nodes of the cluster description. Every node runs
:meth:`PlacementDriver.tick` twice a second:

1. **Heartbeat**: it sends its replicas' reported state (role, leader, term,
   commit and applied indexes, membership as each replica sees it, the
   leader's match indexes) to every node hosting the PD, and gets the PD's
   state back. Heartbeats are soft state, kept in memory by the PD nodes:
   liveness is "a heartbeat within ``LIVENESS_S``".
2. **Peers**: every registered node's Raft address is given to the transport,
   so replicas can be created anywhere.
3. **Routing**: the routing table's replica lists follow the PD's groups.
4. **Executor** (only on the PD leader): the bootstrap record is written if
   missing, and when rebalancing is on (the default) one executor pass runs
   (``executor.py``): the planner's operators, one safe step at a time.

Actions reach other nodes through the internal API
(``POST /internal/placement/{action}``, authenticated with the cluster
secret), handled by :meth:`PlacementDriver.handle`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from raftmem.config import parse_addr
from raftmem.errors import CommitTimeout, RaftmemError, Unavailable, ValidationError
from raftmem.keyspace import Ownership, covers_ring_once, format_point
from raftmem.placement import pdstate
from raftmem.placement.executor import (
    LEARNER,
    VOTER,
    ExecutorConfig,
    GroupReport,
    Observation,
    ReplicaReport,
    observe,
)
from raftmem.placement.executor import Executor as OperatorExecutor
from raftmem.placement.planner import ClusterView, plan
from raftmem.shardgroups.host import ProposalFailed

if TYPE_CHECKING:
    from raftmem.node import Node

log = structlog.get_logger("raftmem.pd")

PD_GROUP = 65000  # the PD's own Raft group (data groups are numbered from 0)
PD_REPLICAS = 3
TICK_S = 0.5
LIVENESS_S = 3.0
# A node silent this long is down: its replicas are replaced elsewhere. Between
# LIVENESS_S and this it is "suspect": given nothing new, but its replicas stay
# (a restart after kill -9 takes seconds; copying its data elsewhere takes more).
DOWN_AFTER_S = float(os.environ.get("RAFTMEM_DOWN_AFTER_S", "60"))
# A local replica of a group whose PD record has not listed this node for this
# long is an orphan (an operator that failed between creating a learner and
# recording it, or a drop that never arrived): it is dropped. Longer than any
# step of the executor (catch-up included), so no operator in flight loses it.
ORPHAN_AFTER_S = 900.0
# A learner this close to the leader's commit index counts as caught up. Under a
# steady write load it is always a few entries behind (found by jepsen_like's
# drains, whose learners waited over a minute for an exact match); promoted, it
# catches up as a voter while the others make the quorum.
CATCH_UP_SLACK = 64


def pd_members(node_ids: Sequence[str]) -> list[str]:
    """The nodes hosting the PD group at creation: the first three of the description."""
    return list(node_ids[:PD_REPLICAS])


def replica_report(st: Mapping[str, Any]) -> dict[str, Any]:
    """What a heartbeat says of one local replica (from ``GroupHost.status()``)."""
    return {k: st.get(k) for k in (
        "role", "leader", "term", "commit_index", "raft_applied_index", "members", "learners",
        "learner", "removed", "match_index", "last_log_index", "failed")}


def _ok_or_raise(res: dict[str, Any]) -> dict[str, Any]:
    """A PD command's answer, or its refusal raised as a clear 400."""
    if not res.get("ok"):
        err = res.get("error") or {}
        raise ValidationError(str(err.get("message", "refused")),
                              code=str(err.get("code", "invalid_request")))
    return res


def _move_target(move: str) -> int | None:
    """The target group named by a move id (``rangemove.move_id``), or None."""
    _, sep, to = move.rpartition("-to-")
    return int(to) if sep and to.isdigit() else None


class NodeActions:
    """The executor's :class:`~raftmem.placement.executor.ClusterActions` over the
    internal API of the nodes concerned."""

    def __init__(self, pd: PlacementDriver) -> None:
        self.pd = pd

    async def create_learner(self, node: str, group: int, voters: Sequence[str]) -> None:
        await self.pd.call(node, "create_replica", {"group": group, "voters": list(voters)})

    async def add_learner(self, group: int, node: str) -> None:
        for v in self.pd.voters(group):
            await self.pd.call(v, "add_learner", {"group": group, "node": node})

    async def promote(self, group: int, node: str) -> None:
        await self.pd.call(self.pd.leader_of(group), "membership",
                           {"group": group, "action": "add", "node": node})

    async def remove_voter(self, group: int, node: str) -> None:
        await self.pd.call(self.pd.leader_of(group), "membership",
                           {"group": group, "action": "rem", "node": node})

    async def drop_replica(self, node: str, group: int) -> None:
        await self.pd.call(node, "drop_replica", {"group": group})

    async def transfer_leader(self, group: int, node: str) -> None:
        res = await self.pd.call(self.pd.leader_of(group), "transfer",
                                 {"group": group, "target": node})
        if not res.get("started"):
            # Raised so that the executor asks again at its next pass.
            raise Unavailable(f"leadership transfer of group {group} to {node} not started: "
                              f"{res.get('reason')}", code="transfer_not_started")

    async def record_group(self, group: int, voters: Sequence[str], learners: Sequence[str],
                           expect_conf_ver: int) -> Mapping[str, Any]:
        return await self.pd.propose(pdstate.set_group(group, voters, learners, expect_conf_ver))

    async def create_group(self, group: int, voters: Sequence[str]) -> None:
        for v in voters:
            await self.pd.call(v, "create_group", {"group": group, "voters": list(voters)})

    async def record_new_group(self, group: int, voters: Sequence[str]) -> Mapping[str, Any]:
        return await self.pd.propose(pdstate.create_group(group, voters))

    async def move_range(self, source: int, target: int, start: int, end: int) -> None:
        # Driven from this node (the PD's leader); one move at a time per node.
        await self.pd.node.move_range(format_point(start), format_point(end), target)


class PlacementDriver:
    def __init__(self, node: Node, *, auto_rebalance: bool = True) -> None:
        self.node = node
        self.auto_rebalance = auto_rebalance
        self.executor = OperatorExecutor(NodeActions(self), ExecutorConfig(
            step_timeout=30.0, catch_up_timeout=600.0, action_timeout=10.0,
            catch_up_slack=CATCH_UP_SLACK))
        self.state: dict[str, Any] = {}
        self.state_at = 0.0
        self._orphan_since: dict[int, float] = {}
        self.orphans_dropped = 0
        self.reconciled = 0
        # PD nodes only: the latest heartbeat of every node (monotonic time, report).
        self.heartbeats: dict[str, tuple[float, dict[str, Any]]] = {}
        self._known_peers: dict[str, str] = {}
        self._pass_lock = asyncio.Lock()
        # When this node began judging liveness (as PD leader): a node not heard
        # from since is suspect, not down, for DOWN_AFTER_S.
        self._tracking_since: float | None = None
        self.bootstrap_proposed = False
        # The groups' ownership records as last read (monotonic time, by group).
        self._records: tuple[float, dict[int, Ownership]] = (float("-inf"), {})
        self.last_error: str | None = None

    # -- where things are ----------------------------------------------------------------

    def hosts_pd(self) -> bool:
        """A voter replica of the PD group is here (a learner still catching up holds
        an empty or old state: jepsen_like track record #7)."""
        r = self.node.host.replicas.get(PD_GROUP)
        return r is not None and not r.learner and not r.removed

    def pd_nodes(self) -> list[str]:
        groups = self.state.get("groups", {})
        g = groups.get(str(PD_GROUP))
        if g is not None:
            return list(g["voters"])
        return pd_members([n.id for n in self.node.spec.nodes])

    def is_pd_leader(self) -> bool:
        st = self.node.host.status().get(PD_GROUP)
        return st is not None and st["role"] == "leader"

    def voters(self, group: int) -> list[str]:
        g = self.state.get("groups", {}).get(str(group))
        if g is None:
            raise Unavailable(f"group {group} is not in the placement driver's state")
        return list(g["voters"])

    def leader_of(self, group: int) -> str:
        rep = self.reports().get(group)
        if rep is None or rep.leader is None:
            raise Unavailable(f"group {group} has no known leader", code="no_leader")
        return rep.leader

    def api_address(self, node_id: str) -> str | None:
        n = self.state.get("nodes", {}).get(node_id)
        return None if n is None else str(n["api"])

    # -- talking to nodes -----------------------------------------------------------------

    async def call(self, node_id: str, action: str, body: dict[str, Any]) -> Any:
        """Run ``action`` on ``node_id`` (locally when it is this node)."""
        if node_id == self.node.node_id:
            return await self.handle(action, body)
        api = self.api_address(node_id) or self.node.api_address(node_id)
        return await self.node.post_internal(api, f"/internal/placement/{action}", body)

    async def propose(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """A PD command through the PD group's log (forwarded when not hosted here)."""
        res = await self.node.propose_payload(PD_GROUP, pdstate.encode(cmd))
        return dict(res)

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the loop must outlive any one tick
                self.last_error = repr(e)
                log.warning("pd_tick_failed", error=repr(e))
            await asyncio.sleep(TICK_S)

    def my_report(self) -> dict[str, Any]:
        status = self.node.host.status()
        return {"node": self.node.node_id,
                "api": self.node.me.api, "raft": self.node.me.raft,
                "groups": {str(g): replica_report(st) for g, st in status.items()},
                "data_bytes": self.node.data_bytes()}

    async def tick(self) -> None:
        report = self.my_report()
        if self.hosts_pd():
            self.receive_heartbeat(report)
            self.state = self.local_state()
            self.state_at = time.monotonic()
        for n in self.pd_nodes():
            if n == self.node.node_id:
                continue
            try:
                answer = await self.call(n, "heartbeat", report)
            except (RaftmemError, OSError, TimeoutError):
                continue
            if isinstance(answer, dict) and answer.get("state") and not self.hosts_pd():
                st = answer["state"]
                if st.get("applied_index", 0) >= self.state.get("applied_index", 0):
                    self.state = st
                    self.state_at = time.monotonic()
        await self.sync_peers()
        self.node.apply_placement(self.state)
        await self.drop_orphans()
        if not self.is_pd_leader():
            self._tracking_since = None  # judged afresh if this node leads again
        else:
            if not self.state.get("bootstrapped"):
                await self.bootstrap()
            else:
                if self.auto_rebalance:
                    async with self._pass_lock:
                        await self.executor.run_once(self.observation)
                await self.reconcile()
                await self.finish_removals()
                await self.record_ranges()

    def local_state(self) -> dict[str, Any]:
        r = self.node.host.replicas.get(PD_GROUP)
        if r is None:
            return self.state
        st: dict[str, Any] = r.sm.state()
        return st

    async def bootstrap(self) -> None:
        spec = self.node.spec
        table = self.node.initial_table
        groups = {g: list(m) for g, m in table.replicas.items()}
        groups[PD_GROUP] = pd_members([n.id for n in spec.nodes])
        cmd = pdstate.bootstrap([n.to_dict() for n in spec.nodes], groups,
                                replicas=spec.replicas, ts=0)
        res = await self.propose(cmd)
        self.bootstrap_proposed = True
        log.info("pd_bootstrapped", ok=res.get("ok"), nodes=len(spec.nodes))

    async def sync_peers(self) -> None:
        for nid, n in self.state.get("nodes", {}).items():
            if nid == self.node.node_id:
                continue
            if n["state"] == "removed":
                if nid in self._known_peers:
                    await self.node.host.remove_peer(nid)
                    del self._known_peers[nid]
                continue
            if self._known_peers.get(nid) != n["raft"]:
                await self.node.host.add_peer(nid, parse_addr(n["raft"]))
                self._known_peers[nid] = n["raft"]

    async def drop_orphans(self) -> None:
        groups = self.state.get("groups") or {}
        if not self.state.get("bootstrapped"):
            return
        now = time.monotonic()
        me = self.node.node_id
        for gid in list(self.node.host.replicas):
            g = groups.get(str(gid))
            if g is None or me in g["voters"] or me in g["learners"]:
                self._orphan_since.pop(gid, None)
                continue
            since = self._orphan_since.setdefault(gid, now)
            if now - since >= ORPHAN_AFTER_S:
                log.warning("orphan_replica_dropped", group=gid, seconds=round(now - since))
                await self.node.host.drop_replica(gid)
                self._orphan_since.pop(gid, None)
                self.orphans_dropped += 1

    # -- heartbeats and what they show ----------------------------------------------------

    def receive_heartbeat(self, report: dict[str, Any]) -> None:
        node = report.get("node")
        if isinstance(node, str):
            self.heartbeats[node] = (time.monotonic(), report)

    def live(self) -> set[str]:
        now = time.monotonic()
        return {n for n, (t, _) in self.heartbeats.items() if now - t < LIVENESS_S}

    def reports(self) -> dict[int, GroupReport]:
        """Each group's report from the heartbeats: its leader's view of the
        configuration, and every hosting node's own applied index."""
        now = time.monotonic()
        per_group: dict[int, dict[str, dict[str, Any]]] = {}
        for n, (t, rep) in self.heartbeats.items():
            if now - t >= LIVENESS_S:
                continue
            for g, st in rep.get("groups", {}).items():
                per_group.setdefault(int(g), {})[n] = st
        out: dict[int, GroupReport] = {}
        for g, by_node in per_group.items():
            leaders = [(st.get("term") or 0, n) for n, st in by_node.items()
                       if st.get("role") == "leader"]
            leader = max(leaders)[1] if leaders else None
            lst = by_node.get(leader) if leader is not None else None
            replicas: dict[str, ReplicaReport] = {}
            match = (lst or {}).get("match_index") or {}
            voters = set((lst or {}).get("members") or [])
            learners = set((lst or {}).get("learners") or [])
            for n in set(by_node) | voters | learners:
                st = by_node.get(n, {})
                role = VOTER if n in voters else LEARNER if n in learners else None
                applied = int(st.get("raft_applied_index") or 0)
                if n == leader:
                    m = int((lst or {}).get("last_log_index") or 0)
                else:
                    m = int(match.get(n, 0))
                replicas[n] = ReplicaReport(
                    role=role, applied_index=applied, match_index=m,
                    # hosts a replica (a removed one too, until it is dropped)
                    member=bool(st))
            out[g] = GroupReport(g, leader, int((lst or {}).get("term") or 0),
                                 int((lst or {}).get("commit_index") or 0), replicas)
        return out

    async def observation(self) -> Observation:
        # The PD's own group is placed like the others: a replica on a node
        # that leaves is replaced elsewhere (learner first, as for data).
        obs = observe(self.local_state(), self.reports(), live=self.live(),
                      slack=CATCH_UP_SLACK)
        now = time.monotonic()
        if self._tracking_since is None:
            self._tracking_since = now
        nodes = []
        for n in obs.view.nodes:
            if n.state == "down":
                seen = self.heartbeats.get(n.id, (self._tracking_since, None))[0]
                if now - max(seen, self._tracking_since) < DOWN_AFTER_S:
                    n = dataclasses.replace(n, state="suspect")
            nodes.append(n)
        view = dataclasses.replace(obs.view, nodes=tuple(nodes))
        return dataclasses.replace(obs, view=await self._with_ranges(view))

    async def _with_ranges(self, view: ClusterView) -> ClusterView:
        """``view`` with each data group's owned ranges (and frozen ones, with the
        target their move names) from the groups' own records, and the
        groups-per-node target; a group whose record cannot be read now is left
        without (the planner then moves no range and creates no group)."""
        gpn = self.local_state().get("settings", {}).get("groups_per_node")
        try:
            records = {o.group: o for o in await self.node._ownerships()}
        except RaftmemError:
            records = {}
        self._records = (time.monotonic(), records)
        groups = []
        for g in view.groups:
            own = records.get(g.id)
            if g.id != PD_GROUP and own is not None:
                moving = []
                for r in own.ranges:
                    to = _move_target(r.move) if r.frozen else None
                    if to is not None:
                        moving.append((r.start, r.end, to))
                g = dataclasses.replace(g, ranges=tuple((r.start, r.end) for r in own.ranges),
                                        moving=tuple(moving))
            groups.append(g)
        return dataclasses.replace(view, groups=tuple(groups), groups_per_node=gpn)

    # -- admin ----------------------------------------------------------------------------

    async def register(self, node_id: str, api: str, raft: str) -> dict[str, Any]:
        for _ in range(3):
            res = _ok_or_raise(await self.propose(pdstate.register_node(
                node_id, api, raft, ts=int(time.time() * 1000))))
            if (res.get("node") or {}).get("state") != "draining":
                return res
            # Registering a draining node again (same addresses) cancels the
            # drain: it is up, and takes replicas again.
            res = await self.propose(pdstate.set_node_state(node_id, "up"))
            if (res.get("error") or {}).get("code") != "node_removed":
                return _ok_or_raise(res)
            # The drain finished between the two: register the removed node
            # again (jepsen_like track record #8).
        raise Unavailable(f"node {node_id}: registration raced its drain three times",
                          code="unavailable")

    async def drain(self, node_id: str) -> dict[str, Any]:
        return _ok_or_raise(await self.propose(pdstate.set_node_state(node_id, "draining")))

    def progress(self) -> dict[str, Any]:
        out = self.executor.progress()
        out["auto_rebalance"] = self.auto_rebalance
        out["pd_leader"] = self.node.node_id
        out["live"] = sorted(self.live())
        out["load"] = self.load()
        return out

    def load(self) -> dict[str, dict[str, Any]]:
        """Per registered node: replicas (the PD's record), leaderships and bytes of
        data-group databases (its latest heartbeat; None when none is fresh)."""
        state = self.local_state()
        reports = self.reports()
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        for nid, n in sorted(state.get("nodes", {}).items()):
            if n.get("state") == "removed":
                continue
            seen = self.heartbeats.get(nid)
            fresh = seen is not None and now - seen[0] < LIVENESS_S
            out[nid] = {
                "replicas": sum(nid in (*g["voters"], *g["learners"])
                                for g in state.get("groups", {}).values()),
                "leaders": sum(r.leader == nid for r in reports.values()),
                "data_bytes": seen[1].get("data_bytes") if fresh and seen is not None else None,
            }
        return out

    async def rebalance(self, dry_run: bool) -> dict[str, Any]:
        """The plan on the PD's view (``dry_run``: nothing changes), or one executor
        pass now (operators started; their progress in :meth:`progress`)."""
        obs = await self.observation()
        if dry_run:
            ops = plan(obs.view)
            return {
                "dry_run": True,
                "node": self.node.node_id,
                "view": {
                    "nodes": [{"id": n.id, "state": n.state} for n in obs.view.nodes],
                    "groups": [{"group": g.id, "voters": list(g.voters),
                                "learners": list(g.learners), "leader": g.leader,
                                "conf_ver": g.conf_ver} for g in obs.view.groups],
                    "replicas": obs.view.replicas,
                    "sources": {"liveness": "heartbeats to the placement driver",
                                "replicas": "the placement driver's state",
                                "leaders": "heartbeats"},
                },
                "operators": [
                    {"kind": op.kind, "group": op.group, "node": op.node, "target": op.target,
                     "conf_ver": op.conf_ver, "reason": op.reason, "description": op.describe()}
                    for op in ops],
            }
        async with self._pass_lock:
            result = await self.executor.run_once(self.observation)
        return {"dry_run": False, "node": self.node.node_id,
                "started": [r.to_dict(time.monotonic()) for r in result.started],
                "balanced": result.balanced, "progress": self.progress()}

    async def record_ranges(self) -> None:
        """Record the range table in the PD's state when the groups' records show a
        newer one: the whole ring, each range with its group and the version it was
        received at. Only a settled ring is recorded (covered exactly once, nothing
        frozen); the records stay the truth for every request."""
        seen_at, records = self._records
        if time.monotonic() - seen_at > 2.0:
            try:
                records = {o.group: o for o in await self.node._ownerships()}
            except RaftmemError:
                return
            self._records = (time.monotonic(), records)
        if not records or not covers_ring_once([o.to_dict() for o in records.values()]) \
                or any(r.frozen for o in records.values() for r in o.ranges):
            return
        version = max(o.version for o in records.values())
        if version <= int((self.local_state().get("ranges") or {}).get("version") or 0):
            return
        table = sorted(((r.start, r.end, g, r.version) for g, o in records.items()
                        for r in o.ranges))
        res = await self.propose(pdstate.set_ranges(version, [
            {"start": format_point(a), "end": format_point(b), "group": g, "version": v}
            for a, b, g, v in table]))
        log.info("pd_ranges_recorded", version=version, ranges=len(table), ok=res.get("ok"))

    async def reconcile(self) -> None:
        """Record a group's configuration as its leader reports it, when the PD's
        record differs and no operator is working on the group (one that failed
        between a Raft change and its record left them apart: jepsen_like track
        record #10; the executor refuses to act on a record Raft contradicts)."""
        busy = {r.op.group for r in self.executor.running()}
        groups = self.local_state().get("groups", {})
        now = time.monotonic()
        for gid, rep in self.reports().items():
            g = groups.get(str(gid))
            if g is None or gid in busy or rep.leader is None:
                continue
            seen = self.heartbeats.get(rep.leader)
            if seen is None or now - seen[0] > 2 * TICK_S:
                continue  # only a fresh report of the leader
            voters = sorted(rep.voters())
            learners = sorted(n for n, r in rep.replicas.items() if r.role == LEARNER)
            if not voters or (voters, learners) == (sorted(g["voters"]), sorted(g["learners"])):
                continue
            res = await self.propose(pdstate.set_group(gid, voters, learners, g["conf_ver"]))
            self.reconciled += 1
            log.warning("pd_record_reconciled", group=gid, record=g["voters"],
                        raft=voters, learners=learners, ok=res.get("ok"))

    async def finish_removals(self) -> None:
        """Draining nodes that hold nothing any more are removed from the registry."""
        holding: dict[str, int] = {}
        for g in self.state.get("groups", {}).values():
            for n in [*g["voters"], *g["learners"]]:
                holding[n] = holding.get(n, 0) + 1
        for nid, n in self.state.get("nodes", {}).items():
            if n["state"] == "draining" and not holding.get(nid):
                await self.propose(pdstate.remove_node(nid))

    # -- the internal API (what other nodes ask of this one) ------------------------------

    async def handle(self, action: str, body: Mapping[str, Any]) -> Any:
        host = self.node.host
        if action == "heartbeat":
            if not self.hosts_pd():
                raise Unavailable("this node does not host the placement driver")
            self.receive_heartbeat(dict(body))
            return {"state": self.local_state()}
        if action == "state":
            return {"state": self.local_state() if self.hosts_pd() else self.state}
        if action == "describe":
            return await self.node.describe()
        if action in ("rebalance", "operators", "register", "drain", "groups_per_node"):
            if not self.is_pd_leader():
                raise Unavailable("this node does not lead the placement driver",
                                  code="not_leader")
            if action == "operators":
                return self.progress()
            if action == "register":
                return await self.register(str(body.get("id")), str(body.get("api")),
                                           str(body.get("raft")))
            if action == "drain":
                return await self.drain(str(body.get("id")))
            if action == "groups_per_node":
                res = await self.propose(pdstate.set_groups_per_node(body.get("groups_per_node")))
                if (res.get("error") or {}).get("code") == "not_bootstrapped":
                    raise Unavailable("the placement driver is starting; retry shortly",
                                      code="not_bootstrapped")
                return _ok_or_raise(res)
            return await self.rebalance(bool(body.get("dry_run")))
        group = body.get("group")
        if not isinstance(group, int) or isinstance(group, bool):
            raise ValidationError("group must be an integer", field="group")
        if action == "create_replica":
            voters = [str(v) for v in body.get("voters") or []]
            old = host.replicas.get(group)
            if old is not None and (old.removed or not old.learner):
                # A replica from an earlier membership (removed, or a voter the
                # group no longer has): not a learner to reuse; a fresh one.
                await host.drop_replica(group)
            for v in voters:
                addr = self.api_address(v)
                n = self.state.get("nodes", {}).get(v)
                if addr is not None and n is not None:
                    await host.add_peer(v, parse_addr(n["raft"]))
            return {"created": await host.create_replica(group, voters, learner=True)}
        if action == "create_group":
            # A voter of a new, empty group (raftmem/placement/planner.py, rule 5).
            voters = [str(v) for v in body.get("voters") or []]
            if self.node.node_id not in voters:
                raise ValidationError(f"node {self.node.node_id} is not among {voters}",
                                      field="voters")
            for v in voters:
                n = self.state.get("nodes", {}).get(v)
                if v != self.node.node_id and n is not None:
                    await host.add_peer(v, parse_addr(n["raft"]))
            old = host.replicas.get(group)
            if old is not None and old.learner:
                await host.drop_replica(group)
            return {"created": await host.create_replica(group, voters, learner=False)}
        if action == "add_learner":
            node = str(body.get("node"))
            n = self.state.get("nodes", {}).get(node)
            if n is not None:
                await host.add_peer(node, parse_addr(n["raft"]))
            return {"added": await host.add_learner(group, node)}
        if action == "drop_replica":
            return {"dropped": await host.drop_replica(group)}
        if action == "membership":
            act, node = str(body.get("action")), str(body.get("node"))
            if act not in ("add", "rem"):
                raise ValidationError("action must be add or rem", field="action")
            r = host.replicas.get(group)
            if r is not None and (act == "add" and node in r.members()
                                  or act == "rem" and node not in r.members()):
                return {"changed": False}  # already so: idempotent
            try:
                await asyncio.wait_for(host.change_membership(group, act, node), 10)
            except ProposalFailed as e:
                if e.definite:
                    raise Unavailable(f"membership change of group {group} refused: {e.reason}",
                                      code="membership_refused") from None
                raise CommitTimeout(f"membership change of group {group}: {e.reason}",
                                    group=group) from None
            except TimeoutError:
                raise CommitTimeout(f"membership change of group {group}: no commit within 10 s",
                                    group=group) from None
            return {"changed": True}
        if action == "transfer":
            target = str(body.get("target"))
            r = host.replicas.get(group)
            sent_before = r.transfers_started if r is not None else 0
            why = await host.transfer_leadership(group, target)
            if why is None and r is not None:
                # Under way: the leader waits (briefly) for the target to catch
                # up. Answer how it ended, so that one that gave up is asked again.
                deadline = time.monotonic() + 3.0
                while r.transferring() and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                if r.transferring():
                    why = "still_waiting"
                elif r.transfers_started == sent_before:
                    why = "gave_up"  # the target did not catch up in time
            return {"started": why is None, "reason": why}
        raise ValidationError(f"unknown placement action {action!r}", field="action")
