"""The routing table: hash ranges -> shard groups, group -> replicas, with an epoch.

Pure data and functions. The initial table is fixed at cluster creation; the
epoch ``(version, conf_ver)`` travels with every routed request, and a group
refuses a request for a key it does not own, or routed with a table older than
its range (``epoch_mismatch``). The router then rebuilds its table from the
groups' own ownership records (:func:`merge_ownership`) and routes again.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from raftmem.keyspace import OwnedRange, Ownership, format_point
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

    def ownership(self, group: int) -> Ownership:
        """What ``group`` owns by this table, every range at the table's version.

        For the initial table this is the group's genesis ownership: a function
        of the group count alone, so every replica computes the same one.
        """
        return Ownership(
            group, self.version, self.conf_ver,
            tuple(OwnedRange(r.start, r.end, self.version) for r in self.ranges
                  if r.group == group),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "epoch": {"version": self.version, "conf_ver": self.conf_ver},
            "ranges": [
                {"start": format_point(r.start), "end": format_point(r.end), "group": r.group}
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


def merge_ownership(table: RoutingTable, owned: Iterable[Ownership]) -> RoutingTable:
    """``table`` corrected by the groups' own ownership records.

    Each point of the ring goes to the group whose record claims it with the
    highest range version (then the highest record epoch, then the lowest group
    id: two claims at one version are a bug elsewhere, but the answer stays
    deterministic). A point no record claims (a range in the middle of a move,
    or a group this node could not read) keeps its old group: that group
    refuses if it is wrong, and the router asks again. The new table's version
    is the highest seen, so requests routed with it pass every range's check.
    """
    owns = list(owned)
    points = {0, RING_SIZE}
    for r in table.ranges:
        points.update((r.start, r.end))
    for o in owns:
        for orng in o.ranges:
            points.update((orng.start, orng.end))
    cuts = sorted(points)
    segments: list[tuple[int, int, int, object]] = []  # start, end, group, origin
    for a, b in itertools.pairwise(cuts):
        best: tuple[tuple[int, int, int, int], int, object] | None = None
        for o in owns:
            claim = o.range_for(a)
            if claim is not None:
                rank = (claim.version, o.version, o.conf_ver, -o.group)
                if best is None or rank > best[0]:
                    best = (rank, o.group, ("own", o.group, claim.start))
        if best is not None:
            group, origin = best[1], best[2]
        else:
            group = table.group_for_hash(a)
            origin = ("table", table.ranges[_range_index(table, a)].start)
        if segments and segments[-1][2] == group and segments[-1][3] == origin:
            start = segments[-1][0]
            segments[-1] = (start, b, group, origin)
        else:
            segments.append((a, b, group, origin))
    version = max([table.version, *(o.version for o in owns)])
    conf_ver = max([table.conf_ver, *(o.conf_ver for o in owns)])
    return RoutingTable(
        ranges=tuple(Range(a, b, g) for a, b, g, _ in segments),
        replicas=table.replicas, version=version, conf_ver=conf_ver,
    )


def _range_index(table: RoutingTable, h: int) -> int:
    return bisect.bisect_right([r.start for r in table.ranges], h) - 1
