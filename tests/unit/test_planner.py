"""The placement planner on drawn clusters: a table in, operators out."""

from __future__ import annotations

from dataclasses import replace as _replace

from raftmem.placement.planner import (
    RING,
    ClusterView,
    parse_view,
    plan,
    replica_counts,
    settled,
)


def kinds(text: str) -> list[str]:
    return [f"{op.kind} g{op.group} {op.node}" + (f"->{op.target}" if op.target else "")
            for op in plan(parse_view(text))]


def test_a_balanced_cluster_needs_nothing() -> None:
    assert kinds("""
        nodes: n1 up, n2 up, n3 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1
        1     | n1 n2 n3 |          | n2
        2     | n1 n2 n3 |          | n3
    """) == []


def test_a_joining_node_gets_replicas_learner_first() -> None:
    ops = kinds("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1
        1     | n1 n2 n3 |          | n2
        2     | n1 n2 n3 |          | n3
        3     | n1 n2 n3 |          | n1
    """)
    # 12 replicas over 4 nodes: n4 should end with 3; learners come first, one per group.
    adds = [o for o in ops if o.startswith("add_learner")]
    assert adds == ["add_learner g0 n4", "add_learner g1 n4", "add_learner g2 n4"]
    # n1 leads two of four groups, but moving one to n2 (which leads one) would only
    # swap which of them leads two: leadership waits for n4 to become a voter.
    assert [o for o in ops if o not in adds] == []


def test_leadership_is_not_passed_back_and_forth() -> None:
    # Both orders of the same imbalance: no move, since none narrows the gap
    # (the old rule moved g3 n1->n2, then n2->n1, and so on).
    for leader in ("n1", "n2"):
        assert kinds(f"""
            nodes: n1 up, n2 up, n3 up, n4 up
            group | voters   | learners | leader
            0     | n1 n2 n3 |          | n1
            1     | n1 n2 n3 |          | n2
            2     | n1 n2 n3 |          | n3
            3     | n1 n2 n3 |          | {leader}
        """) == ["add_learner g0 n4", "add_learner g1 n4", "add_learner g2 n4"], leader
    # When the move narrows the gap (2 vs 0), it is made.
    assert kinds("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n4 |          | n1
        1     | n1 n3 n4 |          | n1
        2     | n2 n3 n4 |          | n2
        3     | n1 n2 n3 |          | n3
    """) == ["transfer_leader g0 n1->n4"]


def test_a_caught_up_learner_is_promoted_and_nothing_else_touches_its_group() -> None:
    assert kinds("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 | n4*      | n1
        1     | n1 n2 n3 | n4       | n2
    """) == ["promote_learner g0 n4"]


def test_a_fourth_voter_is_removed_from_the_most_loaded_node_not_its_leader() -> None:
    ops = plan(parse_view("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters      | learners | leader
        0     | n1 n2 n3 n4 |          | n4
        1     | n1 n2 n3    |          | n1
    """))
    assert (ops[0].kind, ops[0].group) == ("remove_replica", 0)
    assert ops[0].node in ("n1", "n2", "n3")


def test_a_drained_node_is_replaced_then_removed_with_leadership_moved_first() -> None:
    assert kinds("""
        nodes: n1 up, n2 up, n3 draining, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n3
    """) == ["add_learner g0 n4"]
    assert kinds("""
        nodes: n1 up, n2 up, n3 draining, n4 up
        group | voters      | learners | leader
        0     | n1 n2 n3 n4 |          | n3
    """) == ["transfer_leader g0 n3->n1"]
    assert kinds("""
        nodes: n1 up, n2 up, n3 draining, n4 up
        group | voters      | learners | leader
        0     | n1 n2 n3 n4 |          | n1
    """) == ["remove_replica g0 n3"]


def test_a_down_node_with_no_spare_is_left_alone() -> None:
    assert kinds("""
        nodes: n1 up, n2 up, n3 down
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1
    """) == []


def test_leaders_are_balanced() -> None:
    ops = kinds("""
        nodes: n1 up, n2 up, n3 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1
        1     | n1 n2 n3 |          | n1
        2     | n1 n2 n3 |          | n1
    """)
    assert ops == ["transfer_leader g0 n1->n2", "transfer_leader g1 n1->n3"]


