"""The read-decision table: tier x role x lease state x applied index -> decision."""

from __future__ import annotations

import pytest

from raftmem.readpolicy import Decision, ReplicaView, decide, effective_tier

B, S, W, R = Decision.BARRIER, Decision.SERVE, Decision.WAIT, Decision.REJECT
LEADER_OK = ReplicaView("leader", 100, lease_valid=True, noop_applied=True)
LEADER_NO_LEASE = ReplicaView("leader", 100, lease_valid=False, noop_applied=True)
LEADER_NO_NOOP = ReplicaView("leader", 100, lease_valid=True, noop_applied=False)
FOLLOWER = ReplicaView("follower", 100, staleness_ms=40)
FOLLOWER_STALE = ReplicaView("follower", 100, staleness_ms=5000)

TABLE = [
    # tier, view, kwargs, expected
    ("linearizable", LEADER_OK, {}, B),
    ("linearizable", FOLLOWER, {}, B),
    ("lease", LEADER_OK, {}, S),
    ("lease", LEADER_NO_LEASE, {}, B),
    ("lease", LEADER_NO_NOOP, {}, B),
    ("lease", FOLLOWER, {}, B),
    ("session", FOLLOWER, {"session_index": 100}, S),
    ("session", FOLLOWER, {"session_index": 50}, S),
    ("session", FOLLOWER, {"session_index": 101}, W),
    ("session", FOLLOWER, {"session_index": 101, "waited_ms": 199}, W),
    ("session", FOLLOWER, {"session_index": 101, "waited_ms": 200}, B),
    ("session", LEADER_OK, {"session_index": 0}, S),
    ("eventual", FOLLOWER, {}, S),
    ("eventual", FOLLOWER_STALE, {}, S),
    ("eventual", FOLLOWER_STALE, {"max_staleness_ms": 1000}, R),
    ("eventual", FOLLOWER, {"max_staleness_ms": 1000}, S),
    ("eventual", LEADER_NO_LEASE, {"max_staleness_ms": 0}, S),
]


@pytest.mark.parametrize("tier,view,kwargs,expected", TABLE)
def test_decision_table(tier: str, view: ReplicaView, kwargs: dict, expected: Decision) -> None:
    assert decide(tier, view, **kwargs) is expected


def test_unknown_tier_is_an_error() -> None:
    with pytest.raises(ValueError):
        decide("strong-ish", FOLLOWER)


@pytest.mark.parametrize("requested,floor,expected", [
    ("eventual", None, "eventual"),
    ("eventual", "linearizable", "linearizable"),
    ("linearizable", "eventual", "linearizable"),
    ("session", "lease", "lease"),
    ("lease", "session", "lease"),
])
def test_floors_raise_never_lower(requested: str, floor: str | None, expected: str) -> None:
    assert effective_tier(requested, floor) == expected
