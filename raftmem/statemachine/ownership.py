"""Which ranges of the ring this group owns, and the epoch checks on every data command.

The record is one row of the ``ownership`` table (canonical JSON of
:meth:`raftmem.keyspace.Ownership.to_dict`), so it is part of the replicated
state: snapshots carry it, replay rebuilds it.

Where it comes from:

* **Genesis.** Whoever creates the replica (the node) passes the group's
  ownership under the cluster's initial routing table. It is written when the
  database is opened and holds no record yet, before any entry is applied. It
  is a function of the cluster description alone (the group count splits the
  ring), so every replica of a group writes the same one — like Raft's initial
  configuration, it is agreed by construction rather than through the log.
  Restart-safe: an existing record (genesis or a later change) is never
  overwritten, and a snapshot brings its own.
* **Changes** come through the log only: the ``set_ownership`` command, applied
  when its epoch is newer than the record's.

A database without a record (a state machine driven directly, as in unit tests
and benchmarks) checks nothing.

Checks (:func:`refusal`): a ``put``/``put_batch``/``patch``/``delete`` whose key
hashes outside the owned ranges, or that was routed with a table older than
the key's range, answers ``epoch_mismatch`` carrying the record, writes
nothing, and is not recorded for request-id dedup (it did not happen; the
router retries the same request id at the right group).
"""

from __future__ import annotations

import functools
from typing import Any

import apsw
import orjson

from raftmem.keyspace import Ownership, format_point, hash_key
from raftmem.statemachine.schema import canonical_json, fetch

Result = dict[str, Any]

DATA_OPS = frozenset({"put", "put_batch", "patch", "delete"})


def load(conn: apsw.Connection) -> Ownership | None:
    rows = fetch(conn, "SELECT body FROM ownership WHERE id = 1")
    return _parse(rows[0][0]) if rows else None


@functools.lru_cache(maxsize=256)
def _parse(body: str) -> Ownership:
    # Readers look the record up on every single-key read; it rarely changes,
    # and an Ownership is immutable, so one parse per distinct record.
    return Ownership.from_dict(orjson.loads(body))


def store(conn: apsw.Connection, own: Ownership) -> None:
    conn.execute(
        "INSERT INTO ownership(id, body) VALUES (1, ?)"
        " ON CONFLICT(id) DO UPDATE SET body = excluded.body",
        (canonical_json(own.to_dict()),),
    )


def ensure_genesis(conn: apsw.Connection, genesis: Ownership) -> Ownership:
    """Write ``genesis`` unless a record exists; return the record in force."""
    current = load(conn)
    if current is not None:
        return current
    with conn:
        store(conn, genesis)
    return genesis


def _error(code: str, message: str, **details: Any) -> Result:
    return {"ok": False, "error": {"code": code, "message": message, **details}}


def _keys(cmd: dict[str, Any]) -> list[str]:
    """The memory ids a data command writes; malformed ones are left to the op's own checks."""
    op = cmd["op"]
    if op == "put":
        mems = [cmd["memory"]]
    elif op == "put_batch":
        mems = cmd["memories"] if isinstance(cmd["memories"], list) else []
    else:
        return [cmd["id"]] if isinstance(cmd["id"], str) else []
    return [m["id"] for m in mems if isinstance(m, dict) and isinstance(m.get("id"), str)]


def point_of(cmd: dict[str, Any]) -> str | None:
    """The ring point of a data command's (first) key, for its dedup record; None
    for other commands. A batch part names its first item's: after a move its
    items are split into new parts, with new request ids, anyway."""
    if cmd["op"] not in DATA_OPS or not isinstance(cmd.get("ns"), str):
        return None
    keys = _keys(cmd)
    return format_point(hash_key(cmd["ns"], keys[0])) if keys else None


def refusal(own: Ownership | None, cmd: dict[str, Any]) -> Result | None:
    """The ``epoch_mismatch`` (or ``invalid_request``) result refusing ``cmd``, or None."""
    if own is None or cmd["op"] not in DATA_OPS or not isinstance(cmd["ns"], str):
        return None
    epoch = cmd["epoch"]
    if epoch is not None and not (
        isinstance(epoch, list) and len(epoch) == 2
        and all(isinstance(e, int) and not isinstance(e, bool) for e in epoch)
    ):
        return _error("invalid_request", "epoch must be a [version, conf_ver] pair of integers")
    for key in _keys(cmd):
        h = hash_key(cmd["ns"], key)
        why = own.refusal(h, epoch)
        if why:
            return _error("epoch_mismatch", f"{why} (key {key!r})", group=own.group,
                          ownership=own.to_dict())
        if own.moving(h) is not None:
            return _error("range_moving", f"the range of key {key!r} is moving to another "
                          f"group; retry shortly", group=own.group)
    return None


def set_ownership(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    try:
        new = Ownership.from_dict(cmd["ownership"])
    except ValueError as exc:
        return _error("invalid_request", f"ownership: {exc}")
    current = load(conn)
    if current is not None:
        if new.group != current.group:
            return _error("invalid_request",
                          f"this is group {current.group}, not group {new.group}")
        if new == current:
            return {"ok": True, "changed": False, "ownership": current.to_dict()}
        if new.epoch <= current.epoch:
            return _error(
                "epoch_mismatch",
                f"ownership at epoch {list(new.epoch)} is not newer than the group's "
                f"{list(current.epoch)}",
                group=current.group, ownership=current.to_dict(),
            )
    store(conn, new)
    return {"ok": True, "changed": True, "ownership": new.to_dict()}
