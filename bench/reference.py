"""The physical reference: exact top-k by numpy brute force, in one process.

The same vectors as the cluster holds (``bench.data``), the same queries, the
same metric (cosine distance = 1 - cosine similarity, float32), best first by
``(distance, id)``. Used twice: to check that the cluster's answers are exact,
and as the throughput a single process reaches scanning the same data one
query at a time (``measure``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench import data
from bench.stats import latency_summary_ms


class Reference:
    def __init__(self, seed: int, n: int, agents: int = data.AGENTS,
                 progress: Callable[[int], None] | None = None) -> None:
        self.n = n
        self.agents = agents
        self.matrix = np.empty((n, data.DIM), dtype=np.float32)
        for lo, vecs in data.iter_chunks(seed, n):
            v = vecs.astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            self.matrix[lo:lo + len(v)] = v
            if progress:
                progress(len(v))
        # memory i belongs to agent i % agents: one contiguous copy per agent
        self.by_agent = [np.ascontiguousarray(self.matrix[a::agents]) for a in range(agents)]

    def topk(self, query: Any, k: int, agent: int | None = None) -> list[tuple[str, float]]:
        q = np.asarray(query, dtype=np.float32)
        q = q / np.linalg.norm(q)
        m = self.matrix if agent is None else self.by_agent[agent]
        sims = m @ q
        k = min(k, len(sims))
        # a margin past k so that ties at the cut-off are ordered by id like the server
        take = min(len(sims), k + 8)
        idx = np.argpartition(-sims, take - 1)[:take]
        rows = idx if agent is None else idx * self.agents + agent
        dist = (1.0 - sims[idx]).astype(np.float64)
        order = sorted(range(len(idx)), key=lambda j: (dist[j], data.memory_id(int(rows[j]))))
        return [(data.memory_id(int(rows[j])), float(dist[j])) for j in order[:k]]

    def measure(self, queries: np.ndarray, k: int, seconds: float, filtered: bool,
                seed: int = 0) -> dict[str, Any]:
        """Queries one after another for ``seconds``: throughput and latency of the scan."""
        rng = np.random.default_rng(seed)
        lat: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            q = queries[int(rng.integers(len(queries)))]
            agent = int(rng.integers(self.agents)) if filtered else None
            t = time.perf_counter()
            self.topk(q, k, agent)
            lat.append(time.perf_counter() - t)
        total = sum(lat)
        out: dict[str, Any] = {"ops": len(lat), "ops_per_s": len(lat) / total if total else 0.0}
        out.update(latency_summary_ms(lat))
        return out
