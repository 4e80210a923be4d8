"""The routing table: hash ranges -> shard groups, group -> replicas, with an epoch.

Pure data and functions. The table is fixed at cluster creation for now; the
epoch ``(version, conf_ver)`` travels with every routed request so that a
later, changing table can reject requests routed with an old one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from raftmem.placement.ring import RING_SIZE, even_splits, hash_key


@dataclass(frozen=True)
class Range:
    start: int  # inclusive
    end: int  # exclusive; RING_SIZE for the last range
    group: int


@dataclass(frozen=True)
class RoutingTable:
    ranges: tuple[Range, ...]
    replicas: dict[int, tuple[str, ...]]
    version: int = 1
    conf_ver: int = 1

    @property
    def epoch(self) -> tuple[int, int]:
        return (self.version, self.conf_ver)

    @property
    def groups(self) -> list[int]:
        return sorted(self.replicas)

    def group_for_hash(self, h: int) -> int:
        starts = [r.start for r in self.ranges]
        i = bisect.bisect_right(starts, h) - 1
        return self.ranges[i].group

    def group_for(self, namespace: str, memory_id: str) -> int:
        return self.group_for_hash(hash_key(namespace, memory_id))

    def to_dict(self) -> dict[str, object]:
        return {
            "epoch": {"version": self.version, "conf_ver": self.conf_ver},
            "ranges": [
                {"start": f"{r.start:016x}", "end": f"{r.end:016x}" if r.end < RING_SIZE else "end",
                 "group": r.group}
                for r in self.ranges
            ],
            "groups": {str(g): list(m) for g, m in sorted(self.replicas.items())},
        }


def place_replicas(nodes: list[str], groups: int, replicas: int) -> dict[int, tuple[str, ...]]:
    """Spread ``groups`` groups of ``replicas`` replicas over ``nodes``, round robin.

    Replicas of a group land on distinct nodes; with as many nodes as replicas
    every node hosts every group.
    """
    if replicas > len(nodes):
        raise ValueError(f"{replicas} replicas need at least {replicas} nodes, have {len(nodes)}")
    ordered = sorted(nodes)
    return {
        g: tuple(ordered[(g + i) % len(ordered)] for i in range(replicas)) for g in range(groups)
    }


def initial_table(nodes: list[str], groups: int, replicas: int) -> RoutingTable:
    starts = even_splits(groups)
    ends = starts[1:] + [RING_SIZE]
    ranges = tuple(Range(s, e, g) for g, (s, e) in enumerate(zip(starts, ends, strict=True)))
    return RoutingTable(ranges=ranges, replicas=place_replicas(nodes, groups, replicas))
