"""The placement planner: from a view of the cluster, the operators that fix it. Pure.

Part of the placement driver (docs/placement.md): it plans, it never acts. The
executor (executor.py) runs each operator one safe step at a time and judges
completion from reported state; a membership operator carries the group's
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
5. Groups per node (only with a ``groups_per_node`` target): while there are
   fewer data groups than ``ceil(target * live nodes / replicas)``, one new group
   is created on the least-loaded nodes.
6. Ring balance between data groups (with a ``groups_per_node`` target, and
   when the groups' owned ranges are known): a
   move left half done (a frozen range) is finished first; then a group that
   owns less than half the mean share of the ring (a new group owns none) gets
   half of the widest range of the group that owns the most (a split and a
   move, one ``move_range``). The hash spreads keys evenly, so ring share
   stands for data share.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

RING = 1 << 64
# Data group ids are below this; the placement driver's own group is 65000.
PD_GROUP_FLOOR = 65000
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
    # Data groups: the ring ranges the group's own record owns ([start, end));
    # None for the PD's group, or when unknown this pass.
    ranges: tuple[tuple[int, int], ...] | None = None
    # Frozen ranges of a move left half done: (start, end, target group).
    moving: tuple[tuple[int, int, int], ...] = ()
    hosted: bool = True  # some voter reports a replica (False: recorded, never created)

    def width(self) -> int:
        return sum(e - s for s, e in self.ranges or ())


@dataclass(frozen=True)
class ClusterView:
    nodes: tuple[NodeInfo, ...]
    groups: tuple[GroupInfo, ...]
    replicas: int = 3
    groups_per_node: int | None = None  # data groups per node to aim for (None: no target)

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
    target: str | None = None  # transfer_leader: the new leader; move_range: the group
    steps: tuple[str, ...] = field(default=())
    voters: tuple[str, ...] = ()  # create_group: the new group's voters
    span: tuple[int, int] | None = None  # move_range: [start, end) of the ring

    def describe(self) -> str:
        if self.kind == "move_range" and self.span is not None:
            return (f"move_range(g{self.group} -> g{self.target}, "
                    f"[{self.span[0]:016x}, {_point(self.span[1])})): {self.reason}")
        if self.kind == "create_group":
            return f"create_group(g{self.group} on {' '.join(self.voters)}): {self.reason}"
        arrow = f" -> {self.target}" if self.target else ""
        return f"{self.kind}(g{self.group}, {self.node}{arrow}): {self.reason}"


def _point(p: int) -> str:
    return "end" if p >= RING else f"{p:016x}"


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
        _plan_groups(view, live, counts, busy, add)
        _plan_ranges(view, busy, add)
    return ops


def data_groups(view: ClusterView) -> list[GroupInfo]:
    return [g for g in view.groups if g.ranges is not None]


def _plan_groups(view: ClusterView, live: list[str], counts: Counter[str], busy: set[int],
                 add: Any) -> None:
    """Rule 5: create a data group while fewer exist than the groups-per-node target
    (first, finish creating one the PD recorded whose replicas never started)."""
    target = view.groups_per_node
    if not target:
        return
    for g in view.groups:
        if g.id < PD_GROUP_FLOOR and not g.hosted and g.id not in busy:
            add(Operator("create_group", g.id, g.voters[0], g.conf_ver,
                         "recorded, but no voter hosts a replica", voters=g.voters))
            return
    data = data_groups(view)
    if not target or len(live) < view.replicas or len(data) != len(
            [g for g in view.groups if g.id < PD_GROUP_FLOOR]):
        return  # no target, too few nodes, or some group's ranges unknown this pass
    want = math.ceil(target * len(live) / view.replicas)
    if len(data) >= want:
        return
    new_id = max((g.id for g in data), default=-1) + 1
    voters = tuple(sorted(sorted(live, key=lambda n: (counts[n], n))[:view.replicas]))
    add(Operator("create_group", new_id, voters[0], 0,
                 f"{len(data)} data groups, target {want} ({target} per node on {len(live)} "
                 "nodes)", voters=voters))
    for n in voters:
        counts[n] += 1


def _plan_ranges(view: ClusterView, busy: set[int], add: Any) -> None:
    """Rule 6: finish a half-done move, or give a group short of the ring half a range.
    Only with a groups-per-node target: without one, ranges move only when asked."""
    if not view.groups_per_node:
        return
    data = [g for g in data_groups(view) if g.id not in busy]
    for g in data:
        for start, end, to in g.moving:
            if to in {d.id for d in data_groups(view)}:
                add(Operator("move_range", g.id, g.leader or "", g.conf_ver,
                             "finish a move left half done", target=str(to),
                             span=(start, end)))
                return
    if len(data) < 2 or len(data) != len(data_groups(view)):
        return
    mean = RING / len(data)
    short = min(data, key=lambda g: (g.width(), g.id))
    rich = max(data, key=lambda g: (g.width(), -g.id))
    if short.width() >= mean / 2 or rich is short or not rich.ranges:
        return
    start, end = max(rich.ranges, key=lambda r: (r[1] - r[0], -r[0]))
    if end - start < 2:
        return
    mid = start + (end - start) // 2
    add(Operator("move_range", rich.id, rich.leader or "", rich.conf_ver,
                 f"g{short.id} owns {short.width() / RING:.1%} of the ring, "
                 f"g{rich.id} {rich.width() / RING:.1%}", target=str(short.id),
                 span=(mid, end)))
    busy.add(short.id)


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
