"""Reader: queries over one replica's database, on a read-only connection.

Open one Reader per worker thread (an apsw connection must not be used by two
threads at once). Every method runs in one read transaction, so it sees a
single committed state; wrap several calls in :meth:`Reader.transaction` to
make them see the same one.

Time comes from the caller (``now_ms``): a memory whose ``expires_at`` is at or
before ``now_ms`` is never returned, whether or not a purge has removed it.

A namespace that this database does not hold reads as empty (``None`` / ``[]``
/ 0), because groups learn namespaces lazily and a scatter read asks every
group; only :meth:`search` needs the namespace's definition and returns ``[]``
without it.

The node's reads are data, not code: a :class:`ReadSpec` (an operation and its
arguments, JSON all through) run by :func:`run_read`. The node that hosts a
replica runs it locally; a node that does not sends it to one that does.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import orjson
import structlog

from raftmem.errors import EpochMismatch, ValidationError
from raftmem.keyspace import RING_SIZE, Ownership, format_point, hash_key, parse_point
from raftmem.statemachine import vecindex
from raftmem.statemachine.ops import Namespace, load_namespace
from raftmem.statemachine.ownership import load as load_ownership
from raftmem.statemachine.schema import (
    MEMORY_COLUMNS,
    fetch,
    memory_from_row,
    open_connection,
    read_applied_index,
    vec_table,
)

log = structlog.get_logger("raftmem.reader")

# Aliases: inside Reader, "list" names the method, not the builtin.
MemoryList = list[dict[str, Any]]
Params = list[Any]
Scored = list[tuple[float, dict[str, Any]]]
Records = list[tuple[str, dict[str, Any], bytes]]

# sqlite-vec refuses KNN queries with k above this.
VEC0_MAX_K = 4096

_FILTER_KEYS = frozenset(
    {"agent_id", "tags_any", "tags_all", "metadata", "created_after", "created_before"}
)
_DISTANCE_FN = {"cosine": "vec_distance_cosine", "l2": "vec_distance_l2"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def score(metric: str, distance: float) -> float:
    return 1.0 - distance if metric == "cosine" else 1.0 / (1.0 + distance)


def _metadata_clause(key: str, value: Any) -> tuple[str, list[Any]]:
    """SQL for "top-level ``key`` of metadata equals ``value``", JSON-typed.

    Types must match (``true`` is not ``1``, ``"1"`` is not ``1``); numbers
    compare by value (``1`` equals ``1.0``); arrays and objects compare by
    canonical JSON. json_each's ``key`` column is the raw key, so any key works
    (a JSON path would need quoting rules SQLite does not have).
    """
    base = "EXISTS (SELECT 1 FROM json_each(m.metadata) AS je WHERE je.key = ? AND "
    if value is None:
        return base + "je.type = 'null')", [key]
    if value is True:
        return base + "je.type = 'true')", [key]
    if value is False:
        return base + "je.type = 'false')", [key]
    if _is_int(value) or isinstance(value, float):
        if isinstance(value, float) and not np.isfinite(value):
            raise ValidationError(f"metadata filter {key!r}: number must be finite")
        if _is_int(value) and not -(2**63) <= value < 2**63:
            value = float(value)
        return base + "je.type IN ('integer', 'real') AND je.atom = ?)", [key, value]
    if isinstance(value, str):
        return base + "je.type = 'text' AND je.atom = ?)", [key, value]
    if isinstance(value, (list, dict)):
        kind = "array" if isinstance(value, list) else "object"
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError as exc:
            raise ValidationError(f"metadata filter {key!r} is not JSON") from exc
        return base + f"je.type = '{kind}' AND je.value = json(?))", [key, text]
    raise ValidationError(f"metadata filter {key!r} has an unsupported value type")


def _str_list(flt: Mapping[str, Any], name: str) -> list[str]:
    value = flt.get(name) or []
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise ValidationError(f"filter {name} must be a list of strings")
    return list(value)


def filter_sql(ns: str, flt: Mapping[str, Any] | None, now_ms: int) -> tuple[str, list[Any], bool]:
    """WHERE clause over ``memories m`` for a namespace, TTL and a SearchFilter dict.

    Returns (sql, params, has_user_filter).
    """
    flt = flt or {}
    unknown = set(flt) - _FILTER_KEYS
    if unknown:
        raise ValidationError(f"unknown filter fields: {', '.join(sorted(unknown))}")
    clauses = ["m.ns = ?", "(m.expires_at IS NULL OR m.expires_at > ?)"]
    params: list[Any] = [ns, now_ms]
    user = False
    agent_id = flt.get("agent_id")
    if agent_id is not None:
        if not isinstance(agent_id, str):
            raise ValidationError("filter agent_id must be a string")
        clauses.append("m.agent_id = ?")
        params.append(agent_id)
        user = True
    tags_any = _str_list(flt, "tags_any")
    if tags_any:
        marks = ", ".join("?" * len(tags_any))
        clauses.append(
            f"m.rowid IN (SELECT mrow FROM memory_tags WHERE ns = ? AND tag IN ({marks}))"
        )
        params += [ns, *tags_any]
        user = True
    for tag in dict.fromkeys(_str_list(flt, "tags_all")):
        clauses.append("m.rowid IN (SELECT mrow FROM memory_tags WHERE ns = ? AND tag = ?)")
        params += [ns, tag]
        user = True
    metadata = flt.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("filter metadata must be an object")
    for key in sorted(metadata):
        if not isinstance(key, str):
            raise ValidationError("filter metadata keys must be strings")
        sql, p = _metadata_clause(key, metadata[key])
        clauses.append(sql)
        params += p
        user = True
    for name, op in (("created_after", ">"), ("created_before", "<")):
        bound = flt.get(name)
        if bound is not None:
            if not _is_int(bound):
                raise ValidationError(f"filter {name} must be an integer (epoch ms)")
            clauses.append(f"m.created_at {op} ?")
            params.append(bound)
            user = True
    return " AND ".join(clauses), params, user


class Reader:
    def __init__(self, path: str, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._conn = open_connection(path, readonly=True, busy_timeout_ms=busy_timeout_ms)
        self._in_txn = False
        self._applied_memo: int | None = None
        self._index_key = os.path.realpath(path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Reader]:
        """Make every call inside the block read one and the same committed state."""
        if self._in_txn:
            yield self
            return
        self._conn.execute("BEGIN")
        self._in_txn = True
        try:
            yield self
        finally:
            self._in_txn = False
            self._applied_memo = None
            self._conn.execute("COMMIT")

    # --- namespaces ------------------------------------------------------------

    def applied_index(self) -> int:
        if not self._in_txn:
            return read_applied_index(self._conn)
        # One snapshot per transaction: read it once (searches and the node ask).
        if self._applied_memo is None:
            self._applied_memo = read_applied_index(self._conn)
        return self._applied_memo

    def ownership(self) -> Ownership | None:
        """The ranges this group owns and their epoch (None: the database checks none)."""
        return load_ownership(self._conn)

    def get_namespace(self, ns: str) -> dict[str, Any] | None:
        found = load_namespace(self._conn, ns)
        return None if found is None else found.to_dict()

    def list_namespaces(self) -> MemoryList:
        rows = fetch(
            self._conn, "SELECT nid, name, dim, metric, created_at FROM namespaces ORDER BY name"
        )
        return [Namespace(*r).to_dict() for r in rows]

    # --- memories ----------------------------------------------------------------

    def get(
        self, ns: str, id: str, now_ms: int, include_embedding: bool = False
    ) -> dict[str, Any] | None:
        with self.transaction():
            rows = fetch(
                self._conn,
                f"SELECT {MEMORY_COLUMNS}, m.rowid FROM memories m WHERE m.ns = ? AND m.id = ?"
                " AND (m.expires_at IS NULL OR m.expires_at > ?)",
                (ns, id, now_ms),
            )
            if not rows:
                return None
            memory = memory_from_row(rows[0])
            if include_embedding:
                nsdef = load_namespace(self._conn, ns)
                assert nsdef is not None  # a memory row implies its namespace
                memory["embedding"] = self._embedding(nsdef.nid, rows[0][10])
            return memory

    def _embedding(self, nid: int, mrow: int) -> Params:
        rows = fetch(self._conn, f"SELECT embedding FROM {vec_table(nid)} WHERE rowid = ?", (mrow,))
        return np.frombuffer(rows[0][0], dtype="<f4").tolist()

    def list(
        self,
        ns: str,
        agent_id: str | None,
        tag: str | None,
        limit: int,
        after_id: str | None,
        now_ms: int,
    ) -> MemoryList:
        """Live memories ordered by id, starting after ``after_id`` (exclusive)."""
        if not _is_int(limit) or limit < 0:
            raise ValidationError("limit must be a non-negative integer")
        where = ["m.ns = ?", "(m.expires_at IS NULL OR m.expires_at > ?)"]
        params: Params = [ns, now_ms]
        if agent_id is not None:
            where.append("m.agent_id = ?")
            params.append(agent_id)
        if tag is not None:
            where.append("m.rowid IN (SELECT mrow FROM memory_tags WHERE ns = ? AND tag = ?)")
            params += [ns, tag]
        if after_id is not None:
            where.append("m.id > ?")
            params.append(after_id)
        params.append(limit)
        rows = fetch(
            self._conn,
            f"SELECT {MEMORY_COLUMNS} FROM memories m WHERE {' AND '.join(where)}"
            " ORDER BY m.id LIMIT ?",
            params,
        )
        return [memory_from_row(r) for r in rows]

    def count(self, ns: str | None = None, now_ms: int | None = None) -> int:
        """Stored memories (all namespaces if ``ns`` is None); live ones only if ``now_ms``."""
        where: list[str] = []
        params: Params = []
        if ns is not None:
            where.append("ns = ?")
            params.append(ns)
        if now_ms is not None:
            where.append("(expires_at IS NULL OR expires_at > ?)")
            params.append(now_ms)
        sql = "SELECT count(*) FROM memories" + (" WHERE " + " AND ".join(where) if where else "")
        return int(fetch(self._conn, sql, params)[0][0])

    # --- search ------------------------------------------------------------------

    def search(
        self,
        ns: str,
        vector: np.ndarray,
        k: int,
        flt: Mapping[str, Any] | None,
        now_ms: int,
    ) -> MemoryList:
        """Exact top-``k`` live memories by (distance, id), after filters.

        When this process keeps the database's in-memory vector index (the
        state machine does, see vecindex.py), it answers as of this
        transaction's applied index, and only the top k rows are read from
        SQLite. Otherwise sqlite-vec's KNN (an exhaustive scan, so exact) does the work, with
        filters pushed into it as ``rowid IN (...)``, as long as its answer
        provably holds the top k (see ``_vec0_top``); otherwise (k over vec0's
        limit, or a large group of ties straddling its cut-off) a full distance
        scan over the candidates decides. Both give the same answer.
        """
        if not _is_int(k) or k < 1:
            raise ValidationError("k must be a positive integer")
        where, params, has_filter = filter_sql(ns, flt, now_ms)
        with self.transaction():
            nsdef = load_namespace(self._conn, ns)
            if nsdef is None:
                return []
            query = self._query_vector(nsdef, vector)
            scored = self._indexed(nsdef, query, k, flt or {}, where, params, now_ms)
            if scored is None:
                scored = self._knn(nsdef, query, k, where, params, has_filter, now_ms)
            if scored is None:
                scored = self._scan(nsdef, query, k, where, params)
            return [
                {"memory": mem, "distance": d, "score": score(nsdef.metric, d)} for d, mem in scored
            ]

    @staticmethod
    def _query_vector(nsdef: Namespace, vector: Any) -> bytes:
        try:
            q = np.asarray(vector, dtype="<f4")
        except (TypeError, ValueError) as exc:
            raise ValidationError("query embedding must be a list of numbers") from exc
        if q.ndim != 1:
            raise ValidationError("query embedding must be a flat list of numbers")
        if q.shape[0] != nsdef.dim:
            raise ValidationError(
                f"query embedding has {q.shape[0]} dimensions; namespace {nsdef.name!r} "
                f"has {nsdef.dim}",
                code="dimension_mismatch",
            )
        if not bool(np.isfinite(q).all()):
            raise ValidationError("query embedding contains NaN or infinity")
        if nsdef.metric == "cosine" and not bool(np.any(q)):
            raise ValidationError("a zero query vector has no cosine distance")
        return q.tobytes()

    def _indexed(
        self,
        nsdef: Namespace,
        query: bytes,
        k: int,
        flt: Mapping[str, Any],
        where: str,
        params: Params,
        now_ms: int,
    ) -> Scored | None:
        """Top-k through the in-memory index, or None when there is none or it cannot answer."""
        index = vecindex.lookup(self._index_key)
        if index is None:
            return None
        # filter_sql has validated the filter; the index judges agent and TTL
        # itself, SQLite the rest (on the rows the index proposes).
        others = bool(
            flt.get("tags_any")
            or flt.get("tags_all")
            or flt.get("metadata")
            or flt.get("created_after") is not None
            or flt.get("created_before") is not None
        )

        def fetch_rows(rowids: list[int]) -> dict[int, dict[str, Any]]:
            return self._memories_among(where, params, rowids)

        def restrict() -> np.ndarray:
            rows = fetch(self._conn, f"SELECT m.rowid FROM memories m WHERE {where}", params)
            return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

        try:
            return index.search(
                nsdef.nid,
                self.applied_index(),
                np.frombuffer(query, dtype="<f4"),
                k,
                now_ms,
                flt.get("agent_id"),
                fetch_rows,
                restrict if others else None,
            )
        except Exception:
            # The accelerator must never cost an answer: vec0 still has it.
            log.exception("search_index_failed")
            return None

    def _memories_among(
        self, where: str, params: Params, rowids: Params
    ) -> dict[int, dict[str, Any]]:
        """Memories among ``rowids`` that pass ``where``, by rowid."""
        # CROSS JOIN: look the rowids up one by one. Left to itself the planner
        # may scan an agent's whole index (memories_agent) instead.
        rows = fetch(
            self._conn,
            f"SELECT {MEMORY_COLUMNS}, m.rowid FROM json_each(?) AS j"
            f" CROSS JOIN memories m ON m.rowid = j.value WHERE {where}",
            [orjson.dumps(rowids).decode(), *params],
        )
        return {r[10]: memory_from_row(r) for r in rows}

    def _knn(
        self,
        nsdef: Namespace,
        query: bytes,
        k: int,
        where: str,
        params: Params,
        has_filter: bool,
        now_ms: int,
    ) -> Scored | None:
        """Top-k through vec0's KNN, or None when it cannot prove exactness."""
        knn = (
            f"SELECT rowid, distance FROM {vec_table(nsdef.nid)} WHERE embedding MATCH ? AND k = ?"
        )
        if not has_filter:
            # Only TTL to apply. Expired-but-unpurged rows are usually few and far
            # away, so ask vec0 alone for a little more than k (absorbing up to k
            # expired rows) before paying for an IN list of every live row.
            expired = int(
                fetch(
                    self._conn,
                    "SELECT count(*) FROM memories WHERE ns = ? AND expires_at <= ?",
                    (nsdef.name, now_ms),
                )[0][0]
            )
            found = self._vec0_top(knn, query, [], k, k + 1 + min(expired, k), where, params)
            if found is not None or expired == 0:
                return found
        # vec0 applies "rowid IN (...)" before choosing the nearest.
        in_filter = f" AND rowid IN (SELECT m.rowid FROM memories m WHERE {where})"
        return self._vec0_top(knn + in_filter, query, params, k, k + 1, where, params)

    def _vec0_top(
        self,
        sql: str,
        query: bytes,
        extra: Params,
        k: int,
        limit: int,
        where: str,
        params: Params,
    ) -> Scored | None:
        """Run a vec0 KNN query, widening it a few times until its top k is provably exact.

        vec0 returns the ``limit`` nearest rows (ties cut arbitrarily). Every row
        it leaves out is at least as far as its last one, so the k-th best
        matching row is exact only if strictly nearer than that; otherwise a tie
        (identical embeddings are common: the same text stored twice) may hide a
        smaller id, and a wider query settles it.
        """
        for _ in range(3):
            limit = min(limit, VEC0_MAX_K)
            near = fetch(self._conn, sql, [query, limit, *extra])
            found = self._memories_among(where, params, [r for r, _ in near])
            scored = sorted(
                ((float(d), found[r]) for r, d in near if r in found),
                key=lambda h: (h[0], h[1]["id"]),
            )
            cut = len(near) == limit
            if not cut or (len(scored) >= k and scored[k - 1][0] < float(near[-1][1])):
                return scored[:k]
            if limit == VEC0_MAX_K:
                break
            limit *= 4
        return None

    def _scan(self, nsdef: Namespace, query: bytes, k: int, where: str, params: Params) -> Scored:
        fn = _DISTANCE_FN[nsdef.metric]
        rows = fetch(
            self._conn,
            f"SELECT {MEMORY_COLUMNS}, {fn}(v.embedding, ?) AS d"
            f" FROM memories m JOIN {vec_table(nsdef.nid)} v ON v.rowid = m.rowid"
            f" WHERE {where} ORDER BY d, m.id LIMIT ?",
            [query, *params, k],
        )
        return [(float(r[10]), memory_from_row(r)) for r in rows]

    # --- whole-content views (replay and convergence checks) -----------------------

    def _records(self) -> Iterator[tuple[str, dict[str, Any], bytes]]:
        """Every piece of replicated state in a canonical order, rowids excluded."""
        namespaces = fetch(
            self._conn, "SELECT nid, name, dim, metric, created_at FROM namespaces ORDER BY name"
        )
        for row in namespaces:
            yield "namespace", Namespace(*row).to_dict(), b""
        for nid, name, *_ in namespaces:
            cur = self._conn.execute(
                f"SELECT {MEMORY_COLUMNS}, v.embedding FROM memories m"
                f" JOIN {vec_table(nid)} v ON v.rowid = m.rowid"
                " WHERE m.ns = ? ORDER BY m.id",
                (name,),
            )
            for row in cur:
                yield "memory", memory_from_row(row), bytes(row[10])
        for rid, result, ts in self._conn.execute(
            "SELECT request_id, result, ts FROM requests ORDER BY request_id"
        ):
            yield "request", {"request_id": rid, "ts": ts}, bytes(result)

    def range_rows(self, start: int, end: int, after_rowid: int, limit: int) -> dict[str, Any]:
        """One page of a moving range's memories, as ``range_stage`` takes them.

        Scans up to ``limit`` rows in rowid order after ``after_rowid`` and keeps
        those whose key hashes into [start, end); ``next`` is where the next page
        starts (None at the end). A frozen range takes no writes, so its rows
        keep their rowids while it is paged through.
        """
        if not _is_int(after_rowid) or not _is_int(limit) or limit < 1:
            raise ValidationError("after_rowid and limit must be integers, limit >= 1")
        with self.transaction():
            rows = fetch(
                self._conn,
                f"SELECT {MEMORY_COLUMNS}, m.rowid, n.nid FROM memories m"
                " JOIN namespaces n ON n.name = m.ns WHERE m.rowid > ? ORDER BY m.rowid LIMIT ?",
                (after_rowid, limit),
            )
            out = []
            names: set[str] = set()
            for row in rows:
                mid, ns = row[0], row[1]
                if not start <= hash_key(ns, mid) < end:
                    continue
                emb = fetch(self._conn, f"SELECT embedding FROM {vec_table(row[11])}"
                            " WHERE rowid = ?", (row[10],))[0][0]
                out.append({"id": mid, "ns": ns, "agent_id": row[2], "text": row[3],
                            "metadata": row[4], "tags": row[5], "version": row[6],
                            "created_at": row[7], "updated_at": row[8], "expires_at": row[9],
                            "embedding": base64.b64encode(bytes(emb)).decode("ascii")})
                names.add(ns)
            namespaces = [d for d in self.list_namespaces() if d["name"] in names]
            own = self.ownership()
            return {"rows": out, "namespaces": namespaces,
                    "next": rows[-1][10] if len(rows) == limit else None,
                    "ownership": None if own is None else own.to_dict()}

    def range_requests(self, start: int, end: int, after: str, limit: int) -> dict[str, Any]:
        """One page of a moving range's dedup records ``[request_id, result, ts, point]``,
        by request id after ``after``; ``next`` None at the end."""
        if not isinstance(after, str) or not _is_int(limit) or limit < 1:
            raise ValidationError("after must be a string and limit an integer >= 1")
        lo = format_point(start)
        cond = "point >= ?" + ("" if end >= RING_SIZE else " AND point < ?")
        params: Params = [lo] + ([] if end >= RING_SIZE else [format_point(end)])
        with self.transaction():
            rows = fetch(self._conn, f"SELECT request_id, result, ts, point FROM requests"
                         f" WHERE {cond} AND request_id > ? ORDER BY request_id LIMIT ?",
                         (*params, after, limit))
        out = [[rid, bytes(result).decode(), ts, point] for rid, result, ts, point in rows]
        return {"requests": out, "next": rows[-1][0] if len(rows) == limit else None}

    def content(self) -> Records:
        """The full logical content: (kind, record, blob) with blob = embedding or result."""
        with self.transaction():
            return list(self._records())

    def digest(self) -> str:
        """sha256 over namespaces, memories (with embeddings) and dedup records.

        The applied index and rowids are left out: two replicas that applied the
        same entries, or one that installed a snapshot, must agree.
        """
        h = hashlib.sha256()
        with self.transaction():
            for kind, record, blob in self._records():
                body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
                h.update(kind.encode())
                h.update(len(body).to_bytes(8, "big"))
                h.update(body)
                h.update(len(blob).to_bytes(8, "big"))
                h.update(blob)
        return h.hexdigest()


