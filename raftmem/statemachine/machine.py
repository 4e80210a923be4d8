"""StateMachine: the single writer of one group replica's database.

Contract with the Raft layer (which calls from ONE thread, the tick thread):

* ``apply(index, payload)`` is deterministic in (database, index, payload). It
  commits the command's effects and ``applied_index = index`` in one SQLite
  transaction, so after a crash the database says exactly which entries it
  holds and Raft replays the rest; entries at or below it are skipped.
* **Group commit** (``group_commit = True``, what the raft host sets): the
  entries applied between two ``flush()`` calls share one SQLite transaction,
  committed by ``flush()``. A COMMIT was 112 of 264 us of a single-memory apply
  (docs/benchmarks.md, "Group commit"). ``applied_index`` is the committed
  index: readers never learn of an entry before its transaction commits, and
  the host flushes before it reports results, answers reads or snapshots.
* A user-level failure is a result. Anything else (an undecodable payload, an
  exception from the processor or SQLite) rolls back and raises
  :class:`CorruptionError`: the replica must fail-stop, not skip the entry.
* ``install_snapshot`` never moves the applied index (or visible state)
  backwards.
* Data commands outside the group's ownership (or routed with an older table)
  answer ``epoch_mismatch`` and change nothing (``ownership.py``).

The search accelerator (:mod:`raftmem.statemachine.vecindex`) is kept here:
rebuilt from the database on open and after a snapshot install, told of each
entry's changes before the entry commits (undone if it rolls back), and found
by Readers of the same file in this process through ``vecindex.lookup``.
"""

from __future__ import annotations

import os
from typing import Any, Self

import apsw

from raftmem.commands import decode
from raftmem.errors import CorruptionError
from raftmem.keyspace import Ownership
from raftmem.statemachine import ops, ownership, ranges, schema, snapshot, vecindex
from raftmem.statemachine.schema import open_writer, read_applied_index

Result = dict[str, Any]


