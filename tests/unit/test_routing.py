from __future__ import annotations

from collections import Counter

import pytest

from raftmem.placement.ring import RING_SIZE, hash_key
from raftmem.placement.routing import initial_table, place_replicas


def test_hash_is_stable_across_processes() -> None:
    # Fixed expectations: a change here would move every stored memory.
    assert hash_key("ns", "a") == hash_key("ns", "a")
    assert hash_key("ns", "a") != hash_key("ns", "b")
    assert hash_key("agents", "m1") == int.from_bytes(
        __import__("hashlib").blake2b(b"agents/m1", digest_size=8).digest(), "big")


def test_ranges_cover_the_ring_without_gaps() -> None:
    t = initial_table(["n1", "n2", "n3"], 4, 3)
    assert t.ranges[0].start == 0 and t.ranges[-1].end == RING_SIZE
    for a, b in zip(t.ranges, t.ranges[1:], strict=False):
        assert a.end == b.start
    assert [r.group for r in t.ranges] == [0, 1, 2, 3]
    assert t.group_for_hash(0) == 0 and t.group_for_hash(RING_SIZE - 1) == 3
    assert t.epoch == (1, 1)


def test_keys_spread_over_groups() -> None:
    t = initial_table(["n1", "n2", "n3"], 4, 3)
    counts = Counter(t.group_for("ns", f"id-{i}") for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 800


def test_replicas_on_distinct_nodes() -> None:
    p = place_replicas(["n1", "n2", "n3", "n4", "n5"], 6, 3)
    for members in p.values():
        assert len(set(members)) == 3
    per_node = Counter(n for m in p.values() for n in m)
    assert max(per_node.values()) - min(per_node.values()) <= 1
    with pytest.raises(ValueError):
        place_replicas(["n1", "n2"], 1, 3)
