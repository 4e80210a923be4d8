"""Moving a range of the ring from one group (A) to another (B): the replicated steps.

Each step is one command in one group's log, a pure function of the database
and the command like every op, and idempotent, so that whoever drives a move
(``raftmem/rangemove.py``) can repeat any step after a crash of any node:

``range_freeze`` (on A)
    A's ownership marks the range frozen: writes to it answer ``range_moving``
    (definite; the router retries), reads are served as before. ``frozen``
    false thaws it again (a move abandoned before its release).
``range_stage`` (on B, in chunks)
    Memories of the range, as A holds them, go into B's ``staged`` table under
    the move's id, with the definitions of their namespaces. No read looks at
    that table, and B does not own the range yet.
``range_release`` (on A)
    In one command: the frozen range leaves A's ownership (at the move's new
    table version) and its memories are deleted, so no read of A — single-key
    or scatter — ever returns them again. From here until B activates, no
    group serves the range: single-key requests get ``epoch_mismatch`` and are
    routed again; scatter reads check that the ranges they read cover the ring.
``range_activate`` (on B)
    In one command: the staged memories of the move become B's memories
    (versions and timestamps kept; namespaces B lacks are created as A had
    them) and the range joins B's ownership at the new version.

Nothing here decides *when* a step may run; the driver only releases once
every memory of the frozen range is staged, and activates only after the
release. A step whose precondition does not hold answers ``invalid_request``
and changes nothing.
"""

from __future__ import annotations

from typing import Any

import apsw
import numpy as np
import orjson

from raftmem.commands import unpack_vector
from raftmem.errors import CorruptionError
from raftmem.keyspace import RING_SIZE, OwnedRange, Ownership, format_point, hash_key, parse_point
from raftmem.statemachine import ownership as own_mod
from raftmem.statemachine.ops import (
    INDEX_SINK,
    _insert_tags,
    _remove,
    _vec_bytes,
    create_namespace,
    error,
    invalid,
    load_namespace,
)
from raftmem.statemachine.schema import fetch, vec_table

Result = dict[str, Any]


def _bounds(cmd: dict[str, Any]) -> tuple[int, int] | Result:
    try:
        start, end = parse_point(cmd["start"]), parse_point(cmd["end"])
    except ValueError as exc:
        return invalid(f"range bounds: {exc}")
    if not start < end:
        return invalid("a range must have start < end")
    return start, end


def _changed(own: Ownership) -> Result:
    return {"ok": True, "changed": True, "ownership": own.to_dict()}


def _unchanged(own: Ownership) -> Result:
    return {"ok": True, "changed": False, "ownership": own.to_dict()}


def _with_ranges(own: Ownership, ranges: list[OwnedRange], version: int | None = None) -> Ownership:
    return Ownership(own.group, max(own.version, version or 0), own.conf_ver,
                     tuple(sorted(ranges, key=lambda r: r.start)))


def _points_in(sql: str, start: int, end: int) -> tuple[str, tuple[str, ...]]:
    """``sql`` + a condition on ``point`` (fixed-width hex: text order is ring order)."""
    if end >= RING_SIZE:
        return f"{sql} point >= ?", (format_point(start),)
    return f"{sql} point >= ? AND point < ?", (format_point(start), format_point(end))


