"""The placement driver's replicated state machine: nodes, groups, cluster settings.

The placement driver (PD) is a Raft group of its own, replicated on the first
three nodes (docs/placement.md). This is the state machine its log drives,
with the same contract as a shard group's (``raftmem/statemachine``):

* ``apply(index, payload)`` is deterministic in (database, index, payload) and
  commits the command's effect together with ``applied_index = index`` in one
  SQLite transaction; entries at or below the applied index are skipped, so
  Raft may replay freely after a crash.
* A refused command is a result (``{"ok": False, "error": {code, message}}``)
  identical on every replica; it changes nothing but the applied index. An
  undecodable payload raises :class:`CorruptionError`: the replica fail-stops.
* A snapshot is one self-contained SQLite file holding the state and the Raft
  layer's opaque ``meta``; ``install_snapshot`` never moves the applied index
  backwards.

State:

* **node registry**: id -> api address, raft address, state (``up`` |
  ``draining`` | ``removed``), ``joined_at`` (ms, from the command);
* **groups**: id -> voters, learners (node ids), ``conf_ver``;
* **settings**: replicas per group, groups-per-node target (or None).

Commands (``b"\\x01" + orjson(object)``, built by the functions below):

``bootstrap``       nodes, groups (conf_ver 1) and settings; applies once, a
                    later one is a no-op answering the existing state.
``register_node``   idempotent for the same addresses; other addresses for a
                    node that is not removed are refused (``conflict``), as is
                    an address another live node uses; a removed node comes
                    back ``up`` (with the addresses it registers now).
``set_node_state``  ``up`` <-> ``draining``; ``removed`` only by ``remove_node``.
``set_group``       voters and learners, applied only if ``expect_conf_ver``
                    is the group's conf_ver (a compare-and-set), which then
                    grows by one. New members must be ``up``.
``remove_node``     refused (``node_has_replicas``) while any group names it.
``create_group``    a new group with these voters (``up``, distinct) at conf_ver 1;
                    the same again is a no-op, other voters for an existing id
                    are refused (``conflict``).
``set_groups_per_node``  the data groups per node to aim for, or null.
``set_ranges``      the range table (ring ranges -> group, each with the version at
                    which its group received it) at table ``version``; applied only
                    if newer than the recorded one. The groups' own ownership
                    records stay the truth (they decide every request); this is
                    the whole ring at one epoch, as the PD's leader last saw it.

Every command but ``bootstrap`` is refused (``not_bootstrapped``) before it.

Tables: ``meta(key, value)`` (``applied_index``, ``bootstrapped``),
``settings(key, value JSON)``, ``nodes``, ``shard_groups(id, voters JSON,
learners JSON, conf_ver)``. ``PRAGMA application_id`` marks the file as a PD
database, so a shard group's snapshot is never installed here by mistake.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Self, cast

import apsw
import orjson

from raftmem.errors import CorruptionError, ValidationError
from raftmem.fsio import fsync_path, remove_sqlite_files

VERSION = b"\x01"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x726D5044  # "rmPD"
SNAPSHOT_META_TABLE = "snapshot_meta"

NODE_STATES = ("up", "draining", "removed")

REQUIRED_KEYS: dict[str, frozenset[str]] = {
    "bootstrap": frozenset({"op", "nodes", "groups", "settings", "ts"}),
    "register_node": frozenset({"op", "id", "api", "raft", "ts"}),
    "set_node_state": frozenset({"op", "id", "state"}),
    "set_group": frozenset({"op", "group", "voters", "learners", "expect_conf_ver"}),
    "remove_node": frozenset({"op", "id"}),
    "create_group": frozenset({"op", "group", "voters"}),
    "set_groups_per_node": frozenset({"op", "groups_per_node"}),
    "set_ranges": frozenset({"op", "version", "ranges"}),
}

_DDL = """
CREATE TABLE IF NOT EXISTS meta(
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('applied_index', 0);
INSERT OR IGNORE INTO meta(key, value) VALUES ('bootstrapped', 0);
INSERT OR IGNORE INTO meta(key, value) VALUES ('ranges_version', 0);
CREATE TABLE IF NOT EXISTS ranges(
    start TEXT PRIMARY KEY,
    end   TEXT NOT NULL,
    grp   INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings(
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes(
    id        TEXT PRIMARY KEY,
    api       TEXT NOT NULL,
    raft      TEXT NOT NULL,
    state     TEXT NOT NULL,
    joined_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shard_groups(
    id       INTEGER PRIMARY KEY,
    voters   TEXT NOT NULL,
    learners TEXT NOT NULL,
    conf_ver INTEGER NOT NULL
);
"""

Result = dict[str, Any]
Row = tuple[Any, ...]


# --- the codec -----------------------------------------------------------------


def encode(cmd: Mapping[str, Any]) -> bytes:
    """A PD command as a log entry's payload (canonical: sorted keys)."""
    return VERSION + orjson.dumps(dict(cmd), option=orjson.OPT_SORT_KEYS)


def decode(payload: bytes) -> dict[str, Any]:
    """The command in a payload; CorruptionError if the bytes are not one of ours.

    Only the codec's guarantees are checked here (version byte, a JSON object, a
    known ``op`` with exactly its keys); values are checked by ``apply``, which
    answers ``invalid_request`` rather than halting the group.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CorruptionError(f"PD payload is {type(payload).__name__}, not bytes")
    raw = bytes(payload)
    if raw[:1] != VERSION:
        raise CorruptionError(f"PD payload has unknown version byte {raw[:1]!r}")
    try:
        cmd = orjson.loads(raw[1:])
    except orjson.JSONDecodeError as exc:
        raise CorruptionError(f"PD payload is not JSON: {exc}") from exc
    if not isinstance(cmd, dict):
        raise CorruptionError("PD payload is not a JSON object")
    op = cmd.get("op")
    keys = REQUIRED_KEYS.get(op) if isinstance(op, str) else None
    if keys is None:
        raise CorruptionError(f"unknown PD op {op!r}")
    if set(cmd) != keys:
        raise CorruptionError(
            f"PD op {op!r} has keys {sorted(cmd)}, expected {sorted(keys)}"
        )
    return cmd


# --- value checks shared by the builders and apply -------------------------------
#
# Each returns an error message or None: the builders raise it as a
# ValidationError, apply answers it as an ``invalid_request`` result.


_MAX_INT = 2**63 - 1  # SQLite's INTEGER


def _is_int(v: Any, lo: int = -_MAX_INT) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= _MAX_INT


def _check_id(v: Any, what: str = "node id") -> str | None:
    if not isinstance(v, str) or not v:
        return f"{what} must be a non-empty string"
    return None


def _check_addresses(api: Any, raft: Any) -> str | None:
    for name, v in (("api", api), ("raft", raft)):
        if not isinstance(v, str) or not v:
            return f"{name} address must be a non-empty string"
    return None


def _check_ts(ts: Any) -> str | None:
    return None if _is_int(ts, 0) else "ts must be a non-negative integer (ms)"


def _check_members(voters: Any, learners: Any) -> str | None:
    for name, v in (("voters", voters), ("learners", learners)):
        if not isinstance(v, list) or any(_check_id(n) for n in v):
            return f"{name} must be a list of node ids"
        if len(set(v)) != len(v):
            return f"{name} name a node twice"
    if not voters:
        return "a group needs at least one voter"
    both = sorted(set(voters) & set(learners))
    if both:
        return f"{', '.join(both)} cannot be both voter and learner"
    return None


def _check_settings(settings: Any) -> str | None:
    if not isinstance(settings, dict) or set(settings) != {"replicas", "groups_per_node"}:
        return "settings must have exactly replicas and groups_per_node"
    if not _is_int(settings["replicas"], 1):
        return "replicas must be a positive integer"
    gpn = settings["groups_per_node"]
    if gpn is not None and not _is_int(gpn, 1):
        return "groups_per_node must be a positive integer or null"
    return None


def _check_bootstrap(cmd: Mapping[str, Any]) -> str | None:
    err = _check_ts(cmd["ts"]) or _check_settings(cmd["settings"])
    if err:
        return err
    nodes, groups = cmd["nodes"], cmd["groups"]
    if not isinstance(nodes, list) or not nodes:
        return "nodes must be a non-empty list"
    ids: set[str] = set()
    addresses: set[str] = set()
    for n in nodes:
        if not isinstance(n, dict) or set(n) != {"id", "api", "raft"}:
            return "each node must have exactly id, api and raft"
        err = _check_id(n["id"]) or _check_addresses(n["api"], n["raft"])
        if err:
            return err
        if n["id"] in ids:
            return f"node {n['id']} is listed twice"
        for a in (n["api"], n["raft"]):
            if a in addresses:
                return f"address {a} is used twice"
            addresses.add(a)
        ids.add(n["id"])
    if not isinstance(groups, list):
        return "groups must be a list"
    gids: set[int] = set()
    for g in groups:
        if not isinstance(g, dict) or set(g) != {"id", "voters", "learners"}:
            return "each group must have exactly id, voters and learners"
        if not _is_int(g["id"], 0):
            return "a group id must be a non-negative integer"
        if g["id"] in gids:
            return f"group {g['id']} is listed twice"
        gids.add(g["id"])
        err = _check_members(g["voters"], g["learners"])
        if err:
            return f"group {g['id']}: {err}"
        unknown = sorted((set(g["voters"]) | set(g["learners"])) - ids)
        if unknown:
            return f"group {g['id']} names unknown nodes {', '.join(unknown)}"
    return None


def _raise_if(err: str | None) -> None:
    if err is not None:
        raise ValidationError(err)


# --- builders ----------------------------------------------------------------------


def bootstrap(
    nodes: Sequence[Mapping[str, str]],
    groups: Mapping[int, Sequence[str]],
    *,
    replicas: int,
    groups_per_node: int | None = None,
    ts: int,
) -> dict[str, Any]:
    """The cluster as created: ``nodes`` as ``{id, api, raft}``, ``groups`` as id -> voters
    (e.g. ``RoutingTable.replicas`` of the initial table); every group at conf_ver 1."""
    cmd = {
        "op": "bootstrap",
        "nodes": [{"id": n["id"], "api": n["api"], "raft": n["raft"]} for n in nodes],
        "groups": [{"id": g, "voters": list(v), "learners": []} for g, v in sorted(groups.items())],
        "settings": {"replicas": replicas, "groups_per_node": groups_per_node},
        "ts": ts,
    }
    _raise_if(_check_bootstrap(cmd))
    return cmd


def register_node(node_id: str, api: str, raft: str, *, ts: int) -> dict[str, Any]:
    _raise_if(_check_id(node_id) or _check_addresses(api, raft) or _check_ts(ts))
    return {"op": "register_node", "id": node_id, "api": api, "raft": raft, "ts": ts}


def set_node_state(node_id: str, state: str) -> dict[str, Any]:
    _raise_if(_check_id(node_id) or _check_node_state(state))
    return {"op": "set_node_state", "id": node_id, "state": state}


def set_group(
    group: int, voters: Sequence[str], learners: Sequence[str], expect_conf_ver: int
) -> dict[str, Any]:
    cmd = {"op": "set_group", "group": group, "voters": list(voters),
           "learners": list(learners), "expect_conf_ver": expect_conf_ver}
    _raise_if(_check_set_group(cmd))
    return cmd


def create_group(group: int, voters: Sequence[str]) -> dict[str, Any]:
    cmd = {"op": "create_group", "group": group, "voters": list(voters)}
    _raise_if(_check_create_group(cmd))
    return cmd


def set_groups_per_node(groups_per_node: int | None) -> dict[str, Any]:
    cmd = {"op": "set_groups_per_node", "groups_per_node": groups_per_node}
    _raise_if(_check_gpn(groups_per_node))
    return cmd


def set_ranges(version: int, ranges: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    cmd = {"op": "set_ranges", "version": version, "ranges": [dict(r) for r in ranges]}
    _raise_if(_check_ranges(cmd))
    return cmd


def _check_ranges(cmd: Mapping[str, Any]) -> str | None:
    if not _is_int(cmd["version"], 1):
        return "version must be a positive integer"
    ranges = cmd["ranges"]
    if not isinstance(ranges, list) or not ranges:
        return "ranges must be a non-empty list"
    at = "0000000000000000"
    for r in ranges:
        if not isinstance(r, dict) or set(r) != {"start", "end", "group", "version"}:
            return "a range has exactly start, end, group and version"
        if not all(isinstance(r[k], str) for k in ("start", "end")) \
                or not _is_int(r["group"], 0) or not _is_int(r["version"], 0):
            return "a range's bounds are ring points and its group and version integers"
        if r["start"] != at or not (r["end"] == "end" or r["end"] > r["start"]):
            return "ranges must be in ring order, contiguous, from the ring's start"
        at = r["end"]
    if at != "end":
        return "ranges must cover the ring to its end"
    return None


def _check_create_group(cmd: Mapping[str, Any]) -> str | None:
    if not _is_int(cmd["group"], 0):
        return "group must be a non-negative integer"
    if not cmd["voters"]:
        return "a group needs voters"
    return _check_members(cmd["voters"], [])


def _check_gpn(gpn: Any) -> str | None:
    if gpn is not None and not _is_int(gpn, 1):
        return "groups_per_node must be a positive integer or null"
    return None


def remove_node(node_id: str) -> dict[str, Any]:
    _raise_if(_check_id(node_id))
    return {"op": "remove_node", "id": node_id}


def _check_node_state(state: Any) -> str | None:
    if state == "removed":
        return "a node is removed with remove_node, which checks it holds no replicas"
    if state not in ("up", "draining"):
        return "state must be up or draining"
    return None


def _check_set_group(cmd: Mapping[str, Any]) -> str | None:
    if not _is_int(cmd["group"], 0):
        return "group must be a non-negative integer"
    if not _is_int(cmd["expect_conf_ver"]):
        return "expect_conf_ver must be an integer"
    return _check_members(cmd["voters"], cmd["learners"])


# --- results -------------------------------------------------------------------------


def refused(code: str, message: str, **details: Any) -> Result:
    return {"ok": False, "error": {"code": code, "message": message, **details}}


def _invalid(message: str) -> Result:
    return refused("invalid_request", message)


# --- the state machine ---------------------------------------------------------------


def _fetch(conn: apsw.Connection, sql: str, params: Any = ()) -> list[Row]:
    return cast(list[Row], conn.execute(sql, params).fetchall())


def _json(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode("utf-8")


class PDState:
    """The PD's state machine over one SQLite file (single writer: the apply thread).

    ``state()`` may be called from any thread: every use of the connection holds
    one lock, and the database is small (nodes and groups, not data).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = apsw.Connection(path)
        self._conn.set_busy_timeout(5000)
        self._conn.execute("PRAGMA journal_mode = WAL")
        # The applied index commits with the entry, so a power loss costs at
        # most the last entries, which Raft replays.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(self._conn)
        self._applied = _applied_index(self._conn)

    @property
    def applied_index(self) -> int:
        return self._applied

    # -- apply ----------------------------------------------------------------------

    def apply(self, index: int, payload: bytes) -> Result:
        with self._lock:
            if index <= self._applied:
                return {"ok": True, "skipped": True}
            cmd = decode(payload)
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = _HANDLERS[cmd["op"]](conn, cmd)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'applied_index'", (index,))
                conn.execute("COMMIT")
            except BaseException as exc:
                if not conn.getautocommit():
                    conn.execute("ROLLBACK")
                if isinstance(exc, Exception):
                    raise CorruptionError(
                        f"PD apply of entry {index} ({cmd.get('op')}) failed: {exc!r}"
                    ) from exc
                raise
            self._applied = index
            return result

    # -- reads ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A JSON-able copy: ``{applied_index, bootstrapped, settings, nodes, groups}``.

        ``nodes`` is keyed by node id, ``groups`` by the group id as a string
        (JSON object keys); each group also carries its integer ``id``.
        """
        with self._lock:
            out = _read_state(self._conn)
            out["applied_index"] = self._applied
            return out

    # -- snapshots ------------------------------------------------------------------------

    def snapshot_to(self, path: str, meta: bytes) -> None:
        """Write the state at ``applied_index`` plus ``meta`` to ``path`` (atomically replaced)."""
        tmp = path + ".tmp"
        remove_sqlite_files(tmp)
        dest = apsw.Connection(tmp)
        try:
            dest.execute("PRAGMA journal_mode = OFF")
            dest.execute("PRAGMA synchronous = OFF")
            with self._lock, dest.backup("main", self._conn, "main") as backup:
                backup.step(-1)
            # The copy inherits WAL mode from the source header: one plain file.
            dest.execute("PRAGMA journal_mode = DELETE")
            with dest:
                dest.execute(
                    f"CREATE TABLE {SNAPSHOT_META_TABLE}(k INTEGER PRIMARY KEY, meta BLOB NOT NULL)"
                )
                dest.execute(
                    f"INSERT INTO {SNAPSHOT_META_TABLE}(k, meta) VALUES (1, ?)", (bytes(meta),)
                )
        finally:
            dest.close()
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)

    @staticmethod
    def read_snapshot_meta(path: str) -> tuple[int, bytes]:
        """(applied_index, meta) of a PD snapshot; CorruptionError if it is not one."""
        if not os.path.isfile(path):
            raise CorruptionError(f"PD snapshot {path!r} does not exist")
        try:
            conn = _open_immutable(path)
        except apsw.Error as exc:
            raise CorruptionError(f"PD snapshot {path!r} cannot be opened: {exc}") from exc
        try:
            _check_header(conn, path)
            rows = _fetch(conn, f"SELECT meta FROM {SNAPSHOT_META_TABLE} WHERE k = 1")
            if not rows:
                raise CorruptionError(f"PD snapshot {path!r} has no meta record")
            return _applied_index(conn), bytes(rows[0][0])
        except apsw.Error as exc:
            raise CorruptionError(f"PD snapshot {path!r} is unreadable: {exc}") from exc
        finally:
            conn.close()

    def install_snapshot(self, path: str) -> bool:
        """Replace the state with the snapshot's if it is newer; False (nothing changed) if not."""
        snap_index, _ = self.read_snapshot_meta(path)
        with self._lock:
            if snap_index <= self._applied:
                return False
            try:
                src = _open_immutable(path)
            except apsw.Error as exc:
                raise CorruptionError(f"PD snapshot {path!r} cannot be opened: {exc}") from exc
            try:
                with self._conn.backup("main", src, "main") as backup:
                    backup.step(-1)
            except apsw.Error as exc:
                raise CorruptionError(f"PD snapshot {path!r} could not be installed: {exc}") \
                    from exc
            finally:
                src.close()
            _migrate(self._conn)  # drops the copied snapshot_meta table
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._applied = _applied_index(self._conn)
            if self._applied != snap_index:
                raise CorruptionError(
                    f"installed PD snapshot says applied_index {self._applied}, "
                    f"expected {snap_index}"
                )
            return True

    def checkpoint(self) -> None:
        """A passive WAL checkpoint (never blocks; the apply path does none)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PDState({os.path.basename(self.path)!r}, applied_index={self._applied})"


def _open_immutable(path: str) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    return apsw.Connection(f"file:{path}?immutable=1", flags=flags)


def _check_header(conn: apsw.Connection, path: str) -> None:
    app_id = int(_fetch(conn, "PRAGMA application_id")[0][0])
    if app_id != APPLICATION_ID:
        raise CorruptionError(f"{path!r} is not a PD database (application_id {app_id:#x})")
    version = int(_fetch(conn, "PRAGMA user_version")[0][0])
    if version > SCHEMA_VERSION:
        raise CorruptionError(
            f"PD database schema {version} is newer than this code's {SCHEMA_VERSION}"
        )


def _migrate(conn: apsw.Connection) -> None:
    app_id = int(_fetch(conn, "PRAGMA application_id")[0][0])
    tables = _fetch(conn, "SELECT name FROM sqlite_master WHERE type = 'table'")
    if app_id == 0 and tables:
        raise CorruptionError("the PD database file holds something else")
    if app_id != 0:
        _check_header(conn, "the PD database")
    with conn:
        conn.execute(_DDL)
        conn.execute(f"DROP TABLE IF EXISTS {SNAPSHOT_META_TABLE}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _applied_index(conn: apsw.Connection) -> int:
    rows = _fetch(conn, "SELECT value FROM meta WHERE key = 'applied_index'")
    return int(rows[0][0]) if rows else 0


def _bootstrapped(conn: apsw.Connection) -> bool:
    rows = _fetch(conn, "SELECT value FROM meta WHERE key = 'bootstrapped'")
    return bool(rows and rows[0][0])


def _node(conn: apsw.Connection, node_id: str) -> dict[str, Any] | None:
    rows = _fetch(conn, "SELECT id, api, raft, state, joined_at FROM nodes WHERE id = ?",
                  (node_id,))
    if not rows:
        return None
    nid, api, raft, state, joined = rows[0]
    return {"id": nid, "api": api, "raft": raft, "state": state, "joined_at": joined}


def _group(conn: apsw.Connection, gid: int) -> dict[str, Any] | None:
    rows = _fetch(conn, "SELECT id, voters, learners, conf_ver FROM shard_groups WHERE id = ?",
                  (gid,))
    return _group_from_row(rows[0]) if rows else None


def _group_from_row(row: Row) -> dict[str, Any]:
    gid, voters, learners, conf_ver = row
    return {"id": gid, "voters": orjson.loads(voters), "learners": orjson.loads(learners),
            "conf_ver": conf_ver}


def _read_state(conn: apsw.Connection) -> dict[str, Any]:
    settings: dict[str, Any] = {"replicas": None, "groups_per_node": None}
    for key, value in _fetch(conn, "SELECT key, value FROM settings ORDER BY key"):
        settings[key] = orjson.loads(value)
    nodes = {}
    for nid, api, raft, state, joined in _fetch(
            conn, "SELECT id, api, raft, state, joined_at FROM nodes ORDER BY id"):
        nodes[nid] = {"id": nid, "api": api, "raft": raft, "state": state, "joined_at": joined}
    groups = {}
    for row in _fetch(conn, "SELECT id, voters, learners, conf_ver FROM shard_groups ORDER BY id"):
        g = _group_from_row(row)
        groups[str(g["id"])] = g
    version = _fetch(conn, "SELECT value FROM meta WHERE key = 'ranges_version'")
    ranges = [{"start": s, "end": e, "group": g, "version": v} for s, e, g, v in _fetch(
        conn, "SELECT start, end, grp, version FROM ranges ORDER BY start")]
    return {"bootstrapped": _bootstrapped(conn), "settings": settings, "nodes": nodes,
            "groups": groups,
            "ranges": {"version": int(version[0][0]) if version else 0, "ranges": ranges}}


def _holding(conn: apsw.Connection, node_id: str) -> list[int]:
    """Groups that name ``node_id`` as a voter or learner."""
    held = []
    for row in _fetch(conn, "SELECT id, voters, learners, conf_ver FROM shard_groups ORDER BY id"):
        g = _group_from_row(row)
        if node_id in g["voters"] or node_id in g["learners"]:
            held.append(int(g["id"]))
    return held


def _not_bootstrapped() -> Result:
    return refused("not_bootstrapped", "the cluster has not been bootstrapped")


def _apply_bootstrap(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    if _bootstrapped(conn):
        return {"ok": True, "bootstrapped": False, "state": _read_state(conn)}
    err = _check_bootstrap(cmd)
    if err:
        return _invalid(err)
    for key, value in sorted(cmd["settings"].items()):
        conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)",
                     (key, _json(value)))
    for n in cmd["nodes"]:
        conn.execute("INSERT INTO nodes(id, api, raft, state, joined_at) VALUES (?, ?, ?, 'up', ?)",
                     (n["id"], n["api"], n["raft"], cmd["ts"]))
    for g in cmd["groups"]:
        conn.execute("INSERT INTO shard_groups(id, voters, learners, conf_ver) VALUES (?, ?, ?, 1)",
                     (g["id"], _json(g["voters"]), _json(g["learners"])))
    conn.execute("UPDATE meta SET value = 1 WHERE key = 'bootstrapped'")
    return {"ok": True, "bootstrapped": True, "state": _read_state(conn)}


def _apply_register_node(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    if not _bootstrapped(conn):
        return _not_bootstrapped()
    err = _check_id(cmd["id"]) or _check_addresses(cmd["api"], cmd["raft"]) or _check_ts(cmd["ts"])
    if err:
        return _invalid(err)
    nid, api, raft = cmd["id"], cmd["api"], cmd["raft"]
    node = _node(conn, nid)
    if node is not None and node["state"] != "removed":
        if (node["api"], node["raft"]) != (api, raft):
            return refused(
                "conflict",
                f"node {nid} is registered at api {node['api']}, raft {node['raft']}; "
                f"remove it before registering it at api {api}, raft {raft}",
                node=node)
        return {"ok": True, "changed": False, "node": node}
    users = _fetch(conn, "SELECT id FROM nodes WHERE id != ? AND state != 'removed' "
                         "AND (api IN (?, ?) OR raft IN (?, ?)) ORDER BY id",
                   (nid, api, raft, api, raft))
    if users:
        return refused("conflict", f"node {users[0][0]} already uses one of these addresses")
    conn.execute("INSERT OR REPLACE INTO nodes(id, api, raft, state, joined_at) "
                 "VALUES (?, ?, ?, 'up', ?)", (nid, api, raft, cmd["ts"]))
    return {"ok": True, "changed": True, "node": _node(conn, nid)}


def _apply_set_node_state(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    if not _bootstrapped(conn):
        return _not_bootstrapped()
    err = _check_id(cmd["id"]) or _check_node_state(cmd["state"])
    if err:
        return _invalid(err)
    node = _node(conn, cmd["id"])
    if node is None:
        return refused("not_found", f"node {cmd['id']} is not registered")
    if node["state"] == "removed":
        return refused("node_removed", f"node {cmd['id']} was removed; register it again")
    if node["state"] == cmd["state"]:
        return {"ok": True, "changed": False, "node": node}
    conn.execute("UPDATE nodes SET state = ? WHERE id = ?", (cmd["state"], cmd["id"]))
    return {"ok": True, "changed": True, "node": _node(conn, cmd["id"])}


def _apply_set_group(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    if not _bootstrapped(conn):
        return _not_bootstrapped()
    err = _check_set_group(cmd)
    if err:
        return _invalid(err)
    gid = cmd["group"]
    group = _group(conn, gid)
    if group is None:
        return refused("not_found", f"group {gid} does not exist")
    if group["conf_ver"] != cmd["expect_conf_ver"]:
        return refused(
            "conf_ver_mismatch",
            f"group {gid} is at conf_ver {group['conf_ver']}, not {cmd['expect_conf_ver']}",
            group=group)
    before = set(group["voters"]) | set(group["learners"])
    for nid in (*cmd["voters"], *cmd["learners"]):
        node = _node(conn, nid)
        if node is None or node["state"] == "removed":
            return refused("not_found", f"node {nid} is not registered")
        if nid not in before and node["state"] != "up":
            return refused("node_not_up", f"node {nid} is {node['state']}: no new replicas")
    conn.execute("UPDATE shard_groups SET voters = ?, learners = ?, conf_ver = ? WHERE id = ?",
                 (_json(cmd["voters"]), _json(cmd["learners"]), group["conf_ver"] + 1, gid))
    return {"ok": True, "group": _group(conn, gid)}


def _apply_create_group(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    if not _bootstrapped(conn):
        return _not_bootstrapped()
    err = _check_create_group(cmd)
    if err:
        return _invalid(err)
    gid = cmd["group"]
    group = _group(conn, gid)
    if group is not None:
        if sorted(group["voters"]) == sorted(cmd["voters"]):
            return {"ok": True, "changed": False, "group": group}
        return refused("conflict", f"group {gid} exists with voters {group['voters']}",
                       group=group)
    for nid in cmd["voters"]:
        node = _node(conn, nid)
        if node is None or node["state"] != "up":
            return refused("node_not_up", f"node {nid} is not up: no new replicas")
    conn.execute("INSERT INTO shard_groups(id, voters, learners, conf_ver) VALUES (?, ?, ?, 1)",
                 (gid, _json(cmd["voters"]), _json([])))
    return {"ok": True, "changed": True, "group": _group(conn, gid)}


def _apply_set_ranges(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    if not _bootstrapped(conn):
        return _not_bootstrapped()
    err = _check_ranges(cmd)
    if err:
        return _invalid(err)
    current = int(_fetch(conn, "SELECT value FROM meta WHERE key = 'ranges_version'")[0][0])
    if cmd["version"] <= current:
        return {"ok": True, "changed": False, "version": current}
    conn.execute("DELETE FROM ranges")
    conn.executemany("INSERT INTO ranges(start, end, grp, version) VALUES (?, ?, ?, ?)",
                     [(r["start"], r["end"], r["group"], r["version"]) for r in cmd["ranges"]])
    conn.execute("UPDATE meta SET value = ? WHERE key = 'ranges_version'", (cmd["version"],))
    return {"ok": True, "changed": True, "version": cmd["version"]}


def _apply_set_groups_per_node(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    if not _bootstrapped(conn):
        return _not_bootstrapped()
    err = _check_gpn(cmd["groups_per_node"])
    if err:
        return _invalid(err)
    conn.execute("INSERT INTO settings(key, value) VALUES ('groups_per_node', ?)"
                 " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 (_json(cmd["groups_per_node"]),))
    return {"ok": True, "groups_per_node": cmd["groups_per_node"]}


def _apply_remove_node(conn: apsw.Connection, cmd: dict[str, Any]) -> Result:
    if not _bootstrapped(conn):
        return _not_bootstrapped()
    err = _check_id(cmd["id"])
    if err:
        return _invalid(err)
    node = _node(conn, cmd["id"])
    if node is None:
        return refused("not_found", f"node {cmd['id']} is not registered")
    if node["state"] == "removed":
        return {"ok": True, "changed": False, "node": node}
    held = _holding(conn, cmd["id"])
    if held:
        return refused(
            "node_has_replicas",
            f"node {cmd['id']} still holds replicas of groups {', '.join(map(str, held))}",
            groups=held)
    conn.execute("UPDATE nodes SET state = 'removed' WHERE id = ?", (cmd["id"],))
    return {"ok": True, "changed": True, "node": _node(conn, cmd["id"])}


_HANDLERS = {
    "bootstrap": _apply_bootstrap,
    "register_node": _apply_register_node,
    "set_node_state": _apply_set_node_state,
    "set_group": _apply_set_group,
    "remove_node": _apply_remove_node,
    "create_group": _apply_create_group,
    "set_groups_per_node": _apply_set_groups_per_node,
    "set_ranges": _apply_set_ranges,
}
