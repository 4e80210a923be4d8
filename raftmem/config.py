"""Cluster and node configuration: one JSON file describes a cluster.

``cluster.json``::

    {"cluster_id": "c-3f2a...", "groups": 4, "replicas": 3,
     "nodes": [{"id": "n1", "api": "127.0.0.1:7001", "raft": "127.0.0.1:7101"}, ...]}

The cluster secret (peer authentication) is never in that file: it lives in
``cluster.secret`` beside it (mode 0600), or is given by ``RAFTMEM_SECRET``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be host:port, got {addr!r}")
    return host, int(port)


@dataclass(frozen=True)
class NodeSpec:
    id: str
    api: str
    raft: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "api": self.api, "raft": self.raft}


DEFAULT_CONSISTENCY: dict[str, Any] = {
    # The tier of a read that names none.
    "default": "linearizable",
    # Reads of memories carrying these tags are never served weaker.
    "tag_floors": {"lock": "linearizable", "critical": "linearizable"},
    # Per-namespace default tiers, e.g. {"telemetry": "eventual"}.
    "namespaces": {},
}


@dataclass(frozen=True)
class ClusterSpec:
    nodes: tuple[NodeSpec, ...]
    groups: int = 4
    replicas: int = 3
    cluster_id: str = "raftmem"
    consistency: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONSISTENCY))

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"node {node_id!r} is not in the cluster (have {[n.id for n in self.nodes]})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "groups": self.groups,
            "replicas": self.replicas,
            "nodes": [n.to_dict() for n in self.nodes],
            "consistency": self.consistency,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterSpec:
        nodes = tuple(NodeSpec(str(n["id"]), str(n["api"]), str(n["raft"])) for n in d["nodes"])
        if len({n.id for n in nodes}) != len(nodes):
            raise ValueError("node ids must be unique")
        for n in nodes:
            parse_addr(n.api)
            parse_addr(n.raft)
        spec = cls(
            nodes=nodes,
            groups=int(d.get("groups", 4)),
            replicas=int(d.get("replicas", min(3, len(nodes)))),
            cluster_id=str(d.get("cluster_id", "raftmem")),
            consistency={**DEFAULT_CONSISTENCY, **d.get("consistency", {})},
        )
        tiers = ("linearizable", "lease", "session", "eventual")
        c = spec.consistency
        for tier in [c["default"], *c["tag_floors"].values(), *c["namespaces"].values()]:
            if tier not in tiers:
                raise ValueError(f"unknown consistency tier {tier!r} in cluster config")
        if spec.groups < 1:
            raise ValueError("groups must be >= 1")
        if not 1 <= spec.replicas <= len(nodes):
            raise ValueError("replicas must be between 1 and the number of nodes")
        return spec

    @classmethod
    def load(cls, path: str) -> ClusterSpec:
        with open(path, "rb") as f:
            return cls.from_dict(orjson.loads(f.read()))

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)


def secret_path(cluster_file: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(cluster_file)), "cluster.secret")


def ensure_secret(path: str) -> bytes:
    """Read the cluster secret, creating a random one (0600) if there is none."""
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    with open(path) as f:
        return f.read().strip().encode()


def load_secret(cluster_file: str) -> bytes:
    env = os.environ.get("RAFTMEM_SECRET")
    if env:
        return env.encode()
    path = secret_path(cluster_file)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no cluster secret: create {path} (any random string) or set RAFTMEM_SECRET"
        )
    with open(path) as f:
        return f.read().strip().encode()


@dataclass
class NodeOptions:
    """Per-process knobs (not part of the cluster's identity)."""

    write_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    max_body_bytes: int = 8 * 1024 * 1024
    durable: bool = True
    # The placement driver's leader runs the planner's operators by itself
    # (after a node joins or is drained); off: only POST /admin/rebalance does.
    auto_rebalance: bool = True
    admin_token: str | None = None
    json_logs: bool = False
    # Which HTTP requests are logged: all | errors (5xx, dropped, slow) | off.
    access_log: str = "errors"
    purge_interval_s: float = 5.0
    dedup_window_s: float = 600.0
    read_workers: int = 4
    # How a linearizable read confirms leadership: "read-index" (a quorum of
    # heartbeat acks, no log write) or "log" (a no-op entry through the log,
    # the slower original path; also the fallback when a ReadIndex fails).
    read_barrier: str = "read-index"
    # Test-only: serve reads from local state without the read barrier. Breaks
    # linearizability on purpose so jepsen_like can show it catches it.
    unsafe_local_reads: bool = False
    # Test only: session reads ignore the token; lease reads without stickiness.
    unsafe_session_ignore_token: bool = False
    unsafe_lease_without_stickiness: bool = False
    session_wait_ms: int = 200
    extra: dict[str, Any] = field(default_factory=dict)
