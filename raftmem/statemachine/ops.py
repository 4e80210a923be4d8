"""The command processor: one function per op, ``(conn, command) -> result``.

Runs inside the transaction opened by :meth:`StateMachine.apply` and is a pure
function of (database content, command): no clock, RNG, environment or
network. Every time in here comes from the command.

User-level failures are returned as ``{"ok": False, "error": {...}}``, the same
on every replica. Each handler validates completely *before* its first write,
so a failed command (or batch item) writes nothing. Anything raised from here
is a bug or corruption; the caller rolls back and fail-stops.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

import apsw
import numpy as np
import orjson

from raftmem.commands import (
    check_memory,
    check_namespace_def,
    check_patch_fields,
    check_vector,
)
from raftmem.statemachine.ownership import set_ownership
from raftmem.statemachine.schema import (
    MEMORY_COLUMNS,
    canonical_json,
    fetch,
    memory_from_row,
    vec_table,
)

Result = dict[str, Any]


class Namespace:
    __slots__ = ("created_at", "dim", "metric", "name", "nid")

    def __init__(self, nid: int, name: str, dim: int, metric: str, created_at: int) -> None:
        self.nid = nid
        self.name = name
        self.dim = dim
        self.metric = metric
        self.created_at = created_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "metric": self.metric,
            "created_at": self.created_at,
        }


class IndexSink(Protocol):
    """Told of every change to what search sees (the in-memory vector index, vecindex.py)."""

    def namespace_created(self, nid: int, dim: int, metric: str) -> None: ...

    def memory_added(
        self, nid: int, mrow: int, embedding: np.ndarray, agent_id: str, expires_at: int | None
    ) -> None: ...

    def memory_changed(
        self,
        nid: int,
        mrow: int,
        embedding: np.ndarray | None,
        agent_id: str,
        expires_at: int | None,
    ) -> None: ...

    def memory_removed(self, nid: int, mrow: int) -> None: ...


# Set by StateMachine.apply around a command; None when nobody keeps an index.
INDEX_SINK: ContextVar[IndexSink | None] = ContextVar("raftmem_index_sink", default=None)


def error(code: str, message: str, **details: Any) -> Result:
    return {"ok": False, "error": {"code": code, "message": message, **details}}


def invalid(message: str) -> Result:
    return error("invalid_request", message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_namespace(conn: apsw.Connection, name: str) -> Namespace | None:
    rows = fetch(
        conn, "SELECT nid, name, dim, metric, created_at FROM namespaces WHERE name = ?", (name,)
    )
    return Namespace(*rows[0]) if rows else None


def _ns_missing(name: str) -> Result:
    return error("namespace_not_found", f"namespace {name!r} does not exist")


def _envelope(cmd: dict[str, Any]) -> str | None:
    """Types of the fields every data command carries (their presence is the codec's job)."""
    if not isinstance(cmd["ns"], str) or not cmd["ns"]:
        return "namespace must be a non-empty string"
    if not _is_int(cmd["ts"]):
        return "ts must be an integer"
    return None


def _live_row(conn: apsw.Connection, ns: str, mid: str, ts: int) -> tuple[Any, ...] | None:
    """The stored row for (ns, id) if it has not expired at ``ts``, else None.

    An expired memory is gone for writes exactly as it is for reads, even
    before a purge removes it; ``ts`` (the proposer's clock) decides, so every
    replica decides alike.
    """
    rows = fetch(
        conn,
        f"SELECT {MEMORY_COLUMNS}, m.rowid FROM memories m WHERE m.ns = ? AND m.id = ?",
        (ns, mid),
    )
    if not rows:
        return None
    row = rows[0]
    expires_at = row[9]
    if expires_at is not None and expires_at <= ts:
        return None
    return tuple(row)


def _remove(conn: apsw.Connection, nid: int, mrow: int) -> None:
    conn.execute("DELETE FROM memories WHERE rowid = ?", (mrow,))
    conn.execute(f"DELETE FROM {vec_table(nid)} WHERE rowid = ?", (mrow,))
    conn.execute("DELETE FROM memory_tags WHERE mrow = ?", (mrow,))
    sink = INDEX_SINK.get()
    if sink is not None:
        sink.memory_removed(nid, mrow)


def _insert_tags(conn: apsw.Connection, ns: str, mrow: int, tags: list[str]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO memory_tags(ns, tag, mrow) VALUES (?, ?, ?)",
        [(ns, tag, mrow) for tag in tags],
    )


def _check_embedding(ns: Namespace, emb: Any) -> Result | None:
    if not isinstance(emb, np.ndarray):
        return invalid("embedding must be a float32 vector")
    if emb.shape[0] != ns.dim:
        return error(
            "dimension_mismatch",
            f"embedding has {emb.shape[0]} dimensions; namespace {ns.name!r} has {ns.dim}",
            expected=ns.dim,
            got=int(emb.shape[0]),
        )
    msg = check_vector(emb, ns.metric)
    return invalid(msg) if msg else None


def _vec_bytes(emb: np.ndarray) -> bytes:
    return np.ascontiguousarray(emb, dtype="<f4").tobytes()


# --- ops -------------------------------------------------------------------------


def create_namespace(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    name, dim, metric, ts = cmd["ns"], cmd["dim"], cmd["metric"], cmd["ts"]
    msg = check_namespace_def(name, dim, metric) or (None if _is_int(ts) else "ts must be int")
    if msg:
        return invalid(msg)
    existing = load_namespace(conn, name)
    if existing is not None:
        if (existing.dim, existing.metric) != (dim, metric):
            return error(
                "namespace_conflict",
                f"namespace {name!r} exists with dim={existing.dim} metric={existing.metric}",
                namespace=existing.to_dict(),
            )
        return {"ok": True, "namespace": existing.to_dict(), "created": False}
    conn.execute(
        "INSERT INTO namespaces(name, dim, metric, created_at) VALUES (?, ?, ?, ?)",
        (name, dim, metric, ts),
    )
    nid = conn.last_insert_rowid()
    conn.execute(
        f"CREATE VIRTUAL TABLE {vec_table(nid)} USING "
        f"vec0(embedding float[{int(dim)}] distance_metric={metric})"
    )
    sink = INDEX_SINK.get()
    if sink is not None:
        sink.namespace_created(nid, dim, metric)
    ns = Namespace(nid, name, dim, metric, ts)
    return {"ok": True, "namespace": ns.to_dict(), "created": True}


def _put_one(conn: apsw.Connection, ns: Namespace, mem: Any, ts: int) -> Result:
    msg = check_memory(mem)
    if msg:
        return invalid(msg)
    bad = _check_embedding(ns, mem["embedding"])
    if bad:
        return bad
    old = fetch(
        conn, "SELECT rowid, expires_at FROM memories WHERE ns = ? AND id = ?", (ns.name, mem["id"])
    )
    if old:
        mrow, expires_at = old[0]
        if expires_at is None or expires_at > ts:
            return error("already_exists", f"memory {mem['id']!r} already exists")
        # Logically gone already; the new memory starts a fresh history.
        _remove(conn, ns.nid, mrow)
    metadata = canonical_json(mem.get("metadata", {}))
    tags = list(mem.get("tags", []))
    tags_json = canonical_json(tags)
    conn.execute(
        "INSERT INTO memories(ns, id, agent_id, text, metadata, tags, version,"
        " created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
        (
            ns.name,
            mem["id"],
            mem["agent_id"],
            mem["text"],
            metadata,
            tags_json,
            ts,
            ts,
            mem["expires_at"],
        ),
    )
    mrow = conn.last_insert_rowid()
    conn.execute(
        f"INSERT INTO {vec_table(ns.nid)}(rowid, embedding) VALUES (?, ?)",
        (mrow, _vec_bytes(mem["embedding"])),
    )
    _insert_tags(conn, ns.name, mrow, tags)
    sink = INDEX_SINK.get()
    if sink is not None:
        sink.memory_added(ns.nid, mrow, mem["embedding"], mem["agent_id"], mem["expires_at"])
    row = (
        mem["id"],
        ns.name,
        mem["agent_id"],
        mem["text"],
        metadata,
        tags_json,
        1,
        ts,
        ts,
        mem["expires_at"],
    )
    return {"ok": True, "memory": memory_from_row(row)}


def put(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    msg = _envelope(cmd)
    if msg:
        return invalid(msg)
    ns = load_namespace(conn, cmd["ns"])
    if ns is None:
        return _ns_missing(cmd["ns"])
    return _put_one(conn, ns, cmd["memory"], cmd["ts"])


def put_batch(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    msg = _envelope(cmd)
    if msg:
        return invalid(msg)
    ns = load_namespace(conn, cmd["ns"])
    if ns is None:
        return _ns_missing(cmd["ns"])
    # Items are independent: each validates before it writes, so a failed
    # item leaves no trace and later items still see earlier successes.
    return {"ok": True, "results": [_put_one(conn, ns, m, cmd["ts"]) for m in cmd["memories"]]}


def _version_guard(row: tuple[Any, ...], if_version: int | None) -> Result | None:
    current = row[6]
    if if_version is not None and if_version != current:
        return error(
            "version_mismatch",
            f"memory {row[0]!r} is at version {current}, not {if_version}",
            current_version=current,
        )
    return None


def patch(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    msg = _envelope(cmd) or check_patch_fields(cmd["fields"])
    if not msg and (not isinstance(cmd["id"], str) or not cmd["id"]):
        msg = "id must be a non-empty string"
    if not msg and cmd["if_version"] is not None and not _is_int(cmd["if_version"]):
        msg = "if_version must be an integer or null"
    if msg:
        return invalid(msg)
    ts, fields = cmd["ts"], cmd["fields"]
    ns = load_namespace(conn, cmd["ns"])
    if ns is None:
        return _ns_missing(cmd["ns"])
    if "embedding" in fields:
        bad = _check_embedding(ns, fields["embedding"])
        if bad:
            return bad
    row = _live_row(conn, ns.name, cmd["id"], ts)
    if row is None:
        return error("not_found", f"memory {cmd['id']!r} not found")
    guard = _version_guard(row, cmd["if_version"])
    if guard:
        return guard
    mrow = row[10]
    new = list(row[:10])
    # Column positions follow MEMORY_COLUMNS.
    if "agent_id" in fields:
        new[2] = fields["agent_id"]
    if "text" in fields:
        new[3] = fields["text"]
    if "metadata" in fields:
        new[4] = canonical_json(fields["metadata"])
    if "tags" in fields:
        new[5] = canonical_json(list(fields["tags"]))
    if "expires_at" in fields:
        new[9] = fields["expires_at"]
    new[6] = row[6] + 1
    new[8] = ts
    conn.execute(
        "UPDATE memories SET agent_id = ?, text = ?, metadata = ?, tags = ?, version = ?,"
        " updated_at = ?, expires_at = ? WHERE rowid = ?",
        (new[2], new[3], new[4], new[5], new[6], new[8], new[9], mrow),
    )
    if "tags" in fields:
        conn.execute("DELETE FROM memory_tags WHERE mrow = ?", (mrow,))
        _insert_tags(conn, ns.name, mrow, list(fields["tags"]))
    if "embedding" in fields:
        conn.execute(
            f"UPDATE {vec_table(ns.nid)} SET embedding = ? WHERE rowid = ?",
            (_vec_bytes(fields["embedding"]), mrow),
        )
    sink = INDEX_SINK.get()
    if sink is not None and not {"embedding", "agent_id", "expires_at"}.isdisjoint(fields):
        sink.memory_changed(ns.nid, mrow, fields.get("embedding"), new[2], new[9])
    return {"ok": True, "memory": memory_from_row(tuple(new))}


def delete(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    msg = _envelope(cmd)
    if not msg and (not isinstance(cmd["id"], str) or not cmd["id"]):
        msg = "id must be a non-empty string"
    if not msg and cmd["if_version"] is not None and not _is_int(cmd["if_version"]):
        msg = "if_version must be an integer or null"
    if msg:
        return invalid(msg)
    ns = load_namespace(conn, cmd["ns"])
    if ns is None:
        return _ns_missing(cmd["ns"])
    row = _live_row(conn, ns.name, cmd["id"], cmd["ts"])
    if row is None:
        return error("not_found", f"memory {cmd['id']!r} not found")
    guard = _version_guard(row, cmd["if_version"])
    if guard:
        return guard
    _remove(conn, ns.nid, row[10])
    return {"ok": True, "deleted": True, "version": row[6]}


def purge(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    now, dedup_before = cmd["now"], cmd["dedup_before"]
    if not _is_int(now) or not _is_int(dedup_before):
        return invalid("now and dedup_before must be integers")
    # ORDER BY: the same deletes in the same order on every replica, so even
    # sqlite-vec's internal chunk bookkeeping stays identical.
    expired = fetch(
        conn,
        "SELECT m.rowid, n.nid FROM memories m JOIN namespaces n ON n.name = m.ns"
        " WHERE m.expires_at <= ? ORDER BY m.rowid",
        (now,),
    )
    for mrow, nid in expired:
        _remove(conn, nid, mrow)
    conn.execute("DELETE FROM requests WHERE ts < ?", (dedup_before,))
    requests_purged = conn.changes()
    return {"ok": True, "purged": len(expired), "requests_purged": requests_purged}


def barrier(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    return {"ok": True}


HANDLERS: dict[str, Callable[[apsw.Connection, dict[str, Any]], Result]] = {
    "create_namespace": create_namespace,
    "put": put,
    "put_batch": put_batch,
    "patch": patch,
    "delete": delete,
    "purge": purge,
    "barrier": barrier,
    "set_ownership": set_ownership,
}


def record_result(conn: apsw.Connection, request_id: str, result: Result, ts: int,
                  point: str | None = None) -> Result:
    """Store ``result`` for dedup; returns it as a retry will see it (same dict, same key order).

    ``point``: the ring point (format_point) of the command's key, so that the
    record moves with the key's range."""
    blob = orjson.dumps(result, option=orjson.OPT_SORT_KEYS)
    conn.execute(
        "INSERT INTO requests(request_id, result, ts, point) VALUES (?, ?, ?, ?)",
        (request_id, blob, ts, point),
    )
    recorded: Result = orjson.loads(blob)
    return recorded


def recorded_result(conn: apsw.Connection, request_id: str) -> Result | None:
    rows = fetch(conn, "SELECT result FROM requests WHERE request_id = ?", (request_id,))
    if not rows:
        return None
    result: Result = orjson.loads(rows[0][0])
    return result
