"""The convergence checker: after heal and quiescence, do all replicas agree? (pure)

The eventual tier lets a replica serve what it has, stale or not; what it must
not do is stay different. Once the faults are healed and no client writes, every
replica of a group has to reach the same applied index and the same content.
Each node answers ``GET /admin/digests``::

    {"node": "n1", "groups": {"0": {"applied_index": 123, "digest": "9f..."}, ...}}

`agreement` judges one round of such answers (one per node); the runner polls
rounds until they agree or a deadline passes, and the last round is the
verdict. Which nodes hold a replica of which group comes from the routing table
(``GET /admin/cluster`` → ``routing.groups``) when known; otherwise every node
that reports a group is taken to be one of its replicas.
"""

from __future__ import annotations

from typing import Any


def _entry(doc: Any, group: str) -> dict[str, Any] | None:
    groups = doc.get("groups") if isinstance(doc, dict) else None
    entry = groups.get(group) if isinstance(groups, dict) else None
    return entry if isinstance(entry, dict) else None


def agreement(
    snapshots: dict[str, Any],
    nodes: list[str],
    replicas: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """One round: every node answered, and every group's replicas report one (index, digest)."""
    missing_nodes = sorted(n for n in nodes if not isinstance(snapshots.get(n), dict))
    groups: dict[str, list[str]] = {}
    if replicas:
        groups = {str(g): [str(m) for m in members] for g, members in replicas.items()}
    else:
        for node in nodes:
            doc = snapshots.get(node)
            reported = doc.get("groups") if isinstance(doc, dict) else None
            for g in reported if isinstance(reported, dict) else {}:
                groups.setdefault(str(g), []).append(node)
    per_group: dict[str, Any] = {}
    disagreeing: list[str] = []
    for g in sorted(groups, key=lambda x: (len(x), x)):
        states: dict[str, Any] = {}
        for node in groups[g]:
            entry = _entry(snapshots.get(node), g)
            states[node] = (
                None
                if entry is None
                else {"applied_index": entry.get("applied_index"), "digest": entry.get("digest")}
            )
        distinct = {
            (repr(s["applied_index"]), repr(s["digest"])) for s in states.values() if s is not None
        }
        agree = None not in states.values() and len(distinct) == 1
        per_group[g] = {"agree": agree, "replicas": states}
        if not agree:
            disagreeing.append(g)
    valid = not missing_nodes and not disagreeing and bool(groups)
    out: dict[str, Any] = {"valid": valid, "groups": per_group}
    if missing_nodes:
        out["missing_nodes"] = missing_nodes
    if disagreeing:
        out["disagreeing_groups"] = disagreeing
    if not groups:
        out["reason"] = "no group reported"
    return out
