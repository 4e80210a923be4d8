"""An in-memory exact vector index per namespace, kept in step with SQLite (the search accelerator).

Why: sqlite-vec's vec0 KNN scans every vector inside SQLite, slowly and even
when a filter leaves 1 % of them. This index holds each namespace's vectors in
float32 blocks (fixed capacity, about 16 MiB of vectors each, allocated
untouched: appending is O(dim) and never copies a block) and answers a search
with one float32 pass per block (or, with an agent filter, over that agent's
rows only, from per-agent position lists). SQLite stays the truth: the
rows of the top k are fetched from it in the reader's own transaction, and any
search the index cannot serve exactly falls back to the vec0 path.

Consistency with the reader's snapshot (MVCC rows)
--------------------------------------------------

Readers search inside a SQLite read transaction while the raft thread keeps
applying entries, so the index must answer "as of" the applied index ``S`` of
that transaction (``meta.applied_index``, read in the same transaction).

* Rows are append-only *versions*: each row holds ``born`` (the entry index
  that created it) and ``died`` (the entry that deleted or replaced it;
  ``INF`` while live). A search at snapshot ``S`` considers exactly the rows
  with ``born <= S < died``. A patch that changes the embedding, the agent or
  the expiry kills the old version and appends a new one; a vector, agent and
  expiry never change inside a version.
* The state machine makes the index changes of entry ``I`` *before* it commits
  ``I`` to SQLite (and undoes them if the transaction rolls back). So a reader
  whose snapshot holds ``I`` finds them, and a reader at ``S < I`` ignores them
  (``born = I > S``; ``died = I > S`` leaves the old version visible).
* Only the raft thread writes. A row is written completely before the block's
  row count is raised, and readers read the count first, so they never see a
  half-written row. ``died`` is one aligned int64 store; a reader sees either
  value, and both give the same answer for every ``S`` it can hold.
* A generation of rows is valid for snapshots ``base <= S <= until``. Outside
  that range (a transaction older than the last compaction, or one that sees
  a snapshot install while the index is rebuilt) the search returns ``None``
  and the reader takes the vec0 path, which is always exact.

Compaction copies the rows still visible at the last committed index ``A``
(``died > A``) into a new generation on a background thread, without the
lock; the raft thread keeps appending to and killing rows of the old one.
Then, under the lock (briefly: O(rows) integer gathers, no vector copies), it
re-reads ``died`` of the copied rows, copies the rows appended meanwhile, and
swaps. The new generation holds every row visible at any ``S >= A``, so its
``base`` is ``A``; readers that still hold the old generation keep using it.

Exactness
---------

Distances are first computed approximately in float32 (numpy ``einsum``, about
twice OpenBLAS's ``sgemv`` on row-major blocks here), with a proven error bound
``E`` (``|error| <= gamma_dim * sum |q_i x_i|`` for any summation order, taken
4x over; for l2 on squared distances). Rows are then taken in approximate
order, re-scored exactly in float64 from their stored float32 vectors, and
reported as float32 (as vec0 reports them), until every row not taken is
provably worse than the k-th: its approximate value minus ``E`` exceeds the
k-th exact value by more than the float32 rounding of a distance. The top k
are ordered by (distance, memory id): the same answer the vec0 path gives. Rows are fetched
from SQLite with the reader's full filter; filters the index does not know
(tags, metadata, creation time) are applied there, widening the candidate set
until the top k is provably complete, or, past a budget, by asking SQLite for
the matching rowids first.

Memory: ``4 * dim + 40`` bytes per row version, plus 8 bytes per row in its
agent's list and a dict entry per live memory; :meth:`VectorIndex.stats`
reports it (the node shows it per group in its cluster state). The index is rebuilt from SQLite when the state machine opens and
after a snapshot install.
"""

from __future__ import annotations

import bisect
import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import apsw
import numpy as np
import structlog

from raftmem.statemachine.schema import fetch, vec_table

log = structlog.get_logger("raftmem.vecindex")

INF = int(np.iinfo(np.int64).max)

# Rows per block: about 16 MiB of vectors (64..65,536 rows). Blocks are
# allocated empty, so pages a namespace has not filled yet cost no memory.
_MIN_ROWS = 64
_MAX_ROWS = 65_536
_BLOCK_BYTES = 16 << 20
# Compaction starts when dead rows exceed this many and a quarter of the rows.
COMPACT_MIN_DEAD = 8192
COMPACT_FRACTION = 0.25
# Rows fetched through a filter the index does not know (tags, metadata,
# creation time) before SQLite is asked for the matching rowids instead.
POSTFILTER_BUDGET = 512
# Vectors whose norm is outside this range (below it: cosine only) would
# overflow float32 arithmetic: their namespace is searched through SQLite.
_NORM_MIN = 1e-15
_NORM_MAX = 1e15

Memory = dict[str, Any]
Scored = list[tuple[float, Memory]]
FetchFn = Callable[[list[int]], dict[int, Memory]]
RestrictFn = Callable[[], np.ndarray]


def _norm_ok(sq: float, metric: str) -> bool:
    """Whether float32 arithmetic on a vector with this squared norm is safe (cosine divides)."""
    norm = sq**0.5
    return norm <= _NORM_MAX and (metric != "cosine" or norm >= _NORM_MIN)


