"""Driving a range move between two groups (the steps are in statemachine/ranges.py).

``move_range`` runs on any node: it reads the groups' ownership records
(linearizable), works out how far a move of ``[start, end)`` to ``target``
got, and takes the remaining steps:

1. freeze the range on its owner (writes to it wait, reads go on);
2. page through the owner's memories of the range (a linearizable read after
   the freeze, so every acknowledged write is among them) and stage them on
   the target, in chunks;
3. release it on the owner at a new table version (the owner forgets the
   range and deletes its memories in one command);
4. activate it on the target at that version (the staged memories become the
   target's and the range its own, in one command);
5. refresh this node's routing table.

Every step is idempotent and the move's id is a function of the range and the
target, so running the same move again after a crash anywhere (this node, a
leader, a whole group for a while) finishes it; what was done is judged from
the records alone. Between 3 and 4 no group serves the range (single-key
requests are routed again, scatter reads done again), for two commits. One
move at a time per cluster: the new table version is the highest one seen
plus one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from raftmem import commands
from raftmem.errors import Conflict, NotFound, ValidationError
from raftmem.keyspace import RING_SIZE, Ownership, format_point
from raftmem.statemachine.reader import ReadSpec
from raftmem.types import ReadOptions

if TYPE_CHECKING:
    from raftmem.node import Node

log = structlog.get_logger("raftmem.rangemove")

LINEARIZABLE = ReadOptions(consistency="linearizable")
# Rows scanned per page of the owner's database, and at most this many bytes
# of memories (embeddings included) in one staging entry.
PAGE_ROWS = 2000
STAGE_BYTES = 512 * 1024
REQUESTS_PER_STAGE = 1000  # dedup records per staging entry

STEPS = ("freeze", "stage", "release", "activate", "done")


def move_id(start: int, end: int, target: int) -> str:
    return f"{format_point(start)}-{format_point(end)}-to-{target}"


async def ownerships(node: Node) -> dict[int, Ownership]:
    """Every group's ownership record, read linearizably (the move decides on them)."""
    out: dict[int, Ownership] = {}
    for g in node.table.groups:
        d = await node._query(g, LINEARIZABLE, ReadSpec("ownership", {}))
        if d is not None:
            out[g] = Ownership.from_dict(d)
    return out


def _holder(records: dict[int, Ownership], start: int, end: int, target: int) -> int | None:
    for g, own in records.items():
        if g == target:
            continue
        r = own.range_for(start)
        if r is not None:
            if end > r.end:
                raise ValidationError(
                    f"[{format_point(start)}, {format_point(end)}) spans more than one range "
                    f"of group {g}; move the parts one by one", field="end")
            return g
    return None


async def move_range(
    node: Node, start: int, end: int, target: int, *,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    stop_after: str | None = None,
) -> dict[str, Any]:
    """Move ``[start, end)`` to group ``target`` (or finish such a move); a report.

    ``stop_after`` (a step name) ends the run after that step, as a crash there
    would: tests use it to show that running the move again finishes it.
    """
    if not 0 <= start < end <= RING_SIZE:
        raise ValidationError("a range needs 0 <= start < end <= 2^64", field="start")
    if target not in node.table.groups:
        raise ValidationError(f"no group {target}", field="to_group")
    mid = move_id(start, end, target)
    t0 = time.monotonic()
    report: dict[str, Any] = {"move": mid, "start": format_point(start),
                              "end": format_point(end), "target": target, "steps": []}

    def step(name: str, **details: Any) -> bool:
        report["steps"].append({"step": name, "seconds": round(time.monotonic() - t0, 3),
                                **details})
        log.info("range_move_step", move=mid, step=name, **details)
        if progress is not None:
            progress(name, details)
        return stop_after == name

    records = await ownerships(node)
    mine = records.get(target)
    held = mine.range_for(start) if mine is not None else None
    if held is not None:
        if (held.start, held.end) == (start, end):
            report["source"] = None
            step("done", already=True)
            return report
        raise Conflict(f"group {target} already owns part of the range", code="conflict")
    source = _holder(records, start, end, target)
    report["source"] = source
    if source is not None:
        if any(r.frozen and (r.start, r.end) != (start, end)
               for r in records[source].ranges):
            raise Conflict(f"group {source} has another range moving; finish that move first",
                           code="conflict")
        await node._write(source, commands.range_freeze(start, end, mid))
        if step("freeze", group=source):
            return report
        staged = await _stage(node, source, target, start, end, mid)
        if step("stage", group=target, memories=staged):
            return report
        version = max(o.version for o in (await ownerships(node)).values()) + 1
        res = await node._write(source, commands.range_release(start, end, mid, version))
        if step("release", group=source, version=version, deleted=res.get("deleted", 0)):
            return report
    else:
        # Released already (a run that stopped before activating): the release
        # raised its group's version to the move's, the highest one there is.
        version = max(o.version for o in records.values())
    activate = commands.range_activate(start, end, mid, version)
    try:
        res = await node._write(target, activate)
    except NotFound as e:
        if e.code != "namespace_not_found":
            raise
        # Memories of a namespace the target lacks and the move did not stage
        # (the catalog's definition, installed as for any write, then again).
        d = await node._namespace(str(e.details.get("namespace")))
        await node._install_namespace(target, d)
        res = await node._write(target, activate)
    step("activate", group=target, version=version, activated=res.get("activated", 0))
    await node._refresh_table(node.table, [res.get("ownership")], 1)
    step("done")
    report["version"] = version
    report["seconds"] = round(time.monotonic() - t0, 3)
    return report


async def _stage(node: Node, source: int, target: int, start: int, end: int, mid: str) -> int:
    """Copy the frozen range's memories from ``source`` to ``target``'s staging table."""
    after, staged = 0, 0
    rows: list[dict[str, Any]] = []
    names: dict[str, dict[str, Any]] = {}
    size = 0

    async def flush() -> None:
        nonlocal rows, size, staged
        if rows:
            await node._write(target, commands.range_stage(start, end, mid, list(names.values()),
                                                           rows))
            staged += len(rows)
        rows, size = [], 0

    while True:
        page = await node._query(source, LINEARIZABLE, ReadSpec("range_rows", {
            "start": format_point(start), "end": format_point(end),
            "after_rowid": after, "limit": PAGE_ROWS}))
        for d in page["namespaces"]:
            names[d["name"]] = d
        for row in page["rows"]:
            rows.append(row)
            size += len(row["embedding"]) + len(row["text"]) + len(row["metadata"]) + 200
            if size >= STAGE_BYTES:
                await flush()
        if page["next"] is None:
            break
        after = page["next"]
    await flush()
    # The range's dedup records: a write acknowledged here and retried (same
    # request id) after the move must be answered from its record there, not
    # applied a second time.
    cursor = ""
    while True:
        got = await node._query(source, LINEARIZABLE, ReadSpec("range_requests", {
            "start": format_point(start), "end": format_point(end),
            "after": cursor, "limit": REQUESTS_PER_STAGE}))
        if got["requests"]:
            await node._write(target, commands.range_stage(start, end, mid, [], [],
                                                           got["requests"]))
        if got["next"] is None:
            break
        cursor = got["next"]
    # The last staging command, also for an empty range: the target activates
    # only a move it has staged (statemachine/ranges.py, activate).
    await node._write(target, commands.range_stage(start, end, mid, list(names.values()), []))
    return staged