# --- reads as data -------------------------------------------------------------------

# Each read operation and exactly the arguments it takes.
READ_OPS: dict[str, frozenset[str]] = {
    "get": frozenset({"ns", "id", "now_ms", "include_embedding"}),
    "list": frozenset({"ns", "agent_id", "tag", "limit", "after_id", "now_ms"}),
    "search": frozenset({"ns", "vector", "k", "filter", "now_ms"}),
    "get_namespace": frozenset({"ns"}),
    "list_namespaces": frozenset(),
    "ownership": frozenset(),
    "digest": frozenset(),
    "range_rows": frozenset({"start", "end", "after_rowid", "limit"}),
    "range_requests": frozenset({"start", "end", "after", "limit"}),
}


@dataclass(frozen=True)
class ReadSpec:
    """One read of one replica, as data: ``{"op": ..., "args": {...}}``, JSON all through.

    ``search`` takes its vector as a list of numbers (float32 values: they
    survive JSON exactly); ``get`` with ``now_ms`` None reads at the clock of
    the node that runs it, when it runs it.
    """

    op: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "args": dict(self.args)}

    @classmethod
    def from_dict(cls, d: Any) -> ReadSpec:
        """Parse :meth:`to_dict`'s form; ValidationError for anything else."""
        if not isinstance(d, Mapping) or set(d) != {"op", "args"}:
            raise ValidationError("a read spec is an object with op and args", field="spec")
        op, args = d["op"], d["args"]
        if not isinstance(op, str) or op not in READ_OPS:
            raise ValidationError(f"unknown read op {op!r}", field="spec.op")
        if not isinstance(args, Mapping) or set(args) != READ_OPS[op]:
            raise ValidationError(
                f"read op {op} takes exactly the args {sorted(READ_OPS[op])}", field="spec.args"
            )
        return cls(op, dict(args))