def _u32_bound(dim: int) -> float:
    """Four times the classic dot-product error bound gamma_dim = dim * 2**-24 (plus a few ops)."""
    return (dim + 16) * 2.0**-22


class _Block:
    """Fixed-capacity arrays of row versions; rows [0, n) are complete."""

    __slots__ = ("agent", "aux", "born", "died", "expires", "n", "rowid", "serial", "vec")

    def __init__(self, cap: int, dim: int) -> None:
        self.vec = np.empty((cap, dim), dtype=np.float32)
        # cosine: 1 / |x|; l2: |x|^2 (float32, what the approximate pass needs)
        self.aux = np.empty(cap, dtype=np.float32)
        self.rowid = np.empty(cap, dtype=np.int64)
        self.born = np.empty(cap, dtype=np.int64)
        self.died = np.empty(cap, dtype=np.int64)  # written with every row
        self.expires = np.empty(cap, dtype=np.int64)
        self.agent = np.empty(cap, dtype=np.int32)
        self.serial = np.empty(cap, dtype=np.int64)
        self.n = 0

    @property
    def cap(self) -> int:
        return int(self.vec.shape[0])

    def nbytes(self, rows: int | None = None) -> int:
        """Bytes of the first ``rows`` rows (all of the capacity if None)."""
        arrays = (
            self.vec,
            self.aux,
            self.rowid,
            self.born,
            self.died,
            self.expires,
            self.agent,
            self.serial,
        )
        per_row = sum(int(a.itemsize) * (a.size // self.cap) for a in arrays)
        return per_row * (self.cap if rows is None else rows)


class _PosList:
    """An append-only int64 list that readers may read while the raft thread appends."""

    __slots__ = ("arr", "n")

    def __init__(self, initial: np.ndarray | None = None) -> None:
        if initial is None:
            self.arr = np.empty(4, dtype=np.int64)
            self.n = 0
        else:
            self.arr = np.array(initial, dtype=np.int64)
            self.n = len(self.arr)

    def append(self, value: int) -> None:
        n = self.n
        if n == len(self.arr):
            grown = np.empty(max(4, 2 * n), dtype=np.int64)
            grown[:n] = self.arr[:n]
            grown[n] = value
            self.arr = grown  # holds the old prefix, so a reader's n stays valid
        else:
            self.arr[n] = value
        self.n = n + 1

    def extend(self, values: np.ndarray) -> None:
        n, m = self.n, len(values)
        if n + m > len(self.arr):
            grown = np.empty(max(4, 2 * (n + m)), dtype=np.int64)
            grown[:n] = self.arr[:n]
            grown[n : n + m] = values
            self.arr = grown
        else:
            self.arr[n : n + m] = values
        self.n = n + m

    def view(self) -> np.ndarray:
        n = self.n  # count first: the array read next holds at least n values
        return self.arr[:n]


class _Generation:
    """Rows of one namespace, valid for snapshots base <= S <= until."""

    def __init__(self, dim: int, metric: str, base: int) -> None:
        self.dim = dim
        self.metric = metric
        self.base = base
        self.until = INF
        self.blocks: list[_Block] = []
        self.starts: list[int] = []
        self.count = 0
        self.dead = 0
        self.max_sq = 0.0  # largest |x|^2 of any row (l2 error bound)
        self.unsafe = False  # a norm outside [_NORM_MIN, _NORM_MAX]
        self.agents: dict[int, _PosList] = {}
        self.first_serials: list[int] = []  # serial of each block's row 0 (for position_of)
        self._rows = min(_MAX_ROWS, max(_MIN_ROWS, _BLOCK_BYTES // (4 * dim)))

    # --- writing (raft thread, or a compaction thread on a private generation) ---------

    def _block_for_append(self) -> _Block:
        if self.blocks and self.blocks[-1].n < self.blocks[-1].cap:
            return self.blocks[-1]
        blk = _Block(self._rows, self.dim)
        self.starts.append(self.count)
        self.blocks.append(blk)
        return blk

    def _note_norm(self, sq: float) -> None:
        if not _norm_ok(sq, self.metric):
            self.unsafe = True
        self.max_sq = max(self.max_sq, sq)

    def aux_of(self, vec: np.ndarray) -> tuple[float, float]:
        """(aux value, |x|^2) of one vector."""
        v64 = vec.astype(np.float64)
        sq = float(v64 @ v64)
        if self.metric == "cosine":
            return (1.0 / sq**0.5 if sq > 0 else 0.0), sq
        return sq, sq

    def append(
        self,
        vec: np.ndarray,
        rowid: int,
        born: int,
        expires: int,
        agent: int,
        serial: int,
        died: int = INF,
    ) -> int:
        blk = self._block_for_append()
        j = blk.n
        if j == 0:
            self.first_serials.append(serial)
        aux, sq = self.aux_of(vec)
        self._note_norm(sq)
        blk.vec[j] = vec
        blk.aux[j] = aux
        blk.rowid[j] = rowid
        blk.born[j] = born
        blk.died[j] = died
        blk.expires[j] = expires
        blk.agent[j] = agent
        blk.serial[j] = serial
        pos = self.count
        plist = self.agents.get(agent)
        if plist is None:
            plist = self.agents[agent] = _PosList()
        plist.append(pos)
        if died != INF:
            self.dead += 1
        blk.n = j + 1  # publish the row
        self.count = pos + 1
        return pos

    def extend(
        self,
        vecs: np.ndarray,
        rowid: np.ndarray,
        born: np.ndarray,
        died: np.ndarray,
        expires: np.ndarray,
        agent: np.ndarray,
        serial: np.ndarray,
    ) -> None:
        """Append many rows at once (rebuild, compaction): ``append`` without the per-row cost."""
        m = len(vecs)
        if m == 0:
            return
        v64 = vecs.astype(np.float64)
        sq = np.einsum("ij,ij->i", v64, v64)
        del v64
        norms = np.sqrt(sq)
        if self.metric == "cosine":
            aux = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
            if bool(np.any(norms < _NORM_MIN)):
                self.unsafe = True
        else:
            aux = sq
        if bool(np.any(norms > _NORM_MAX)):
            self.unsafe = True
        self.max_sq = max(self.max_sq, float(sq.max()))
        first = self.count
        i = 0
        while i < m:
            blk = self._block_for_append()
            room = min(blk.cap - blk.n, m - i)
            a, b = blk.n, blk.n + room
            if a == 0:
                self.first_serials.append(int(serial[i]))
            blk.vec[a:b] = vecs[i : i + room]
            blk.aux[a:b] = aux[i : i + room]
            blk.rowid[a:b] = rowid[i : i + room]
            blk.born[a:b] = born[i : i + room]
            blk.died[a:b] = died[i : i + room]
            blk.expires[a:b] = expires[i : i + room]
            blk.agent[a:b] = agent[i : i + room]
            blk.serial[a:b] = serial[i : i + room]
            blk.n = b
            self.count += room
            i += room
        order = np.argsort(agent, kind="stable")
        codes, starts = np.unique(agent[order], return_index=True)
        for code, chunk in zip(codes.tolist(), np.split(order, starts[1:]), strict=True):
            plist = self.agents.get(int(code))
            if plist is None:
                plist = self.agents[int(code)] = _PosList()
            plist.extend(chunk + first)
        self.dead += int(np.count_nonzero(died != INF))

    def locate(self, pos: int) -> tuple[_Block, int]:
        b = bisect.bisect_right(self.starts, pos) - 1
        return self.blocks[b], pos - self.starts[b]

    def position_of(self, serial: int) -> int:
        """The position of a row version by its serial (serials ascend with position)."""
        b = bisect.bisect_right(self.first_serials, serial) - 1
        if b < 0:
            raise KeyError(serial)
        blk = self.blocks[b]
        j = int(np.searchsorted(blk.serial[: blk.n], serial))
        if j >= blk.n or int(blk.serial[j]) != serial:
            raise KeyError(serial)
        return self.starts[b] + j

    # --- reading (any thread) --------------------------------------------------------

    def nbytes(self) -> int:
        total = sum(blk.nbytes(blk.n) for blk in list(self.blocks))
        # an agent list: its array plus ~200 bytes of objects and dict entry
        return total + sum(int(p.arr.nbytes) + 200 for p in list(self.agents.values()))

    def snapshot_blocks(self) -> list[tuple[int, _Block, int]]:
        """(start, block, rows) per block, as of now; every block but the last is full."""
        blocks = list(self.blocks)
        starts = self.starts[: len(blocks)]
        return [(s, blk, blk.n) for s, blk in zip(starts, blocks, strict=True)]

    def split(self, positions: np.ndarray) -> Iterator[tuple[int, _Block, int, int]]:
        """(block start, block, lo, hi) for the blocks holding ``positions[lo:hi]``
        (``positions`` ascending)."""
        nblocks = len(self.blocks)
        starts = self.starts[:nblocks]
        cuts = np.searchsorted(positions, starts).tolist() + [len(positions)]
        for b in range(nblocks):
            if cuts[b] < cuts[b + 1]:
                yield starts[b], self.blocks[b], cuts[b], cuts[b + 1]

    def gather(self, positions: np.ndarray, *fields: str) -> list[np.ndarray]:
        """The named per-row arrays (``vec``, ``aux``, ``rowid``, ``born``, ``died``,
        ``expires``) at ``positions``, in that order."""
        m = len(positions)
        ascending = m < 2 or bool(np.all(positions[1:] >= positions[:-1]))
        order = None if ascending else np.argsort(positions, kind="stable")
        pos = positions if order is None else positions[order]
        nblocks = len(self.blocks)
        starts = np.asarray(self.starts[:nblocks], dtype=np.int64)
        cuts = np.searchsorted(pos, starts).tolist() + [m]
        outs = [
            np.empty((m, self.dim) if f == "vec" else m, dtype=getattr(self.blocks[0], f).dtype)
            if nblocks
            else np.empty(0)
            for f in fields
        ]
        for b in range(nblocks):
            lo, hi = cuts[b], cuts[b + 1]
            if lo == hi:
                continue
            blk = self.blocks[b]
            off = pos[lo:hi] - starts[b]
            for f, out in zip(fields, outs, strict=True):
                out[lo:hi] = getattr(blk, f)[off]
        if order is not None:
            for i, out in enumerate(outs):
                back = np.empty_like(out)
                back[order] = out
                outs[i] = back
        return outs


class _Space:
    """One namespace: its current generation, live map and agent codes."""

    def __init__(self, nid: int, dim: int, metric: str, base: int) -> None:
        self.nid = nid
        self.dim = dim
        self.metric = metric
        self.gen = _Generation(dim, metric, base)
        self.live: dict[int, int] = {}  # mrow -> serial of its live version
        self.next_serial = 0
        self.agent_codes: dict[str, int] = {}
        self.broken = False

    def agent_code(self, agent: str) -> int:
        code = self.agent_codes.get(agent)
        if code is None:
            code = self.agent_codes[agent] = len(self.agent_codes)
        return code

    def nbytes(self) -> int:
        gen = self.gen
        # dict entries: ~100 bytes each with their int keys/values
        return gen.nbytes() + sys.getsizeof(self.live) + 56 * len(self.live)

    # --- search --------------------------------------------------------------------

    def search(
        self,
        snapshot: int,
        query: np.ndarray,
        k: int,
        now_ms: int,
        agent: str | None,
        fetch_rows: FetchFn,
        restrict: RestrictFn | None,
    ) -> Scored | None:
        gen = self.gen
        if self.broken or gen.unsafe or not gen.base <= snapshot <= gen.until:
            return None
        q64 = query.astype(np.float64)
        qsq = float(q64 @ q64)
        if not _norm_ok(qsq, self.metric):
            return None
        search = _Search(gen, q64, qsq, snapshot, now_ms, k, fetch_rows, restrict)
        if agent is not None:
            code = self.agent_codes.get(agent)
            if code is None:
                return []
            plist = gen.agents.get(code)
            if plist is None:
                return []
            return search.over_positions(plist.view())
        return search.over_all()


class _Search:
    """One exact top-k search over a generation at snapshot S."""

    def __init__(
        self,
        gen: _Generation,
        q64: np.ndarray,
        qsq: float,
        snapshot: int,
        now_ms: int,
        k: int,
        fetch_rows: FetchFn,
        restrict: RestrictFn | None,
    ) -> None:
        self.gen = gen
        self.q64 = q64
        self.snapshot = snapshot
        self.now = now_ms
        self.k = k
        self.fetch_rows = fetch_rows
        self.restrict = restrict
        self.cosine = gen.metric == "cosine"
        self.qnorm = qsq**0.5
        if self.cosine:
            self.q32 = (q64 / qsq**0.5).astype(np.float32)
            self.err = _u32_bound(gen.dim)
        else:
            self.q32 = q64.astype(np.float32)
            self.qsq32 = np.float32(qsq)
            # max_sq only grows, so reading it after the rows is an upper bound for them
            self.err = _u32_bound(gen.dim) * (qsq + gen.max_sq)

    def _approx(self, vec: np.ndarray, aux: np.ndarray) -> np.ndarray:
        # numpy's own float32 loop: about twice OpenBLAS's sgemv on row-major
        # blocks here, and it releases the GIL; the error bound holds for any order
        dots = np.einsum("ij,j->i", vec, self.q32)
        if self.cosine:
            out: np.ndarray = np.float32(1.0) - dots * aux
        else:
            out = (self.qsq32 + aux) - np.float32(2.0) * dots
        return out

    def _visible(self, born: np.ndarray, died: np.ndarray, expires: np.ndarray) -> np.ndarray:
        s = self.snapshot
        mask: np.ndarray = (born <= s) & (died > s) & (expires > self.now)
        return mask

    def over_all(self) -> Scored:
        parts: list[np.ndarray] = []
        rowids: list[np.ndarray] = []
        expected = 0
        for start, blk, n in self.gen.snapshot_blocks():
            if start != expected:  # cannot happen (blocks fill in order); stay safe
                break
            vals = self._approx(blk.vec[:n], blk.aux[:n])
            vals[~self._visible(blk.born[:n], blk.died[:n], blk.expires[:n])] = np.inf
            parts.append(vals)
            rowids.append(blk.rowid[:n])
            expected = start + n
        if not parts:
            return []
        vals = np.concatenate(parts)
        return self._select(None, vals, lambda: np.concatenate(rowids))

    def over_positions(self, positions: np.ndarray) -> Scored:
        """Over the rows at ``positions`` (ascending, as agent lists are) only."""
        vals: list[np.ndarray] = []
        kept: list[np.ndarray] = []
        rowids: list[np.ndarray] = []
        for start, blk, lo, hi in self.gen.split(positions):
            off = positions[lo:hi] - start
            off = off[self._visible(blk.born[off], blk.died[off], blk.expires[off])]
            if len(off):
                vals.append(self._approx(blk.vec[off], blk.aux[off]))
                kept.append(off + start)
                rowids.append(blk.rowid[off])
        if not vals:
            return []
        rowid = np.concatenate(rowids)
        return self._select(np.concatenate(kept), np.concatenate(vals), lambda: rowid)

    def _exact(self, vec: np.ndarray) -> np.ndarray:
        """Exact float64 values (cosine distance, or squared l2 distance) of stored vectors."""
        x = vec.astype(np.float64)
        if self.cosine:
            norms = np.sqrt(np.einsum("ij,ij->i", x, x)) * self.qnorm
            out: np.ndarray = 1.0 - np.einsum("ij,j->i", x, self.q64) / norms
            return out
        diff = x - self.q64
        return np.einsum("ij,ij->i", diff, diff)

    def _select(
        self, positions: np.ndarray | None, vals: np.ndarray, all_rowids: Callable[[], np.ndarray]
    ) -> Scored:
        """Exact top k among the finite ``vals`` (row i is ``positions[i]``, or i itself).

        Rows are fetched (and scored exactly) in order of their approximate
        value until every row left out is provably worse than the k-th found:
        its approximate value is at least ``bound``, so its exact one is at
        least ``bound - err``, which must be beyond the k-th's exact value by
        more than float32 rounding of the reported distance.
        """
        k = self.k
        eligible = int(np.count_nonzero(np.isfinite(vals)))
        if eligible == 0:
            return []
        # With filters the index cannot judge, some fetched rows will not pass.
        all_pass = self.restrict is None
        want = min(eligible, k if all_pass else 2 * k + 16)
        budget = max(POSTFILTER_BUDGET, 32 * k)
        fetched: set[int] = set()
        found: dict[int, tuple[float, float, Memory]] = {}  # i -> (exact, reported, memory)
        while True:
            if want < len(vals):
                idx = np.argpartition(vals, want)
                take, bound = idx[:want], float(vals[idx[want]])
            else:
                take, bound = np.arange(len(vals)), np.inf
            new = [i for i in take.tolist() if i not in fetched]
            if new:
                self._fetch(positions, new, found)
                fetched.update(new)
            if bound == np.inf or len(found) >= k:
                ranked = sorted(found.values(), key=lambda h: (h[1], h[2]["id"]))
                if bound == np.inf:
                    return [(d, m) for _, d, m in ranked[:k]]
                kth = ranked[k - 1][0]
                if bound - self.err > kth + 1e-6 * abs(kth) + 1e-12:
                    return [(d, m) for _, d, m in ranked[:k]]
            if not all_pass and len(fetched) >= budget:
                # A selective filter the index does not know: let SQLite name the
                # matching rows and go on over those only.
                assert self.restrict is not None
                match = np.asarray(self.restrict(), dtype=np.int64)
                vals = np.where(np.isin(all_rowids(), match), vals, np.inf)
                all_pass = True
                eligible = int(np.count_nonzero(np.isfinite(vals)))
                if eligible == 0:
                    return []
                want = min(eligible, k)
                continue
            want = min(eligible, want * 4)

    def _fetch(
        self,
        positions: np.ndarray | None,
        idx: list[int],
        found: dict[int, tuple[float, float, Memory]],
    ) -> None:
        arr = np.asarray(idx, dtype=np.int64)
        pos = arr if positions is None else positions[arr]
        vec, rowid = self.gen.gather(pos, "vec", "rowid")
        rows = self.fetch_rows(rowid.tolist())
        exact = self._exact(vec)
        for i, r, e in zip(idx, rowid.tolist(), exact.tolist(), strict=True):
            mem = rows.get(r)
            if mem is None:
                continue
            d = e if self.cosine else max(e, 0.0) ** 0.5
            found[i] = (e, float(np.float32(d)), mem)


class _Journal:
    """Index changes of the entries applied since the last commit, to undo them if
    they roll back (``index`` is the entry being applied)."""

    __slots__ = ("index", "touched", "undo")

    def __init__(self, index: int) -> None:
        self.index = index
        self.undo: list[Callable[[], None]] = []
        self.touched: set[int] = set()


class VectorIndex:
    """All namespaces of one database. One writer (the raft thread); readers on any thread.

    The state machine calls :meth:`begin` before an entry's SQLite work, the
    ``memory_*``/``namespace_created`` hooks (through ``ops``) while it runs,
    and :meth:`commit` or :meth:`rollback` after.
    """

    def __init__(
        self,
        path: str,
        *,
        compact_min_dead: int = COMPACT_MIN_DEAD,
        compact_fraction: float = COMPACT_FRACTION,
        background_compaction: bool = True,
    ) -> None:
        self.key = os.path.realpath(path)
        self._spaces: dict[int, _Space] = {}
        self._lock = threading.Lock()
        self._journal: _Journal | None = None
        self._committed = 0
        self.compact_min_dead = compact_min_dead
        self.compact_fraction = compact_fraction
        self.background_compaction = background_compaction
        self._compactor: threading.Thread | None = None
        self.compactions = 0
        self.rebuilds = 0
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------

    def rebuild(self, conn: apsw.Connection, applied: int) -> None:
        """Load every namespace from the database ``conn`` (its committed state at ``applied``)."""
        spaces: dict[int, _Space] = {}
        for nid, name, dim, metric in fetch(
            conn, "SELECT nid, name, dim, metric FROM namespaces ORDER BY nid"
        ):
            attrs = {
                r: (a, INF if e is None else e)
                for r, a, e in fetch(
                    conn, "SELECT rowid, agent_id, expires_at FROM memories WHERE ns = ?", (name,)
                )
            }
            space = _Space(nid, dim, metric, applied)
            if not self._load(conn, space, attrs, _stored_chunks(conn, nid, dim)):
                # vec0's storage is not laid out as expected: its own (slower) scan
                space = _Space(nid, dim, metric, applied)
                if not self._load(conn, space, attrs, _scanned_chunks(conn, nid, dim)):
                    self._break(space, "memories and vectors disagree")
            spaces[nid] = space
        with self._lock:
            self._spaces = spaces
            self._committed = applied
            self.rebuilds += 1

    @staticmethod
    def _load(
        conn: apsw.Connection,
        space: _Space,
        attrs: dict[int, tuple[str, int]],
        chunks: Iterator[tuple[np.ndarray, np.ndarray]],
    ) -> bool:
        """Fill ``space`` from (rowids, vectors) chunks; False unless they are exactly the
        namespace's memories (and a few vectors match vec0's own answer)."""
        try:
            for rowids, vecs in chunks:
                found = [attrs.get(r) for r in rowids.tolist()]
                if any(f is None for f in found):
                    return False
                known = [f for f in found if f is not None]
                m = len(rowids)
                serials = np.arange(space.next_serial, space.next_serial + m, dtype=np.int64)
                space.next_serial += m
                space.gen.extend(
                    vecs,
                    rowids,
                    np.zeros(m, dtype=np.int64),
                    np.full(m, INF, dtype=np.int64),
                    np.fromiter((e for _, e in known), dtype=np.int64, count=m),
                    np.fromiter((space.agent_code(a) for a, _ in known), dtype=np.int32, count=m),
                    serials,
                )
                space.live.update(zip(rowids.tolist(), serials.tolist(), strict=True))
        except (apsw.Error, ValueError):
            return False
        if len(space.live) != len(attrs) or space.next_serial != len(attrs):
            return False
        gen = space.gen
        for pos in sorted({int(p) for p in np.linspace(0, gen.count - 1, 16)} if gen.count else ()):
            blk, j = gen.locate(pos)
            rows = fetch(
                conn,
                f"SELECT embedding FROM {vec_table(space.nid)} WHERE rowid = ?",
                (int(blk.rowid[j]),),
            )
            if not rows or bytes(rows[0][0]) != blk.vec[j].astype("<f4").tobytes():
                return False
        return True

    def seal(self, applied: int) -> None:
        """From now on serve no snapshot beyond ``applied`` (before the database is replaced)."""
        with self._lock:
            for space in self._spaces.values():
                space.gen.until = min(space.gen.until, applied)

    def close(self) -> None:
        self._closed = True
        compactor = self._compactor
        if compactor is not None:
            compactor.join()

    # --- the apply path (raft thread) -------------------------------------------------

    def begin(self, index: int) -> VectorIndex:
        """Changes from now on are entry ``index``'s. Entries of one SQLite
        transaction (group commit) share a journal: ``commit``/``rollback``
        then take them all."""
        journal = self._journal
        if journal is None:
            self._lock.acquire()
            self._journal = _Journal(index)
        else:
            journal.index = index
        return self

    def commit(self) -> None:
        journal = self._journal
        self._journal = None
        if journal is not None:
            self._committed = journal.index
        self._lock.release()
        if journal is not None and journal.touched:
            self._maybe_compact(journal.touched)

    def rollback(self) -> None:
        journal = self._journal
        self._journal = None
        try:
            if journal is not None:
                for undo in reversed(journal.undo):
                    undo()
        finally:
            self._lock.release()

    def _entry(self) -> _Journal:
        journal = self._journal
        if journal is None:
            raise RuntimeError("index change outside an apply")
        return journal

    def namespace_created(self, nid: int, dim: int, metric: str) -> None:
        journal = self._entry()
        self._spaces[nid] = _Space(nid, dim, metric, 0)

        def undo() -> None:
            self._spaces.pop(nid, None)

        journal.undo.append(undo)

    def memory_added(
        self, nid: int, mrow: int, embedding: np.ndarray, agent_id: str, expires_at: int | None
    ) -> None:
        journal = self._entry()
        space = self._spaces.get(nid)
        if space is None or space.broken:
            return
        self._add(
            journal, space, mrow, np.asarray(embedding, dtype=np.float32), agent_id, expires_at
        )

    def memory_removed(self, nid: int, mrow: int) -> None:
        journal = self._entry()
        space = self._spaces.get(nid)
        if space is None or space.broken:
            return
        self._kill(journal, space, mrow)

    def memory_changed(
        self,
        nid: int,
        mrow: int,
        embedding: np.ndarray | None,
        agent_id: str,
        expires_at: int | None,
    ) -> None:
        """A new version of ``mrow``: a new embedding (or the old one), agent and expiry."""
        journal = self._entry()
        space = self._spaces.get(nid)
        if space is None or space.broken:
            return
        old = self._kill(journal, space, mrow)
        if old is None:
            return
        if embedding is None:
            blk, j = old
            vec = blk.vec[j].copy()
        else:
            vec = np.asarray(embedding, dtype=np.float32)
        self._add(journal, space, mrow, vec, agent_id, expires_at)

    def _add(
        self,
        journal: _Journal,
        space: _Space,
        mrow: int,
        vec: np.ndarray,
        agent_id: str,
        expires_at: int | None,
    ) -> None:
        if mrow in space.live or vec.shape != (space.dim,):
            self._break(space, f"row {mrow} added twice or with a wrong shape")
            return
        gen = space.gen
        serial = space.next_serial
        space.next_serial += 1
        born = journal.index
        pos = gen.append(
            vec,
            mrow,
            born,
            INF if expires_at is None else expires_at,
            space.agent_code(agent_id),
            serial,
        )
        space.live[mrow] = serial

        def undo() -> None:
            blk, j = gen.locate(pos)
            blk.died[j] = born  # born == died: visible to no snapshot
            gen.dead += 1
            if space.live.get(mrow) == serial:
                del space.live[mrow]

        journal.undo.append(undo)
        journal.touched.add(space.nid)

    def _kill(self, journal: _Journal, space: _Space, mrow: int) -> tuple[_Block, int] | None:
        serial = space.live.pop(mrow, None)
        if serial is None:
            self._break(space, f"row {mrow} is not in the index")
            return None
        gen = space.gen
        try:
            pos = gen.position_of(serial)
        except KeyError:
            self._break(space, f"row {mrow} (serial {serial}) has no position")
            return None
        blk, j = gen.locate(pos)
        blk.died[j] = journal.index
        gen.dead += 1

        def undo() -> None:
            blk.died[j] = INF
            gen.dead -= 1
            space.live[mrow] = serial

        journal.undo.append(undo)
        journal.touched.add(space.nid)
        return blk, j

    @staticmethod
    def _break(space: _Space, why: str) -> None:
        # Never fail an apply over the accelerator: searches of this namespace
        # go through SQLite until the next rebuild.
        log.error("search_index_disabled", namespace_id=space.nid, reason=why)
        space.broken = True

    # --- compaction -----------------------------------------------------------------

    def _needs_compaction(self, space: _Space) -> bool:
        gen = space.gen
        return gen.dead >= self.compact_min_dead and gen.dead >= self.compact_fraction * gen.count

    def _maybe_compact(self, nids: set[int]) -> None:
        if not self.background_compaction or self._closed:
            return
        if self._compactor is not None and self._compactor.is_alive():
            return
        spaces = [self._spaces.get(nid) for nid in nids]
        todo = [s.nid for s in spaces if s is not None and self._needs_compaction(s)]
        if todo:
            self._compactor = threading.Thread(
                target=self._compact_all, args=(todo,), name="vecindex-compact", daemon=True
            )
            self._compactor.start()

    def _compact_all(self, nids: list[int]) -> None:
        for nid in nids:
            if self._closed:
                return
            try:
                self.compact(nid)
            except Exception:
                log.exception("search_index_compaction_failed", namespace_id=nid)

    def compact(self, nid: int) -> bool:
        """Drop dead row versions of one namespace; True if a new generation was published."""
        plan = self.compact_begin(nid)
        if plan is None:
            return False
        self.compact_copy(plan)
        return self.compact_finish(plan)

    def compact_begin(self, nid: int) -> _CompactionPlan | None:
        with self._lock:
            space = self._spaces.get(nid)
            if space is None or space.broken:
                return None
            src = space.gen
            return _CompactionPlan(space, src, src.count, self._committed)

    @staticmethod
    def compact_copy(plan: _CompactionPlan) -> None:
        """The expensive part, without the lock: copy rows still visible at ``plan.base``."""
        src, base = plan.src, plan.base
        new = _Generation(src.dim, src.metric, base)
        sources: list[np.ndarray] = []
        for start, blk, n in src.snapshot_blocks():
            n = min(n, plan.rows - start)
            if n <= 0:
                break
            keep = np.nonzero(blk.died[:n] > base)[0]
            sources.append(start + keep)
            # died is re-read under the lock in compact_finish
            new.extend(
                blk.vec[keep],
                blk.rowid[keep],
                blk.born[keep],
                np.full(len(keep), INF, dtype=np.int64),
                blk.expires[keep],
                blk.agent[keep],
                blk.serial[keep],
            )
        plan.sources = np.concatenate(sources) if sources else np.empty(0, dtype=np.int64)
        plan.new = new

    def compact_finish(self, plan: _CompactionPlan) -> bool:
        """Under the lock: catch up with what the raft thread did meanwhile, then swap."""
        new = plan.new
        assert new is not None
        with self._lock:
            space, src = plan.space, plan.src
            if self._spaces.get(space.nid) is not space or space.gen is not src or space.broken:
                return False
            # died of the copied rows, as of now (kills since the copy began)
            dead = 0
            offset = 0
            for blk in new.blocks:
                n = blk.n
                died = self._gather_died(src, plan.sources[offset : offset + n])
                blk.died[:n] = died
                dead += int(np.count_nonzero(died != INF))
                offset += n
            new.dead = dead
            # rows appended since the copy began
            for pos in range(plan.rows, src.count):
                blk, j = src.locate(pos)
                new.append(
                    blk.vec[j],
                    int(blk.rowid[j]),
                    int(blk.born[j]),
                    int(blk.expires[j]),
                    int(blk.agent[j]),
                    int(blk.serial[j]),
                    died=int(blk.died[j]),
                )
            new.until = src.until
            space.gen = new
            self.compactions += 1
        return True

    @staticmethod
    def _gather_died(gen: _Generation, positions: np.ndarray) -> np.ndarray:
        out = np.empty(len(positions), dtype=np.int64)
        if len(positions) == 0:
            return out
        starts = np.asarray(gen.starts[: len(gen.blocks)], dtype=np.int64)
        which = np.searchsorted(starts, positions, side="right") - 1
        for b in np.unique(which):
            sel = np.nonzero(which == b)[0]
            out[sel] = gen.blocks[int(b)].died[positions[sel] - starts[b]]
        return out

    # --- reading --------------------------------------------------------------------

    def search(
        self,
        nid: int,
        snapshot: int,
        query: np.ndarray,
        k: int,
        now_ms: int,
        agent: str | None,
        fetch_rows: FetchFn,
        restrict: RestrictFn | None = None,
    ) -> Scored | None:
        """Exact top ``k`` (distance, memory) at ``snapshot``, or None: use the SQLite path.

        ``fetch_rows(rowids)`` returns the memories among ``rowids`` that pass
        every filter, read in the caller's transaction; ``restrict()`` returns
        the rowids of all of them (needed only for filters beyond ``agent``).
        """
        space = self._spaces.get(nid)
        if space is None or self._closed:
            return None
        return space.search(snapshot, query, k, now_ms, agent, fetch_rows, restrict)

    def stats(self) -> dict[str, Any]:
        """Sizes for operators: rows (all versions), live memories, dead versions, and
        ``bytes`` in use (rows filled, agent lists, the live map; what the process
        holds, give or take a page per block), ``vector_bytes`` of which vectors,
        ``reserved_bytes`` of block capacity (unfilled pages are never touched)."""
        spaces = list(self._spaces.values())
        blocks = [blk for s in spaces for blk in list(s.gen.blocks)]
        return {
            "namespaces": len(spaces),
            "rows": sum(s.gen.count for s in spaces),
            "live": sum(len(s.live) for s in spaces),
            "dead": sum(s.gen.dead for s in spaces),
            "bytes": sum(s.nbytes() for s in spaces),
            "vector_bytes": sum(blk.n * blk.vec.shape[1] * 4 for blk in blocks),
            "reserved_bytes": sum(blk.nbytes() for blk in blocks),
            "compactions": self.compactions,
            "rebuilds": self.rebuilds,
            "disabled_namespaces": sum(1 for s in spaces if s.broken or s.gen.unsafe),
        }


class _CompactionPlan:
    def __init__(self, space: _Space, src: _Generation, rows: int, base: int) -> None:
        self.space = space
        self.src = src
        self.rows = rows
        self.base = base
        self.sources = np.empty(0, dtype=np.int64)
        self.new: _Generation | None = None


# --- reading vectors out of SQLite ------------------------------------------------------


def _stored_chunks(
    conn: apsw.Connection, nid: int, dim: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rowids, vectors) of vec_<nid>, read from vec0's storage tables chunk by chunk.

    Several times faster than vec0's own full scan (one row at a time). The
    layout (``_chunks``: validity bitmap, LSB first, and rowids; ``_vector_chunks00``:
    the vectors of a chunk in one blob) is sqlite-vec's; the caller verifies the
    result against the memories table and vec0's own answers, and falls back to
    :func:`_scanned_chunks` if anything disagrees.
    """
    table = vec_table(nid)
    chunks = fetch(conn, f"SELECT chunk_id, validity, rowids FROM {table}_chunks ORDER BY chunk_id")
    for chunk_id, validity, rowids in chunks:
        # one query per chunk: a join with ORDER BY made SQLite sort the blobs
        rows = fetch(
            conn, f"SELECT vectors FROM {table}_vector_chunks00 WHERE rowid = ?", (chunk_id,)
        )
        if not rows:
            raise ValueError(f"chunk {chunk_id} has no vectors")
        valid = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
        ids = np.frombuffer(rowids, dtype="<i8")
        vecs = np.frombuffer(rows[0][0], dtype="<f4")
        n = min(len(valid), len(ids), len(vecs) // dim)
        keep = valid[:n].astype(bool)
        if bool(keep.all()):
            yield ids[:n].astype(np.int64), vecs[: n * dim].reshape(n, dim)
        else:
            yield ids[:n][keep].astype(np.int64), vecs[: n * dim].reshape(n, dim)[keep]


def _scanned_chunks(
    conn: apsw.Connection, nid: int, dim: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rowids, vectors) of vec_<nid> through vec0's own full scan, 4096 rows at a time."""
    cursor = conn.execute(f"SELECT rowid, embedding FROM {vec_table(nid)}")
    while True:
        chunk: list[tuple[int, bytes]] = list(itertools.islice(cursor, 4096))
        if not chunk:
            return
        ids = np.fromiter((r for r, _ in chunk), dtype=np.int64, count=len(chunk))
        vecs = np.frombuffer(b"".join(e for _, e in chunk), dtype="<f4")
        yield ids, vecs.reshape(len(chunk), dim)


# --- the registry: how a Reader finds the index of the database it reads ----------------

_REGISTRY: dict[str, VectorIndex] = {}
_REGISTRY_LOCK = threading.Lock()


def register(index: VectorIndex) -> None:
    with _REGISTRY_LOCK:
        _REGISTRY[index.key] = index


def unregister(index: VectorIndex) -> None:
    with _REGISTRY_LOCK:
        if _REGISTRY.get(index.key) is index:
            del _REGISTRY[index.key]


def lookup(path: str) -> VectorIndex | None:
    """The index this process keeps for the database at ``path`` (a realpath), if any."""
    return _REGISTRY.get(path)


def stats_for(path: str) -> dict[str, Any] | None:
    index = _REGISTRY.get(os.path.realpath(path))
    return None if index is None else index.stats()
