"""The placement planner: from a view of the cluster, the operators that fix it. Pure.

Groundwork for the placement driver (docs/placement.md): it plans, it never
acts. An executor (not built yet) runs each operator one safe step at a time
and judges completion from reported state; every operator carries the group's
``conf_ver`` it was planned against and is cancelled if that changed.

Rules, in priority order (one operator per group per pass: one membership
change at a time):

1. A replica on a node that is down or draining is replaced: a learner is added
   on the least-loaded eligible node; once it is caught up it is promoted, and
   only then is the old replica removed (leadership is moved away first).
2. A group with fewer voters than the replica target gets a learner.
3. Replica balance: while a node holds more than ``ceil(mean)`` replicas and
   another fewer than ``floor(mean)``, one replica moves (learner first).
4. Leader balance: leaders per node within one of the mean.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

LIVE = "up"
GONE = ("down", "draining")


@dataclass(frozen=True)
class NodeInfo:
    id: str
    # up | down | draining | suspect (silent for a while: given nothing new,
    # but its replicas are not replaced yet)
    state: str = LIVE


@dataclass(frozen=True)
class GroupInfo:
    id: int
    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    leader: str | None = None
    conf_ver: int = 1
    caught_up: tuple[str, ...] = ()  # learners whose log has reached the leader's commit index


@dataclass(frozen=True)
class ClusterView:
    nodes: tuple[NodeInfo, ...]
    groups: tuple[GroupInfo, ...]
    replicas: int = 3

    def live(self) -> list[str]:
        return sorted(n.id for n in self.nodes if n.state == LIVE)

    def state(self, node: str) -> str:
        return next((n.state for n in self.nodes if n.id == node), "down")


@dataclass(frozen=True)
class Operator:
    kind: str  # add_learner | promote_learner | remove_replica | transfer_leader
    group: int
    node: str
    conf_ver: int
    reason: str
    target: str | None = None  # transfer_leader: the new leader
    steps: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        arrow = f" -> {self.target}" if self.target else ""
        return f"{self.kind}(g{self.group}, {self.node}{arrow}): {self.reason}"


def replica_counts(view: ClusterView) -> Counter[str]:
    c: Counter[str] = Counter({n: 0 for n in view.live()})
    for g in view.groups:
        for n in (*g.voters, *g.learners):
            c[n] += 1
    return c


def leader_counts(view: ClusterView) -> Counter[str]:
    c: Counter[str] = Counter({n: 0 for n in view.live()})
    for g in view.groups:
        if g.leader is not None:
            c[g.leader] += 1
    return c


def _least_loaded(view: ClusterView, g: GroupInfo, counts: Counter[str]) -> str | None:
    members = set(g.voters) | set(g.learners)
    candidates = [n for n in view.live() if n not in members]
    return min(candidates, key=lambda n: (counts[n], n)) if candidates else None


def settled(view: ClusterView) -> bool:
    """No group has a learner in flight or more voters than the replica target:
    nothing is half done (a plan may still be empty while a group waits, e.g.
    on a learner that has not caught up)."""
    return all(not g.learners and len(g.voters) <= view.replicas for g in view.groups)


def plan(view: ClusterView) -> list[Operator]:
    ops: list[Operator] = []
    counts = replica_counts(view)
    busy: set[int] = set()

    def add(op: Operator) -> None:
        ops.append(op)
        busy.add(op.group)
        if op.kind == "add_learner":
            counts[op.node] += 1
        elif op.kind == "remove_replica":
            counts[op.node] -= 1

    for g in view.groups:
        # A learner in flight: the only next step for this group is its promotion.
        if g.learners:
            for learner in g.learners:
                if learner in g.caught_up and view.state(learner) == LIVE:
                    add(Operator("promote_learner", g.id, learner, g.conf_ver,
                                 "learner caught up with the leader"))
                    break
            busy.add(g.id)
            continue
        gone = [n for n in g.voters if view.state(n) in GONE]
        healthy = [n for n in g.voters if view.state(n) not in GONE]
        if gone and len(healthy) >= view.replicas:
            # The replacement is already a voter: remove the old replica, after
            # moving leadership off it.
            victim = gone[0]
            if g.leader == victim:
                target = next(n for n in g.voters if n not in gone)
                add(Operator("transfer_leader", g.id, victim, g.conf_ver,
                             "leader is on a node being removed", target=target))
            else:
                add(Operator("remove_replica", g.id, victim, g.conf_ver,
                             f"node {victim} is {view.state(victim)}"))
            continue
        if len(healthy) < view.replicas:
            node = _least_loaded(view, g, counts)
            if node is not None:
                why = (f"replace replica on {gone[0]} ({view.state(gone[0])})" if gone
                       else f"{len(healthy)} of {view.replicas} replicas")
                add(Operator("add_learner", g.id, node, g.conf_ver, why))
            continue
        if len(g.voters) > view.replicas and not gone:
            extra = max(g.voters, key=lambda n: (counts[n], n))
            if g.leader == extra:
                target = next(n for n in g.voters if n != extra)
                add(Operator("transfer_leader", g.id, extra, g.conf_ver,
                             "leader is on the replica to remove", target=target))
            else:
                add(Operator("remove_replica", g.id, extra, g.conf_ver,
                             f"{len(g.voters)} voters, target {view.replicas}"))

    live = view.live()
    if live:
        mean = sum(counts[n] for n in live) / len(live)
        for g in view.groups:
            if g.id in busy:
                continue
            hi = max(live, key=lambda n: (counts[n], n))
            lo = min(live, key=lambda n: (counts[n], n))
            if counts[hi] <= math.ceil(mean) and counts[lo] >= math.floor(mean):
                break
            if hi in g.voters and lo not in g.voters and counts[hi] - counts[lo] > 1:
                add(Operator("add_learner", g.id, lo, g.conf_ver,
                             f"balance replicas: {hi} has {counts[hi]}, {lo} has {counts[lo]}"))
                # The replica moves from hi: once the learner is a voter, hi's
                # is the one removed. Counting it gone keeps this pass from
                # giving lo more than its share (which a later pass would undo).
                counts[hi] -= 1

        leaders = leader_counts(view)
        lmean = sum(leaders[n] for n in live) / len(live)
        for g in view.groups:
            if g.id in busy or g.leader is None:
                continue
            if leaders[g.leader] > math.floor(lmean):
                # Only a move that narrows the gap between the two nodes (so no
                # leadership is passed back and forth), and one is made whenever
                # it does: a node leading none gets one from a node leading two
                # even when two is within the mean's ceiling.
                options = [n for n in g.voters if n in live
                           and n != g.leader and leaders[n] + 1 < leaders[g.leader]]
                if options:
                    to = min(options, key=lambda n: (leaders[n], n))
                    add(Operator("transfer_leader", g.id, g.leader, g.conf_ver,
                                 f"balance leaders: {g.leader} leads {leaders[g.leader]}", target=to))
                    leaders[g.leader] -= 1
                    leaders[to] += 1
    return ops


def parse_view(text: str, replicas: int = 3) -> ClusterView:
    """A cluster drawn as a table (for tests and docs)::

        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1

    A learner marked ``*`` (``n4*``) is caught up.
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    nodes = tuple(NodeInfo(*part.split()) for part in lines[0].split(":", 1)[1].split(","))
    groups = []
    for ln in lines[2:]:
        gid, voters, learners, leader = (c.strip() for c in ln.split("|"))
        ls = tuple(x.rstrip("*") for x in learners.split())
        caught = tuple(x.rstrip("*") for x in learners.split() if x.endswith("*"))
        groups.append(GroupInfo(int(gid), tuple(voters.split()), ls, leader or None, caught_up=caught))
    return ClusterView(nodes, tuple(groups), replicas)