def freeze(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    """Mark [start, end) frozen (or thawed) inside the one owned range holding it."""
    b = _bounds(cmd)
    if isinstance(b, dict):
        return b
    start, end = b
    if not isinstance(cmd["frozen"], bool):
        return invalid("frozen must be true or false")
    own = own_mod.load(conn)
    if own is None:
        return invalid("this group has no ownership record")
    holder = own.range_for(start)
    if holder is None or end > holder.end:
        return error("epoch_mismatch", f"group {own.group} does not own the whole range",
                     group=own.group, ownership=own.to_dict())
    want, move = bool(cmd["frozen"]), cmd["move"]
    if not isinstance(move, str) or not move:
        return invalid("move must be a non-empty string")
    if holder.frozen and holder.move != move:
        return error("conflict", f"the range is frozen by another move ({holder.move})")
    if holder.frozen == want:
        if not want or (holder.start, holder.end) == (start, end):
            return _unchanged(own)
        return invalid("another part of this range is frozen")
    if not want and (holder.start, holder.end) != (start, end):
        return invalid("thaw the range exactly as it was frozen")
    pieces = [r for r in own.ranges if r is not holder]
    if holder.start < start:
        pieces.append(OwnedRange(holder.start, start, holder.version))
    pieces.append(OwnedRange(start, end, holder.version, want, move if want else ""))
    if end < holder.end:
        pieces.append(OwnedRange(end, holder.end, holder.version))
    new = _with_ranges(own, pieces)
    own_mod.store(conn, new)
    return _changed(new)


STAGED_KEYS = frozenset({"ns", "id", "agent_id", "text", "metadata", "tags", "version",
                         "created_at", "updated_at", "expires_at", "embedding"})


def stage(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    """Keep a chunk of a moving range's memories under the move's id (not served)."""
    move, rows, namespaces = cmd["move"], cmd["rows"], cmd["namespaces"]
    requests = cmd["requests"]
    if not isinstance(move, str) or not move:
        return invalid("move must be a non-empty string")
    if not isinstance(rows, list) or not isinstance(namespaces, list) \
            or not isinstance(requests, list):
        return invalid("rows, namespaces and requests must be lists")
    b = _bounds(cmd)
    if isinstance(b, dict):
        return b
    start, end = b
    own = own_mod.load(conn)
    if own is not None and any(r.start < end and start < r.end for r in own.ranges):
        return invalid(f"group {own.group} already owns part of this range")
    for row in rows:
        if not isinstance(row, dict) or set(row) != STAGED_KEYS \
                or not isinstance(row["ns"], str) or not isinstance(row["id"], str):
            return invalid("a staged row has exactly the keys " + ", ".join(sorted(STAGED_KEYS)))
        if not start <= hash_key(row["ns"], row["id"]) < end:
            return invalid(f"memory {row['id']!r} is outside the moving range")
    for rq in requests:
        if not (isinstance(rq, list) and len(rq) == 4 and isinstance(rq[0], str)
                and isinstance(rq[1], str) and isinstance(rq[2], int) and isinstance(rq[3], str)):
            return invalid("a staged request is [request_id, result, ts, point]")
        try:
            inside = start <= parse_point(rq[3]) < end
        except ValueError:
            inside = False
        if not inside:
            return invalid(f"request {rq[0]!r} is outside the moving range")
    for d in namespaces:
        if not isinstance(d, dict) or set(d) != {"name", "dim", "metric", "created_at"}:
            return invalid("a namespace definition has name, dim, metric and created_at")
        found = load_namespace(conn, d["name"])
        if found is not None and (found.dim, found.metric) != (d["dim"], d["metric"]):
            return error("namespace_conflict", f"namespace {d['name']!r} differs here")
    # Definitions accumulate over the move's chunks (a chunk of dedup records
    # names none; it must not forget those of earlier chunks).
    known = fetch(conn, "SELECT body FROM staged_namespaces WHERE move = ?", (move,))
    merged = {d["name"]: d for d in (orjson.loads(known[0][0]) if known else [])}
    merged.update((d["name"], d) for d in namespaces)
    conn.execute("INSERT OR REPLACE INTO staged_namespaces(move, body) VALUES (?, ?)",
                 (move, orjson.dumps([merged[k] for k in sorted(merged)])))
    conn.executemany(
        "INSERT OR REPLACE INTO staged(move, ns, id, body) VALUES (?, ?, ?, ?)",
        [(move, r["ns"], r["id"], orjson.dumps(r)) for r in rows])
    conn.executemany(
        "INSERT OR REPLACE INTO staged_requests(move, request_id, result, ts, point)"
        " VALUES (?, ?, ?, ?, ?)",
        [(move, rq[0], rq[1].encode(), rq[2], rq[3]) for rq in requests])
    return {"ok": True, "staged": len(rows), "staged_requests": len(requests)}


def release(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    """Drop the frozen range from this group's ownership and delete its memories."""
    b = _bounds(cmd)
    if isinstance(b, dict):
        return b
    start, end = b
    version = cmd["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return invalid("version must be a positive integer")
    own = own_mod.load(conn)
    if own is None:
        return invalid("this group has no ownership record")
    holder = own.range_for(start)
    if holder is None:
        if own.version >= version and not any(r.start < end and start < r.end
                                              for r in own.ranges):
            return _unchanged(own)  # released already
        return invalid("the range is not owned here")
    if (holder.start, holder.end) != (start, end) or not holder.frozen:
        return invalid("only a range frozen exactly so can be released")
    if holder.move != cmd["move"]:
        return error("conflict", f"the range is frozen by another move ({holder.move})")
    if version <= own.version:
        return invalid(f"the new table version {version} must be above {own.version}")
    # The same deletes in the same order on every replica (rowid order).
    rows = fetch(conn, "SELECT m.rowid, m.ns, m.id, n.nid FROM memories m"
                       " JOIN namespaces n ON n.name = m.ns ORDER BY m.rowid")
    deleted = 0
    for mrow, ns, mid, nid in rows:
        if start <= hash_key(ns, mid) < end:
            _remove(conn, nid, mrow)
            deleted += 1
    # The dedup records of the range's keys moved with it.
    conn.execute(*_points_in("DELETE FROM requests WHERE", start, end))
    new = _with_ranges(own, [r for r in own.ranges if r is not holder], version)
    own_mod.store(conn, new)
    return {**_changed(new), "deleted": deleted}


def activate(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    """Serve the staged memories of the move and own the range at the new version."""
    b = _bounds(cmd)
    if isinstance(b, dict):
        return b
    start, end = b
    move, version = cmd["move"], cmd["version"]
    if not isinstance(move, str) or not move:
        return invalid("move must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return invalid("version must be a positive integer")
    own = own_mod.load(conn)
    if own is None:
        return invalid("this group has no ownership record")
    mine = own.range_for(start)
    if mine is not None and (mine.start, mine.end) == (start, end) and mine.version >= version:
        return _unchanged(own)  # activated already
    if any(r.start < end and start < r.end for r in own.ranges):
        return invalid(f"group {own.group} already owns part of this range")
    defs = fetch(conn, "SELECT body FROM staged_namespaces WHERE move = ?", (move,))
    if not defs:
        # Every staging command leaves this row, the last one even for an empty
        # range: without it this group staged nothing for the move, and taking
        # the range would take it empty (another move's, or none at all).
        return invalid(f"nothing was staged here for move {move!r}")
    staged_defs = {d["name"]: d for d in orjson.loads(defs[0][0])}
    # Checked before anything is written: a refusal changes nothing.
    for (ns,) in fetch(conn, "SELECT DISTINCT ns FROM staged WHERE move = ? ORDER BY ns",
                       (move,)):
        if load_namespace(conn, ns) is None and ns not in staged_defs:
            return error("namespace_not_found",
                         f"staged memories of namespace {ns!r}, which neither this group "
                         "nor the move defines", namespace=ns)
    for name in sorted(staged_defs):
        d = staged_defs[name]
        if load_namespace(conn, name) is None:
            res = create_namespace(conn, {"ns": name, "dim": d["dim"], "metric": d["metric"],
                                          "ts": d["created_at"]})
            if not res.get("ok"):
                raise CorruptionError(f"staged namespace {name!r}: {res}")
    staged = fetch(conn, "SELECT body FROM staged WHERE move = ? ORDER BY ns, id", (move,))
    sink = INDEX_SINK.get()
    for (body,) in staged:
        m = orjson.loads(body)
        nsdef = load_namespace(conn, m["ns"])
        if nsdef is None:
            raise CorruptionError(f"staged memory {m['id']!r} has no namespace {m['ns']!r}")
        old = fetch(conn, "SELECT rowid FROM memories WHERE ns = ? AND id = ?", (m["ns"], m["id"]))
        if old:
            _remove(conn, nsdef.nid, old[0][0])
        conn.execute(
            "INSERT INTO memories(ns, id, agent_id, text, metadata, tags, version,"
            " created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m["ns"], m["id"], m["agent_id"], m["text"], m["metadata"], m["tags"],
             m["version"], m["created_at"], m["updated_at"], m["expires_at"]))
        mrow = conn.last_insert_rowid()
        emb = np.asarray(unpack_vector(m["embedding"]), dtype=np.float32)
        conn.execute(f"INSERT INTO {vec_table(nsdef.nid)}(rowid, embedding) VALUES (?, ?)",
                     (mrow, _vec_bytes(emb)))
        _insert_tags(conn, m["ns"], mrow, orjson.loads(m["tags"]))
        if sink is not None:
            sink.memory_added(nsdef.nid, mrow, emb, m["agent_id"], m["expires_at"])
    conn.execute(
        "INSERT OR IGNORE INTO requests(request_id, result, ts, point)"
        " SELECT request_id, result, ts, point FROM staged_requests WHERE move = ?"
        " ORDER BY request_id", (move,))
    conn.execute("DELETE FROM staged_requests WHERE move = ?", (move,))
    conn.execute("DELETE FROM staged WHERE move = ?", (move,))
    conn.execute("DELETE FROM staged_namespaces WHERE move = ?", (move,))
    new = _with_ranges(own, [*own.ranges, OwnedRange(start, end, version)], version)
    own_mod.store(conn, new)
    return {**_changed(new), "activated": len(staged)}


HANDLERS = {
    "range_freeze": freeze,
    "range_stage": stage,
    "range_release": release,
    "range_activate": activate,
}