class StateMachine:
    def __init__(
        self, path: str, genesis: Ownership | None = None, search_index: bool | None = None
    ) -> None:
        """``genesis``: the group's ownership under the cluster's initial routing table,
        written unless the database already holds a record (see ``ownership.py``).
        ``search_index``: keep the in-memory vector index searches use (vecindex.py);
        None: yes, unless the environment says ``RAFTMEM_SEARCH_INDEX=0`` (the
        vec0-only path, for comparisons)."""
        self.path = path
        self._conn = open_writer(path)
        # Cached: read on every apply, and only apply/install change it.
        self._applied = read_applied_index(self._conn)
        # ``_applied`` counts entries applied in the open transaction too;
        # ``_committed`` only those committed (what ``applied_index`` says).
        self._committed = self._applied
        self.group_commit = False
        self._txn_open = False
        self._checkpointer: apsw.Connection | None = None
        self._genesis = genesis
        self._ownership = self._load_ownership()
        self._index: vecindex.VectorIndex | None = None
        if search_index is None:
            search_index = os.environ.get("RAFTMEM_SEARCH_INDEX", "1") != "0"
        if search_index:
            self._index = vecindex.VectorIndex(path)
            self._index.rebuild(self._conn, self._applied)
            vecindex.register(self._index)

    @property
    def applied_index(self) -> int:
        """The last entry whose effects are committed to the database."""
        return self._committed

    @property
    def search_index(self) -> vecindex.VectorIndex | None:
        return self._index

    @property
    def ownership(self) -> Ownership | None:
        return self._ownership

    def _load_ownership(self) -> Ownership | None:
        if self._genesis is not None:
            return ownership.ensure_genesis(self._conn, self._genesis)
        return ownership.load(self._conn)

    def apply(self, index: int, payload: bytes) -> Result:
        if index <= self._applied:
            return {"ok": True, "skipped": True}
        cmd = decode(payload)
        conn = self._conn
        if not self._txn_open:
            conn.execute("BEGIN IMMEDIATE")
            self._txn_open = True
        # Index changes happen before the commit, so a reader whose snapshot
        # holds this entry finds them (vecindex.py, "Consistency"); the index
        # keeps one journal for the whole transaction.
        sink = None if self._index is None else self._index.begin(index)
        token = ops.INDEX_SINK.set(sink)
        try:
            result = self._execute(conn, cmd, self._ownership)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'applied_index'", (index,))
        except BaseException as exc:
            self._abort()
            if isinstance(exc, Exception):
                raise CorruptionError(
                    f"apply of entry {index} ({cmd.get('op')}) failed: {exc!r}"
                ) from exc
            raise
        finally:
            ops.INDEX_SINK.reset(token)
        self._applied = index
        if (cmd["op"] == "set_ownership" or cmd["op"] in ranges.HANDLERS) \
                and result.get("changed"):
            self._ownership = ownership.load(conn)
        if not self.group_commit:
            self.flush()
        return result

    def flush(self) -> None:
        """Commit the open transaction: every entry applied so far becomes visible
        to readers and ``applied_index``. Raises CorruptionError (after rolling
        the transaction back) if the commit fails."""
        if not self._txn_open:
            return
        try:
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._abort()
            if isinstance(exc, Exception):
                raise CorruptionError(f"commit of entries up to {self._applied} failed: "
                                      f"{exc!r}") from exc
            raise
        self._txn_open = False
        if self._index is not None:
            self._index.commit()
        self._committed = self._applied

    def _abort(self) -> None:
        """Roll the open transaction back: the database, the search index and the
        in-memory state go back to the last commit. (The caller fail-stops; Raft
        replays the entries on restart.)"""
        conn = self._conn
        try:
            # SQLite rolls back by itself after some errors (e.g. SQLITE_FULL).
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
        finally:
            self._txn_open = False
            if self._index is not None:
                self._index.rollback()
            self._applied = self._committed
            self._ownership = self._load_ownership()

    @staticmethod
    def _execute(conn: apsw.Connection, cmd: dict[str, Any], own: Ownership | None) -> Result:
        request_id = cmd.get("request_id")
        if request_id is not None:
            if not isinstance(request_id, str) or not request_id:
                return ops.invalid("request_id must be a non-empty string or null")
            recorded = ops.recorded_result(conn, request_id)
            if recorded is not None:
                # A retry of an applied command (same request id, possibly a
                # new proposal with new ids/timestamps): answer what happened.
                return recorded
        # Before the op and not recorded: a refused command did not happen, and
        # the router retries it (same request id) at the group that owns it.
        refused = ownership.refusal(own, cmd)
        if refused is not None:
            return refused
        handler = ops.HANDLERS.get(cmd["op"]) or ranges.HANDLERS[cmd["op"]]
        result = handler(conn, cmd)
        ts = cmd.get("ts")
        if request_id is not None and isinstance(ts, int) and not isinstance(ts, bool):
            result = ops.record_result(conn, request_id, result, ts, ownership.point_of(cmd))
        return result

    # --- snapshots -------------------------------------------------------------

    def snapshot_to(self, path: str, meta: bytes) -> None:
        """Write a consistent, self-contained copy of the database plus ``meta`` to ``path``.

        Called from the apply thread, the copy holds exactly the state at
        ``applied_index``. It reads through its own connection, so it may also
        run on another thread while applies continue: the copy then holds some
        later committed state, which is still correct to install, because the
        copy carries its own applied index and entries at or below it are
        skipped. (A copy OLDER than the Raft index in ``meta`` would be wrong:
        under group commit the writer flushes before that index is named, as
        the raft host does in ``GroupReplica._write_snapshot``.)
        """
        snapshot.write(self.path, path, meta)

    @staticmethod
    def read_snapshot_meta(path: str) -> tuple[int, bytes]:
        return snapshot.read_meta(path)

    def install_snapshot(self, path: str) -> bool:
        """Replace this database's content with the snapshot's, only if it is newer.

        Returns False (and changes nothing) when the snapshot's applied index is
        not greater than ours: pysyncobj may send a full snapshot to a follower
        that is already ahead (design §3, defect 1), and installing it would
        move the replica's state backwards.
        """
        self.flush()
        snap_index, _ = snapshot.read_meta(path)
        if snap_index <= self._applied:
            return False
        if self._index is not None:
            # Readers of the new content take the SQLite path until the rebuild.
            self._index.seal(self._applied)
        snapshot.install(self._conn, path)
        self._applied = self._committed = read_applied_index(self._conn)
        # ``_applied`` counts entries applied in the open transaction too;
        # ``_committed`` only those committed (what ``applied_index`` says).
        self._committed = self._applied
        self.group_commit = False
        self._txn_open = False
        # A snapshot brings its own record (one from before ownership existed
        # gets the genesis, which is what held then).
        self._ownership = self._load_ownership()
        if self._applied != snap_index:
            raise CorruptionError(
                f"installed snapshot says applied_index {self._applied}, expected {snap_index}"
            )
        if self._index is not None:
            self._index.rebuild(self._conn, self._applied)
        return True

    def checkpoint(self) -> None:
        """A passive WAL checkpoint through a connection of its own (any one thread)."""
        if self._checkpointer is None:
            self._checkpointer = schema.open_connection(self.path, readonly=False)
        schema.checkpoint(self._checkpointer)

    def close(self) -> None:
        try:
            self.flush()
        except CorruptionError:
            pass  # rolled back: Raft replays those entries at the next start
        if self._index is not None:
            vecindex.unregister(self._index)
            self._index.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateMachine({os.path.basename(self.path)!r}, applied_index={self._applied})"
