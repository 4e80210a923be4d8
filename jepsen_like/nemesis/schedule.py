"""The nemesis schedule: when each fault starts and ends, drawn from one seed.

Pure: no clock, no I/O. The same seed, nemeses, duration and cluster size give
the same schedule, so a run that found a bug can be replayed fault for fault
(`--seed`). What a fault hits is drawn here too (the partition mode, the node
order, the group whose leader to target); only "the leader of group g" is
resolved when the fault starts, because leadership is runtime state.

Shape (Jepsen's usual alternation): a healthy stretch, then one fault, then a
healthy stretch, ... Faults never overlap, so every fault's heal is exact and
the timeline reads as one fault at a time. With several nemeses the faults take
turns in a seeded order, so a short run still exercises each of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

PARTITION_MODES = ("halves", "isolate", "leader", "ring", "bridge")
PROCESS_TARGETS = ("random", "leader")
REBALANCE_ACTIONS = ("transfer", "drain", "move_range")


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: `nemesis` is active from `start` to `end` (seconds into the chaos phase)."""

    start: float
    end: float
    nemesis: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start, 3),
            "end_s": round(self.end, 3),
            "nemesis": self.nemesis,
            "params": self.params,
        }


def draw_params(
    rng: random.Random,
    nemesis: str,
    nodes: list[str],
    groups: int,
    partition_modes: tuple[str, ...] = PARTITION_MODES,
) -> dict[str, Any]:
    """What one fault of `nemesis` hits, drawn from `rng`."""
    order = rng.sample(nodes, len(nodes))
    group = rng.randrange(groups)
    if nemesis == "partition":
        return {"mode": rng.choice(list(partition_modes)), "order": order, "group": group}
    if nemesis in ("kill", "pause"):
        # A minority at most: a fault that takes a majority away only shows
        # that a majority is needed, and a single node is the common case.
        most = max(1, (len(nodes) - 1) // 2)
        return {
            "target": rng.choice(PROCESS_TARGETS),
            "count": rng.randint(1, most),
            "order": order,
            "group": group,
        }
    if nemesis == "rebalance":
        # A leadership transfer (of group `pick` mod the groups the PD knows, its own
        # included; to the first other voter in `order`) or a drain of the first up
        # node in `order`, re-registered at the heal.
        return {
            "action": rng.choice(REBALANCE_ACTIONS),
            "order": order,
            "pick": rng.randrange(1 << 16),
        }
    # membership: the step (join, drain, re-add) follows from the cluster's state when
    # the fault starts; `order` decides which node a drain takes.
    return {"order": order, "group": group}


def make_schedule(
    seed: int,
    nemeses: list[str],
    duration: float,
    nodes: list[str],
    groups: int,
    fault_s: tuple[float, float] = (5.0, 10.0),
    healthy_s: tuple[float, float] = (5.0, 10.0),
    partition_modes: tuple[str, ...] = PARTITION_MODES,
) -> list[Fault]:
    """The faults of a chaos phase of `duration` seconds, in order.

    A fault that would end after `duration` is cut short at it (the chaos
    phase heals everything when it ends anyway); one that would start in the
    last second is left out.
    """
    active = [n for n in nemeses if n != "none"]
    if not active:
        return []
    rng = random.Random(seed)
    turns = rng.sample(active, len(active))
    faults: list[Fault] = []
    t = rng.uniform(*healthy_s) / 2  # a short healthy start: a baseline before the first fault
    while t < duration - 1.0:
        name = turns[len(faults) % len(turns)]
        length = rng.uniform(*fault_s)
        params = draw_params(rng, name, nodes, groups, partition_modes)
        faults.append(Fault(t, min(t + length, duration), name, params))
        t += length + rng.uniform(*healthy_s)
    return faults


def parse_range(text: str) -> tuple[float, float]:
    """`"5,10"` → (5.0, 10.0); `"7"` → (7.0, 7.0)."""
    parts = [p for p in text.replace(":", ",").split(",") if p.strip()]
    if len(parts) == 1:
        lo = hi = float(parts[0])
    elif len(parts) == 2:
        lo, hi = float(parts[0]), float(parts[1])
    else:
        raise ValueError(f"expected LO,HI seconds, not {text!r}")
    if lo <= 0 or hi < lo:
        raise ValueError(f"expected 0 < LO <= HI, not {text!r}")
    return lo, hi
