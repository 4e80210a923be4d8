"""Partition shapes as grudges (pure).

A grudge (Jepsen's word) maps each node to the nodes it drops packets *from*.
A symmetric cut lists each pair both ways; the majority ring is deliberately
one-directional, as in Jepsen's ``majorities-ring``.

    halves      [a b | c d e]   a minority and a majority, no traffic across
    isolate     [a | b c d e]   one node cut off from all others
    ring        every node hears a majority, no two nodes the same majority
    bridge      [L x F2], L - F1 - F2 intact: only the leader and one follower
                of a group are cut from each other (both ways)
"""

from __future__ import annotations

Grudge = dict[str, frozenset[str]]


def complete_cut(*components: list[str]) -> Grudge:
    """Nodes in different components drop each other, both ways."""
    grudge: dict[str, frozenset[str]] = {}
    everyone = [n for comp in components for n in comp]
    for comp in components:
        others = frozenset(n for n in everyone if n not in comp)
        for n in comp:
            grudge[n] = others
    return grudge


def halves(order: list[str]) -> Grudge:
    """Cut `order` (already shuffled) into a smaller first half and a larger second half."""
    mid = len(order) // 2
    return complete_cut(order[:mid], order[mid:])


def isolate(node: str, nodes: list[str]) -> Grudge:
    return complete_cut([node], [n for n in nodes if n != node])


def bridge(leader: str, follower: str) -> Grudge:
    """Cut `leader` and `follower` from each other only; every other pair still talks.

    With a third replica F1 in between, F1 hears both: the leader keeps a
    majority (itself and F1), and so does the cut-off follower, which stops
    hearing the leader and may campaign. A correct Raft keeps the leader (F1
    refuses to vote while it hears a live leader, and pre-vote stops the
    campaign before it raises any term); without that stickiness F1 elects the
    follower while the old leader may still believe its lease.
    """
    if leader == follower:
        raise ValueError("a bridge needs two different nodes")
    return {leader: frozenset({follower}), follower: frozenset({leader})}


def majority_ring(order: list[str]) -> Grudge:
    """Each node hears the majority window of the ring that starts at it.

    Node i of the ring hears nodes i, i+1, ..., i+m-1 (m = a majority) and drops
    everyone else. Windows start at different nodes, so no two nodes hear the
    same majority; with 3 nodes a → b → c → a, each hears itself and its
    successor.
    """
    n = len(order)
    m = n // 2 + 1
    grudge: dict[str, frozenset[str]] = {}
    for i, node in enumerate(order):
        heard = {order[(i + k) % n] for k in range(m)}
        grudge[node] = frozenset(x for x in order if x not in heard)
    return grudge


def drops(grudge: Grudge) -> list[tuple[str, str]]:
    """The grudge as sorted (src, dst) pairs: packets from src to dst are dropped."""
    return sorted((src, dst) for dst, srcs in grudge.items() for src in srcs)


def components(grudge: Grudge, nodes: list[str]) -> list[list[str]]:
    """Who can still talk both ways, for the timeline (undirected reachability)."""
    seen: set[str] = set()
    out: list[list[str]] = []
    for start in nodes:
        if start in seen:
            continue
        comp, todo = [], [start]
        seen.add(start)
        while todo:
            a = todo.pop()
            comp.append(a)
            for b in nodes:
                if b in seen:
                    continue
                if b not in grudge.get(a, frozenset()) and a not in grudge.get(b, frozenset()):
                    seen.add(b)
                    todo.append(b)
        out.append(sorted(comp))
    return out
