"""The pure parts of the nemeses: schedules, partition shapes, iptables commands."""

from __future__ import annotations

import itertools

import pytest

from jepsen_like.nemesis import grudge as g
from jepsen_like.nemesis.iptables import (
    CHAIN,
    cut_commands,
    heal_commands,
    install_commands,
    remove_chain_commands,
    stale_jump_deletions,
)
from jepsen_like.nemesis.nemeses import parse_nemeses
from jepsen_like.nemesis.schedule import make_schedule, parse_range

NODES = ["n1", "n2", "n3"]


# --------------------------------------------------------------------------- schedule


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    a = make_schedule(7, ["partition", "kill"], 120, NODES, 4)
    b = make_schedule(7, ["partition", "kill"], 120, NODES, 4)
    c = make_schedule(8, ["partition", "kill"], 120, NODES, 4)
    assert a == b
    assert a != c


def test_faults_alternate_with_healthy_stretches_inside_the_run() -> None:
    faults = make_schedule(
        1, ["partition", "kill", "pause"], 300, NODES, 4, fault_s=(5, 10), healthy_s=(5, 10)
    )
    assert len(faults) >= 10
    for f in faults:
        assert 0 < f.start < f.end <= 300
        assert f.end - f.start <= 10
    for before, after in itertools.pairwise(faults):
        assert after.start - before.end >= 5  # a healthy stretch between two faults
    # turns: every nemesis gets a fault in each round of three
    for i in range(0, len(faults) - 2, 3):
        assert {f.nemesis for f in faults[i : i + 3]} == {"partition", "kill", "pause"}


def test_no_nemesis_no_faults() -> None:
    assert make_schedule(1, [], 60, NODES, 4) == []
    assert make_schedule(1, ["none"], 60, NODES, 4) == []


def test_the_last_fault_is_cut_at_the_end_of_the_run() -> None:
    faults = make_schedule(3, ["pause"], 12, NODES, 4, fault_s=(10, 10), healthy_s=(4, 4))
    assert [(f.start, f.end) for f in faults] == [(2.0, 12)]


def test_params_are_drawn_from_the_seed() -> None:
    faults = make_schedule(
        5, ["partition", "kill"], 200, NODES, 4, partition_modes=("isolate", "leader")
    )
    for f in faults:
        assert sorted(f.params["order"]) == NODES
        assert 0 <= f.params["group"] < 4
        if f.nemesis == "partition":
            assert f.params["mode"] in ("isolate", "leader")
        else:
            assert f.params["target"] in ("random", "leader")
            assert f.params["count"] == 1  # a minority of 3 is one node


def test_a_process_fault_never_takes_a_majority() -> None:
    five = [f"n{i}" for i in range(1, 6)]
    counts = {f.params["count"] for f in make_schedule(2, ["kill"], 2000, five, 2)}
    assert counts == {1, 2}


def test_parse_range() -> None:
    assert parse_range("5,10") == (5.0, 10.0)
    assert parse_range("3") == (3.0, 3.0)
    for bad in ("", "10,5", "0,1", "1,2,3"):
        with pytest.raises(ValueError):
            parse_range(bad)


def test_parse_nemeses() -> None:
    assert parse_nemeses("partition,kill") == ["partition", "kill"]
    assert parse_nemeses("none") == []
    assert parse_nemeses("pause, pause") == ["pause"]
    assert parse_nemeses("membership") == ["membership"]
    assert parse_nemeses("rebalance,partition") == ["rebalance", "partition"]
    with pytest.raises(ValueError, match="cannot be combined"):
        parse_nemeses("membership,rebalance")
    with pytest.raises(ValueError, match="unknown nemesis"):
        parse_nemeses("partiton")
    with pytest.raises(ValueError, match="cannot be combined"):
        parse_nemeses("none,kill")


# --------------------------------------------------------------------------- partition shapes


def test_halves_cut_a_minority_from_a_majority_both_ways() -> None:
    grudge = g.halves(["n3", "n1", "n2"])
    assert g.drops(grudge) == [("n1", "n3"), ("n2", "n3"), ("n3", "n1"), ("n3", "n2")]
    assert g.components(grudge, NODES) == [["n1", "n2"], ["n3"]]


def test_isolate_one_node() -> None:
    five = [f"n{i}" for i in range(1, 6)]
    grudge = g.isolate("n4", five)
    assert g.components(grudge, five) == [["n1", "n2", "n3", "n5"], ["n4"]]
    assert len(g.drops(grudge)) == 8


def test_majority_ring_every_node_hears_a_different_majority() -> None:
    five = ["a", "b", "c", "d", "e"]
    grudge = g.majority_ring(five)
    heard = {n: frozenset(x for x in five if x not in grudge[n]) for n in five}
    assert all(len(h) == 3 and n in h for n, h in heard.items())
    assert len(set(heard.values())) == 5
    # a hears a, b, c: it drops d and e
    assert grudge["a"] == {"d", "e"}


def test_majority_ring_of_three_is_one_directional() -> None:
    # a hears a, b; b hears b, c; c hears c, a: each drops the third, one way only
    grudge = g.majority_ring(["a", "b", "c"])
    assert g.drops(grudge) == [("a", "b"), ("b", "c"), ("c", "a")]


# --------------------------------------------------------------------------- iptables


def test_install_jumps_only_for_node_addresses_on_loopback_input() -> None:
    cmds = install_commands(["127.0.0.11", "127.0.0.12"])
    assert cmds == [
        ["-w", "-N", CHAIN],
        ["-w", "-I", "INPUT", "-i", "lo", "-d", "127.0.0.11/32", "-j", CHAIN],
        ["-w", "-I", "INPUT", "-i", "lo", "-d", "127.0.0.12/32", "-j", CHAIN],
    ]


def test_cut_drops_each_directed_pair_in_our_chain() -> None:
    assert cut_commands([("127.0.0.11", "127.0.0.13")]) == [
        ["-w", "-A", CHAIN, "-s", "127.0.0.11/32", "-d", "127.0.0.13/32", "-j", "DROP"]
    ]


def test_heal_flushes_and_remove_deletes_our_chain_only() -> None:
    assert heal_commands() == [["-w", "-F", CHAIN]]
    assert remove_chain_commands() == [["-w", "-F", CHAIN], ["-w", "-X", CHAIN]]


def test_stale_jumps_are_found_in_a_listing() -> None:
    listing = """-P INPUT ACCEPT
-A INPUT -d 127.0.0.11/32 -i lo -j RAFTMEM-JEPSEN
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -d 127.0.0.12/32 -i lo -j RAFTMEM-JEPSEN
-A INPUT -j RAFTMEM-JEPSEN-OTHER
"""
    assert stale_jump_deletions(listing) == [
        ["-w", "-D", "INPUT", "-d", "127.0.0.11/32", "-i", "lo", "-j", CHAIN],
        ["-w", "-D", "INPUT", "-d", "127.0.0.12/32", "-i", "lo", "-j", CHAIN],
    ]