def test_every_operator_carries_the_conf_ver_it_was_planned_against() -> None:
    view = parse_view("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1
    """)
    assert all(op.conf_ver == 1 for op in plan(view))
    assert replica_counts(view)["n4"] == 0


def test_a_suspect_node_keeps_its_replicas_and_gets_no_new_ones() -> None:
    # n4 has been silent for a few seconds (a restart after kill -9, say): its
    # replicas are not replaced yet, and it is not a target for new ones.
    assert kinds("""
        nodes: n1 up, n2 up, n3 up, n4 suspect
        group | voters   | learners | leader
        0     | n1 n2 n4 |          | n1
        1     | n2 n3 n4 |          | n2
        2     | n1 n3 n4 |          | n3
        3     | n1 n2 n3 |          | n1
    """) == []
    # Once down, they are replaced (learner first) on the least loaded live node.
    assert kinds("""
        nodes: n1 up, n2 up, n3 up, n4 down
        group | voters   | learners | leader
        0     | n1 n2 n4 |          | n1
        1     | n2 n3 n4 |          | n2
        2     | n1 n3 n4 |          | n3
        3     | n1 n2 n3 |          | n1
    """) == ["add_learner g0 n3", "add_learner g1 n1", "add_learner g2 n2"]


def test_a_group_waiting_on_a_learner_plans_nothing_but_is_not_settled() -> None:
    # n4's learner has not caught up: nothing to do for group 0 yet, and the
    # executor must not call that balanced (it reported "balanced" with a
    # group left at four voters once).
    view = parse_view("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 | n4       | n1
        1     | n1 n2 n4 |          | n2
        2     | n1 n3 n4 |          | n3
    """)
    assert [op.kind for op in plan(view)] == []
    assert not settled(view)
    over = parse_view("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters      | learners | leader
        0     | n1 n2 n3 n4 |          | n1
    """)
    assert not settled(over)
    assert settled(parse_view("""
        nodes: n1 up, n2 up, n3 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1
    """))


# --- groups per node and ring balance (rules 5 and 6) ---------------------------------------

Q = RING // 4


def ringed(view: ClusterView, ranges: dict[int, list[tuple[int, int]]],
           gpn: int | None = None) -> ClusterView:
    """``view`` with each data group's owned ranges (and a groups-per-node target)."""
    groups = tuple(_replace(g, ranges=tuple(ranges[g.id])) if g.id in ranges else g
                   for g in view.groups)
    return _replace(view, groups=groups, groups_per_node=gpn)


FOUR_NODES = """
    nodes: n1 up, n2 up, n3 up, n4 up
    group | voters   | learners | leader
    0     | n1 n2 n3 |          | n1
    1     | n2 n3 n4 |          | n2
    2     | n1 n3 n4 |          | n3
    3     | n1 n2 n4 |          | n4
"""


def test_a_groups_per_node_target_creates_a_group_on_the_least_loaded_nodes() -> None:
    view = ringed(parse_view(FOUR_NODES), {0: [(0, Q)], 1: [(Q, 2 * Q)], 2: [(2 * Q, 3 * Q)],
                                           3: [(3 * Q, RING)]}, gpn=4)
    ops = plan(view)
    # 4 per node on 4 nodes, 3 replicas each: ceil(16 / 3) = 6 data groups wanted.
    assert [(op.kind, op.group, op.voters) for op in ops] == [
        ("create_group", 4, ("n1", "n2", "n3"))]
    assert "target 6" in ops[0].reason
    assert plan(_replace(view, groups_per_node=3)) == []  # ceil(12 / 3) = 4: enough
    assert plan(_replace(view, groups_per_node=None)) == []


def test_no_group_is_created_while_a_groups_ranges_are_unknown() -> None:
    view = ringed(parse_view(FOUR_NODES), {0: [(0, Q)], 1: [(Q, 2 * Q)], 2: [(2 * Q, RING)]},
                  gpn=4)
    assert [op.kind for op in plan(view)] == []


def test_an_empty_group_gets_half_of_the_widest_range() -> None:
    view = ringed(parse_view(FOUR_NODES), {0: [(0, 2 * Q)], 1: [(2 * Q, 3 * Q)],
                                           2: [(3 * Q, RING)], 3: []}, gpn=3)
    (op,) = plan(view)
    assert (op.kind, op.group, op.target, op.span) == ("move_range", 0, "3", (Q, 2 * Q))
    assert op.node == "n1" and "g3 owns 0.0%" in op.reason
    # Balanced enough (no group below half the mean share): nothing to move.
    even = ringed(parse_view(FOUR_NODES), {0: [(0, Q)], 1: [(Q, 2 * Q)], 2: [(2 * Q, 3 * Q)],
                                           3: [(3 * Q, RING)]}, gpn=3)
    assert plan(even) == []
    # Without a groups-per-node target ranges move only when asked.
    assert plan(_replace(view, groups_per_node=None)) == []


def test_a_move_left_half_done_is_finished_before_anything_else() -> None:
    view = ringed(parse_view(FOUR_NODES), {0: [(0, 2 * Q)], 1: [(2 * Q, 3 * Q)],
                                           2: [(3 * Q, RING)], 3: []}, gpn=3)
    groups = tuple(_replace(g, moving=((Q // 2, Q, 2),)) if g.id == 1 else g
                   for g in view.groups)
    (op,) = plan(_replace(view, groups=groups))
    assert (op.kind, op.group, op.target, op.span) == ("move_range", 1, "2", (Q // 2, Q))


def test_ring_balance_waits_for_the_groups_other_operators() -> None:
    view = parse_view("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 | n4       | n1
        1     | n2 n3 n4 |          | n2
    """)
    view = ringed(view, {0: [(0, RING)], 1: []}, gpn=1)
    # Group 0 waits on its learner; the move is planned once it is free.
    assert [op.kind for op in plan(view)] == []
