"""Data types shared by the layers, and the service contract the API calls.

A *memory* travels as a plain dict (it is what the state machine returns and
what the API serialises)::

    {"id": str, "namespace": str, "agent_id": str, "text": str,
     "metadata": dict, "tags": list[str], "version": int,
     "created_at": int, "updated_at": int,        # epoch milliseconds
     "expires_at": int | None,                    # epoch milliseconds
     "embedding": list[float]}                    # only when asked for

Timestamps are fixed by the node that proposes a write and carried in the
command; the state machine never reads a clock.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

Memory = dict[str, Any]

CONSISTENCY_TIERS = ("linearizable", "lease", "session", "eventual")
METRICS = ("cosine", "l2")


# What a request's response should say besides its body, filled in by the node
# while it serves the request and turned into headers by the API:
# ``session_in`` (the client's token), ``session`` ({group: index} seen),
# ``replica``, ``applied_index``, ``staleness_ms``, ``lag``, ``tier``.
RESPONSE_META: ContextVar[dict[str, Any] | None] = ContextVar("raftmem_response_meta", default=None)


@dataclass(frozen=True)
class ReadOptions:
    """How a read is served; ``consistency=None`` means the namespace's default tier."""

    consistency: str | None = None
    session: str | None = None
    max_staleness_ms: int | None = None


@dataclass(frozen=True)
class SearchFilter:
    agent_id: str | None = None
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    created_after: int | None = None
    created_before: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "tags_any": list(self.tags_any),
            "tags_all": list(self.tags_all),
            "metadata": dict(self.metadata),
            "created_after": self.created_after,
            "created_before": self.created_before,
        }


@dataclass(frozen=True)
class WriteMeta:
    """What a write response carries beside its result (session token, epoch)."""

    session: str | None = None


class MemoryService(Protocol):
    """What the REST API needs from a node. Implemented by ``raftmem.node.Node``.

    Every method raises only :class:`raftmem.errors.RaftmemError` subclasses.
    Inputs are already validated for shape by the API (types, sizes, unknown
    fields); the service validates what needs cluster state (namespace exists,
    embedding dimension matches the namespace).
    """

    async def create_namespace(self, ns: str, dim: int, metric: str) -> tuple[dict[str, Any], bool]:
        """Returns (namespace, created). Idempotent for the same definition; Conflict otherwise."""
        ...

    async def get_namespace(self, ns: str) -> dict[str, Any]:
        ...

    async def list_namespaces(self) -> list[dict[str, Any]]:
        ...

    async def put_memory(self, ns: str, memory: dict[str, Any], request_id: str | None) -> Memory:
        """``memory``: agent_id, text, embedding, and optional id, metadata, tags, ttl_s."""
        ...

    async def put_batch(
        self, ns: str, memories: list[dict[str, Any]], request_id: str | None
    ) -> list[dict[str, Any]]:
        """One result per input, in order: ``{"ok": True, "memory": ...}`` or ``{"ok": False, "error": {...}}``."""
        ...

    async def get_memory(self, ns: str, memory_id: str, opts: ReadOptions, include_embedding: bool = False) -> Memory:
        ...

    async def patch_memory(
        self, ns: str, memory_id: str, fields: dict[str, Any], if_version: int | None, request_id: str | None
    ) -> Memory:
        ...

    async def delete_memory(
        self, ns: str, memory_id: str, if_version: int | None, request_id: str | None
    ) -> None:
        ...

    async def list_memories(
        self, ns: str, agent_id: str | None, tag: str | None, limit: int, cursor: str | None, opts: ReadOptions
    ) -> tuple[list[Memory], str | None]:
        """Returns (memories ordered by id, next cursor or None)."""
        ...

    async def search(
        self, ns: str, embedding: list[float], k: int, flt: SearchFilter, opts: ReadOptions
    ) -> list[dict[str, Any]]:
        """Exact global top-k: ``[{"memory": Memory, "score": float, "distance": float}, ...]``."""
        ...

    def health(self) -> dict[str, Any]:
        ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        ...

    async def cluster_state(self) -> dict[str, Any]:
        ...

    async def digests(self) -> dict[str, Any]:
        """``{"node", "groups": {gid: {"applied_index", "digest"}}}`` of this node's replicas."""
        ...

    async def ranges(self) -> dict[str, Any]:
        """The routing table's ranges with owning group, replicas, leader and epochs."""
        ...

    async def rebalance(self, dry_run: bool) -> dict[str, Any]:
        """The placement driver's plan (``dry_run``), or one executor pass now."""
        ...

    async def operators(self) -> dict[str, Any]:
        """The executor's operators: running, and a bounded history."""
        ...

    async def add_node(self, node_id: str, api: str, raft: str) -> dict[str, Any]:
        """Register a node; the placement driver then gives it replicas."""
        ...

    async def remove_node(self, node_id: str) -> dict[str, Any]:
        """Drain a node; once it holds nothing it leaves the registry."""
        ...

    async def describe(self) -> dict[str, Any]:
        """The cluster description and the placement driver's state."""
        ...

    def isolate(self, peers: list[str]) -> None:
        """Fault injection: cut this node's Raft links to ``peers`` until :meth:`heal`."""
        ...

    def heal(self) -> None:
        ...