def refuse_unowned(r: Reader, ns: str, memory_id: str) -> None:
    """A replica serves a key only from a range its group owns in the state it reads."""
    own = r.ownership()
    if own is None:
        return
    why = own.refusal(hash_key(ns, memory_id), None)
    if why:
        raise EpochMismatch(f"{why} (key {memory_id!r})", group=own.group,
                            ownership=own.to_dict())


def run_read(r: Reader, spec: ReadSpec, clock: Callable[[], int] | None = None) -> Any:
    """Run ``spec`` on ``r``; the answer is JSON-serialisable (an ownership as its dict).

    ``clock`` gives ``now_ms`` to a ``get`` that names none.
    """
    a = spec.args
    if spec.op == "get":
        refuse_unowned(r, a["ns"], a["id"])
        now = a["now_ms"]
        if now is None:
            if clock is None:
                raise ValidationError("get needs now_ms or a clock")
            now = clock()
        return r.get(a["ns"], a["id"], now, bool(a["include_embedding"]))
    if spec.op == "list":
        return r.list(a["ns"], a["agent_id"], a["tag"], a["limit"], a["after_id"], a["now_ms"])
    if spec.op == "search":
        return r.search(a["ns"], np.asarray(a["vector"], dtype=np.float32), a["k"], a["filter"],
                        a["now_ms"])
    if spec.op == "get_namespace":
        return r.get_namespace(a["ns"])
    if spec.op == "list_namespaces":
        return r.list_namespaces()
    if spec.op == "ownership":
        own = r.ownership()
        return None if own is None else own.to_dict()
    if spec.op == "digest":
        return r.digest()
    if spec.op == "range_requests":
        return r.range_requests(parse_point(a["start"]), parse_point(a["end"]), a["after"],
                                a["limit"])
    if spec.op == "range_rows":
        return r.range_rows(parse_point(a["start"]), parse_point(a["end"]), a["after_rowid"],
                            a["limit"])
    raise ValidationError(f"unknown read op {spec.op!r}")
