"""Deterministic benchmark data: the loaded memories, their vectors, the queries.

The loader (in the load-generator processes), the exactness check and the
numpy reference each derive the same vectors from ``(seed, chunk)`` without
talking to each other. Vectors are rounded to 4 decimals so their JSON is short
(about 3 KB for 384 dimensions, so 1000 memories fit the 8 MiB body limit) and
the float32 the server stores is exactly ``np.float32(value)`` of what we hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

DIM = 384
CHUNK = 1000  # vectors are generated per chunk of this many memories
DECIMALS = 4
AGENTS = 100  # loaded memory i belongs to agent i % AGENTS
TAGS = 8
NS = "bench"  # the loaded, searched namespace: holds exactly the loaded memories
NS_WRITES = "bench_w"  # where write workloads put new memories (keeps NS exact)

_LOREM = (
    "The deploy waits for the schema migration; the planner agent owns the rollout and "
    "records each step. Customer prefers email over phone, answers within a day, and asked "
    "for the invoice in euros. Shared context: the staging database is read-only until Friday, "
    "the feature flag is off for the EU region, and the on-call engineer is on the ops rota. "
)
TEXT_BYTES = 1000


def text_of(i: int) -> str:
    """About 1 KB of text, different per memory."""
    head = f"memory {i}: "
    body = (_LOREM * 4)[i % len(_LOREM):]
    return (head + body)[:TEXT_BYTES]


def memory_id(i: int) -> str:
    return f"m{i:08d}"


def agent_of(i: int, agents: int = AGENTS) -> str:
    return f"agent-{i % agents:04d}"


def chunk_vectors(seed: int, chunk: int) -> np.ndarray:
    """Vectors of memories ``chunk*CHUNK .. (chunk+1)*CHUNK-1`` (float64, rounded)."""
    rng = np.random.default_rng([seed, chunk])
    return np.round(rng.standard_normal((CHUNK, DIM)), DECIMALS)


def vectors(seed: int, start: int, end: int) -> np.ndarray:
    """Vectors of memories ``start .. end-1`` (float64, rounded), shape (end-start, DIM)."""
    if end <= start:
        return np.zeros((0, DIM))
    parts = []
    for c in range(start // CHUNK, (end - 1) // CHUNK + 1):
        lo, hi = c * CHUNK, (c + 1) * CHUNK
        v = chunk_vectors(seed, c)
        parts.append(v[max(start, lo) - lo: min(end, hi) - lo])
    return np.concatenate(parts)


def iter_chunks(seed: int, n: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, vectors) for memories 0..n-1, one chunk at a time."""
    for c in range((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        yield lo, chunk_vectors(seed, c)[: min(CHUNK, n - lo)]


def memory_body(i: int, vec: Any, agents: int = AGENTS, mid: str | None = None) -> dict[str, Any]:
    """One memory as the API takes it: 1 KB text, 384-d embedding, tags, metadata."""
    return {
        "id": mid or memory_id(i),
        "agent_id": agent_of(i, agents),
        "text": text_of(i),
        "embedding": vec,
        "tags": ["bench", f"topic-{i % TAGS}"],
        "metadata": {"source": "bench", "seq": i, "priority": i % 3},
    }


def queries(seed: int, n: int = 256) -> np.ndarray:
    """Query vectors (float64, rounded); a stream independent of the memories'."""
    rng = np.random.default_rng([seed, 1 << 30])
    return np.round(rng.standard_normal((n, DIM)), DECIMALS)


def etcd_value(i: int) -> bytes:
    """A 1 KB value for etcd puts."""
    return text_of(i).encode()[:1024].ljust(1024, b".")
