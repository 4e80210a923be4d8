"""How a read is served: one pure decision per (tier, replica state). No I/O, no clock.

The node gathers the facts (``ReplicaView``) and acts on the answer:

=============  ==========================================================  ==========
tier           condition                                                   decision
=============  ==========================================================  ==========
linearizable   always                                                      BARRIER
lease          leader, lease valid, own term's no-op applied               SERVE
lease          otherwise                                                   BARRIER
session        applied index >= the token's index for this group           SERVE
session        behind, and the wait budget is not spent                    WAIT
session        behind, budget spent                                        BARRIER
eventual       no bound, or staleness <= max_staleness_ms                  SERVE
eventual       staleness > max_staleness_ms                                REJECT
=============  ==========================================================  ==========

BARRIER means: a read barrier through the group's log (linearizable), which is
at least as strong as every other tier, so it is always a safe fallback.
A tier may be raised by a floor (a tag policy), never lowered.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

TIERS = ("eventual", "session", "lease", "linearizable")  # weakest first


class Decision(enum.Enum):
    SERVE = "serve"  # answer from this replica's local state now
    WAIT = "wait"  # wait for this replica to apply more, then decide again
    BARRIER = "barrier"  # pass a read barrier through the log, then serve locally
    REJECT = "reject"  # definite error: the replica is too stale for the caller


@dataclass(frozen=True)
class ReplicaView:
    role: str  # "leader" | "follower"
    applied_index: int
    lease_valid: bool = False  # leader lease measured from majority-acked heartbeats
    noop_applied: bool = False  # the leader's own-term no-op entry is applied
    staleness_ms: int = 0  # time since this replica last heard from its leader (0 on the leader)


def strongest(*tiers: str) -> str:
    return max(tiers, key=TIERS.index)


def effective_tier(requested: str, floor: str | None) -> str:
    """A tag policy's floor raises the tier; an explicit weaker request never wins over it."""
    return requested if floor is None else strongest(requested, floor)


def decide(
    tier: str,
    view: ReplicaView,
    *,
    session_index: int = 0,
    waited_ms: int = 0,
    max_wait_ms: int = 200,
    max_staleness_ms: int | None = None,
) -> Decision:
    if tier == "linearizable":
        return Decision.BARRIER
    if tier == "lease":
        if view.role == "leader" and view.lease_valid and view.noop_applied:
            return Decision.SERVE
        return Decision.BARRIER
    if tier == "session":
        if view.applied_index >= session_index:
            return Decision.SERVE
        return Decision.WAIT if waited_ms < max_wait_ms else Decision.BARRIER
    if tier == "eventual":
        if max_staleness_ms is not None and view.staleness_ms > max_staleness_ms:
            return Decision.REJECT
        return Decision.SERVE
    raise ValueError(f"unknown consistency tier {tier!r}")
