"""The SQLite schema, its migrations, and opening connections to it.

Layout (``PRAGMA user_version`` = ``SCHEMA_VERSION``)::

    meta(key PK, value)                 applied_index, written in every apply's transaction
    namespaces(nid PK, name UNIQUE, dim, metric, created_at)
    memories(rowid PK, ns, id, agent_id, text, metadata, tags, version,
             created_at, updated_at, expires_at, UNIQUE(ns, id))
    memory_tags(ns, tag, mrow) PK(ns, tag, mrow)     tag filters without json_each scans
    requests(request_id PK, result, ts, point)      request-id dedup (point: the key's)
    ownership(id PK = 1, body)          the ranges this group owns and their epoch (JSON;
                                        see raftmem.keyspace.Ownership); no row: unchecked
    vec_<nid>  vec0(embedding float[dim] distance_metric=...)   rowid = memories.rowid
    staged(move, ns, id) body, staged_requests(move, request_id), staged_namespaces(move)
                                        a range moving in, not served yet (ranges.py)

``metadata`` and ``tags`` are canonical JSON text (orjson, sorted keys), so the
same command writes the same bytes on every replica.
"""

from __future__ import annotations

from typing import Any, cast

import apsw
import orjson
import sqlite_vec

from raftmem.errors import CorruptionError

# 2: the ownership table (older code must not open a database whose writes it
# would no longer check).
# 3: range moves (staged tables; frozen ranges in the ownership record).
SCHEMA_VERSION = 3

# A snapshot copy carries its opaque meta blob in this table; it never lives
# in a replica's own database (dropped on open and after an install).
SNAPSHOT_META_TABLE = "snapshot_meta"

_DDL = """
CREATE TABLE IF NOT EXISTS meta(
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('applied_index', 0);
CREATE TABLE IF NOT EXISTS namespaces(
    nid        INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    dim        INTEGER NOT NULL,
    metric     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS memories(
    rowid      INTEGER PRIMARY KEY,
    ns         TEXT NOT NULL,
    id         TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    text       TEXT NOT NULL,
    metadata   TEXT NOT NULL,
    tags       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    UNIQUE(ns, id)
);
CREATE INDEX IF NOT EXISTS memories_agent ON memories(ns, agent_id, id);
CREATE INDEX IF NOT EXISTS memories_created ON memories(ns, created_at);
CREATE INDEX IF NOT EXISTS memories_ns_expiry ON memories(ns, expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS memories_expiry ON memories(expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS memory_tags(
    ns   TEXT NOT NULL,
    tag  TEXT NOT NULL,
    mrow INTEGER NOT NULL,
    PRIMARY KEY(ns, tag, mrow)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_tags_mrow ON memory_tags(mrow);
CREATE TABLE IF NOT EXISTS requests(
    request_id TEXT PRIMARY KEY,
    result     BLOB NOT NULL,
    ts         INTEGER NOT NULL,
    point      TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
CREATE INDEX IF NOT EXISTS requests_point ON requests(point);
CREATE TABLE IF NOT EXISTS staged(
    move TEXT NOT NULL,
    ns   TEXT NOT NULL,
    id   TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY(move, ns, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staged_requests(
    move       TEXT NOT NULL,
    request_id TEXT NOT NULL,
    result     BLOB NOT NULL,
    ts         INTEGER NOT NULL,
    point      TEXT NOT NULL,
    PRIMARY KEY(move, request_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staged_namespaces(
    move TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS ownership(
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL
);
"""

MEMORY_COLUMNS = (
    "m.id, m.ns, m.agent_id, m.text, m.metadata, m.tags, m.version, "
    "m.created_at, m.updated_at, m.expires_at"
)


Row = tuple[Any, ...]


def fetch(conn: apsw.Connection, sql: str, params: Any = ()) -> list[Row]:
    """All rows of a query, typed loosely: our columns are known, apsw's stubs are generic."""
    return cast(list[Row], conn.execute(sql, params).fetchall())


def vec_table(nid: int) -> str:
    # nid is an integer we assigned, so the name needs no quoting.
    return f"vec_{int(nid)}"


def canonical_json(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def memory_from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row selected with ``MEMORY_COLUMNS`` as the memory dict of raftmem.types."""
    mid, ns, agent_id, text, metadata, tags, version, created, updated, expires = row[:10]
    return {
        "id": mid,
        "namespace": ns,
        "agent_id": agent_id,
        "text": text,
        "metadata": orjson.loads(metadata),
        "tags": orjson.loads(tags),
        "version": version,
        "created_at": created,
        "updated_at": updated,
        "expires_at": expires,
    }


def open_connection(
    path: str, *, readonly: bool, busy_timeout_ms: int = 5000, immutable: bool = False
) -> apsw.Connection:
    """A connection with sqlite-vec loaded; extension loading is switched off again after."""
    if immutable:
        # A snapshot file nobody writes: skip locking and WAL lookups entirely.
        flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        conn = apsw.Connection(f"file:{path}?immutable=1", flags=flags)
    elif readonly:
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    else:
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    conn.enable_load_extension(False)
    conn.set_busy_timeout(busy_timeout_ms)
    if readonly or immutable:
        conn.execute("PRAGMA query_only = 1")
    return conn


def open_writer(path: str) -> apsw.Connection:
    conn = open_connection(path, readonly=False)
    # WAL: readers never block the single writer and see only committed
    # applies. synchronous=NORMAL: a power loss may lose the last applies, but
    # the applied index is committed with them, so Raft replays exactly those.
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    # No checkpoints on the apply path: an automatic checkpoint (every 1,000
    # pages) copies and fsyncs inside a commit and stalled applies by ~12 ms.
    # The owner calls ``checkpoint`` from a thread of its own instead.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    migrate(conn)
    return conn


def checkpoint(conn: apsw.Connection) -> None:
    """Copy committed WAL frames into the database without blocking the writer."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def schema_version(conn: apsw.Connection) -> int:
    return int(fetch(conn, "PRAGMA user_version")[0][0])


def migrate(conn: apsw.Connection) -> None:
    """Bring the schema to ``SCHEMA_VERSION``; idempotent."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise CorruptionError(
            f"database schema {version} is newer than this code's {SCHEMA_VERSION}"
        )
    with conn:
        columns = {row[1] for row in fetch(conn, "PRAGMA table_info(requests)")}
        if columns and "point" not in columns:
            # Schema 3: a dedup record names its key's ring point, so it can move
            # with the key's range (statemachine/ranges.py).
            conn.execute("ALTER TABLE requests ADD COLUMN point TEXT")
        conn.execute(_DDL)
        conn.execute(f"DROP TABLE IF EXISTS {SNAPSHOT_META_TABLE}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def read_applied_index(conn: apsw.Connection) -> int:
    rows = fetch(conn, "SELECT value FROM meta WHERE key = 'applied_index'")
    return int(rows[0][0]) if rows else 0
