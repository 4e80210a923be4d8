"""Snapshot files: a self-contained SQLite copy of a replica's database.

A snapshot is an ordinary SQLite file (rollback-journal mode, no -wal/-shm
beside it) made with the online backup API, which copies pages and so is much
cheaper than ``VACUUM INTO`` (design §3 measured 130-180 ms stalls for the
latter). The Raft layer's opaque ``meta`` blob sits in the copy's
``snapshot_meta`` table, and the copy's own ``meta.applied_index`` says which
entries it holds.

Installing copies the snapshot's pages into the live database with the backup
API as well: one write transaction through the WAL, so open readers keep their
current view and see the new content from their next transaction; nothing is
renamed or unlinked under them.
"""

from __future__ import annotations

import os

import apsw

from raftmem.errors import CorruptionError
from raftmem.fsio import fsync_path, remove_sqlite_files
from raftmem.statemachine.schema import (
    SCHEMA_VERSION,
    SNAPSHOT_META_TABLE,
    fetch,
    migrate,
    open_connection,
    read_applied_index,
    schema_version,
)


def write(db_path: str, path: str, meta: bytes) -> None:
    """Copy the database at ``db_path`` to ``path`` (atomically replaced) with ``meta`` inside.

    The copy is read through a private read-only connection, in one read
    transaction: it is consistent, never blocks the writer, and this may run on
    any thread.
    """
    tmp = path + ".tmp"
    remove_sqlite_files(tmp)
    src = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    dest = open_connection(tmp, readonly=False)
    try:
        # Nothing to protect until the file is complete: no journal, no syncs
        # page by page; one fsync below.
        dest.execute("PRAGMA journal_mode = OFF")
        dest.execute("PRAGMA synchronous = OFF")
        with dest.backup("main", src, "main") as backup:
            backup.step(-1)
        # The copy inherits WAL mode from the source header; switch it back so
        # the snapshot is one file that can be shipped and opened read-only.
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
        src.close()
    # The Raft layer compacts its log once this returns: the file must be durable.
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)


def read_meta(path: str) -> tuple[int, bytes]:
    """(applied_index, meta) of a snapshot file; CorruptionError if it is not one of ours."""
    if not os.path.isfile(path):
        raise CorruptionError(f"snapshot {path!r} does not exist")
    try:
        conn = open_connection(path, readonly=True, immutable=True)
    except apsw.Error as exc:
        raise CorruptionError(f"snapshot {path!r} cannot be opened: {exc}") from exc
    try:
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise CorruptionError(
                f"snapshot schema {version} is newer than this code's {SCHEMA_VERSION}"
            )
        rows = fetch(conn, f"SELECT meta FROM {SNAPSHOT_META_TABLE} WHERE k = 1")
        if not rows:
            raise CorruptionError(f"snapshot {path!r} has no meta record")
        return read_applied_index(conn), bytes(rows[0][0])
    except apsw.Error as exc:
        raise CorruptionError(f"snapshot {path!r} is unreadable: {exc}") from exc
    finally:
        conn.close()


def install(dest: apsw.Connection, path: str) -> None:
    """Overwrite ``dest``'s database with the snapshot at ``path`` (one transaction)."""
    try:
        src = open_connection(path, readonly=True, immutable=True)
    except apsw.Error as exc:
        raise CorruptionError(f"snapshot {path!r} cannot be opened: {exc}") from exc
    try:
        with dest.backup("main", src, "main") as backup:
            backup.step(-1)
    except apsw.Error as exc:
        raise CorruptionError(f"snapshot {path!r} could not be installed: {exc}") from exc
    finally:
        src.close()
    # Drops the copied snapshot_meta table and upgrades an older schema. A crash
    # before this point leaves only that harmless table, dropped on next open.
    migrate(dest)
    # The install wrote the whole database into the WAL; fold it back without
    # waiting for readers (PASSIVE never blocks).
    dest.execute("PRAGMA wal_checkpoint(PASSIVE)")
