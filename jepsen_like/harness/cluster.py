"""Real raftmem node processes on distinct loopback addresses, owned by the harness.

Node i (1-based) is ``n{i}`` on the i-th address from the run's address base
(default 127.0.0.11, so n1 is 127.0.0.11, n2 127.0.0.12, ...): API port 7000+i,
raft port 7100+i, data in ``<run>/nodes/n{i}/``, stdout and stderr appended to
``<run>/nodes/n{i}/node.log``. raftmem is a black box here: the harness only
writes its cluster file and secret, runs ``python -m raftmem node`` and talks
HTTP.

Every process is remembered by PID and signalled by PID only; `stop_all`
(also run at interpreter exit) continues paused nodes, asks each to stop with
SIGTERM, and SIGKILLs whatever is still alive after a grace period.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from jepsen_like.harness.api import Api, Reply
from jepsen_like.nemesis.iptables import DEFAULT_ADDRESS_BASE

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class NodeProc:
    id: str
    host: str
    api_port: int
    raft_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def api(self) -> str:
        return f"{self.host}:{self.api_port}"

    @property
    def url(self) -> str:
        return f"http://{self.api}"

    @property
    def log_path(self) -> Path:
        return self.dir / "node.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


CLIENT_ADDRESS = "127.0.0.1"  # harness/api.py binds the clients' side here


def node_addresses(n: int, address_base: str = DEFAULT_ADDRESS_BASE) -> list[str]:
    """`n` consecutive loopback addresses from `address_base`, within 127.0.0.0/8."""
    if not 1 <= n <= 200:
        raise ValueError("between 1 and 200 nodes")
    first = ipaddress.IPv4Address(address_base)
    top = ipaddress.IPv4Address("127.255.255.254")
    if not first.is_loopback or int(first) + n - 1 > int(top):
        raise ValueError(f"{n} node addresses from {address_base} leave the loopback range")
    addrs = [str(first + k) for k in range(n)]
    if CLIENT_ADDRESS in addrs or "127.0.0.0" in addrs:
        # The clients connect from 127.0.0.1; a partition must never cut them off.
        raise ValueError(
            f"node addresses from {address_base} include {CLIENT_ADDRESS} or 127.0.0.0"
        )
    return addrs


def node_layout(
    n: int,
    root: Path,
    address_base: str = DEFAULT_ADDRESS_BASE,
    api_base: int = 7000,
    raft_base: int = 7100,
) -> list[NodeProc]:
    return [
        NodeProc(f"n{i}", host, api_base + i, raft_base + i, root / f"n{i}")
        for i, host in enumerate(node_addresses(n, address_base), start=1)
    ]


def cluster_document(nodes: list[NodeProc], groups: int, cluster_id: str) -> dict[str, Any]:
    return {
        "cluster_id": cluster_id,
        "groups": groups,
        "replicas": min(3, len(nodes)),
        "nodes": [{"id": p.id, "api": p.api, "raft": f"{p.host}:{p.raft_port}"} for p in nodes],
    }


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class ClusterError(RuntimeError):
    pass


@dataclass
class Cluster:
    root: Path  # <run>/nodes
    n: int
    groups: int = 4
    node_args: list[str] = field(default_factory=list)
    address_base: str = DEFAULT_ADDRESS_BASE
    python: str = sys.executable
    api: Api | None = None  # set by the runner once its session is open
    nodes: list[NodeProc] = field(init=False)
    cluster_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = node_layout(self.n, self.root, self.address_base)
        self.cluster_file = self.root / "cluster.json"

    # -- Control (what the nemeses use) -----------------------------------

    @property
    def node_ids(self) -> list[str]:
        return [p.id for p in self.nodes]

    def node(self, node_id: str) -> NodeProc:
        for p in self.nodes:
            if p.id == node_id:
                return p
        raise KeyError(node_id)

    def address(self, node_id: str) -> str:
        return self.node(node_id).host

    def kill(self, node_id: str) -> None:
        p = self.node(node_id)
        if p.proc is not None and p.alive():
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait(timeout=10)
        p.paused = False

    def restart(self, node_id: str) -> None:
        p = self.node(node_id)
        if p.alive():
            return
        self._spawn(p)

    def pause(self, node_id: str) -> None:
        p = self.node(node_id)
        if p.proc is not None and p.alive():
            p.proc.send_signal(signal.SIGSTOP)
            p.paused = True

    def resume(self, node_id: str) -> None:
        p = self.node(node_id)
        if p.proc is not None and p.alive():
            p.proc.send_signal(signal.SIGCONT)
        p.paused = False

    async def leader_of(self, group: int) -> str | None:
        """The leader of `group` as the live nodes report it (the highest term wins)."""
        best: tuple[int, str] | None = None
        for p in self.nodes:
            if not p.alive() or p.paused:
                continue
            state = await self.cluster_state(p.id, timeout_s=1.0)
            st = (state or {}).get("groups", {}).get(str(group))
            if isinstance(st, dict) and st.get("leader"):
                term = int(st.get("term") or 0)
                if best is None or term > best[0]:
                    best = (term, str(st["leader"]))
        return None if best is None else best[1]

    async def replicas_of(self, group: int) -> list[str] | None:
        """The nodes that host a replica of `group`, from the routing table of a live node."""
        for p in self.nodes:
            if not p.alive() or p.paused:
                continue
            state = await self.cluster_state(p.id, timeout_s=1.0)
            members = ((state or {}).get("routing") or {}).get("groups", {}).get(str(group))
            if isinstance(members, list) and members:
                return [str(m) for m in members]
        return None

    async def admin_get(self, node_id: str, path: str, timeout_s: float = 2.0) -> Reply:
        assert self.api is not None
        return await self.api.request("GET", self.node(node_id).url + path, timeout_s=timeout_s)

    async def admin_post(self, node_id: str, path: str, body: Any) -> int:
        assert self.api is not None
        reply = await self.api.request("POST", self.node(node_id).url + path, body, timeout_s=2.0)
        return reply.status or 0

    # -- lifecycle ---------------------------------------------------------

    def prepare(self, cluster_id: str) -> None:
        """Write cluster.json and its secret; fail early if an address is taken."""
        busy = [
            f"{p.host}:{port}"
            for p in self.nodes
            for port in (p.api_port, p.raft_port)
            if not _port_free(p.host, port)
        ]
        if busy:
            raise ClusterError(
                f"address(es) in use: {', '.join(busy)} — another run or cluster is still up"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.cluster_file.write_bytes(
            orjson.dumps(
                cluster_document(self.nodes, self.groups, cluster_id), option=orjson.OPT_INDENT_2
            )
        )
        secret = self.root / "cluster.secret"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        for p in self.nodes:
            p.dir.mkdir(parents=True, exist_ok=True)

    def command(self, p: NodeProc) -> list[str]:
        return [
            self.python,
            "-m",
            "raftmem",
            "node",
            "--cluster",
            str(self.cluster_file),
            "--id",
            p.id,
            "--data-dir",
            str(p.dir / "data"),
            "--json-logs",
            *self.node_args,
        ]

    def _spawn(self, p: NodeProc) -> None:
        env = dict(os.environ)
        if (REPO_ROOT / "raftmem").is_dir():
            # Run the raftmem next to this jepsen_like, installed or not.
            env["PYTHONPATH"] = os.pathsep.join(
                x for x in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if x
            )
        with open(p.log_path, "ab") as log:
            log.write(
                f"--- harness: start #{p.starts + 1} of {p.id} at {time.time():.3f}\n".encode()
            )
            log.flush()
            # A session of its own: a Ctrl-C in the terminal reaches the harness
            # only, which then stops the nodes in order.
            p.proc = subprocess.Popen(
                self.command(p),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(p.dir),
                env=env,
                start_new_session=True,
            )
        p.starts += 1
        p.paused = False
        # For a human cleaning up after a harness that was itself killed -9.
        (p.dir / "pid").write_text(f"{p.proc.pid}\n")

    def start_all(self) -> None:
        for p in self.nodes:
            self._spawn(p)

    def stop_all(self, grace_s: float = 5.0) -> None:
        """SIGCONT, SIGTERM, then SIGKILL after `grace_s`: only our own PIDs."""
        running = [p for p in self.nodes if p.proc is not None and p.proc.poll() is None]
        for p in running:
            assert p.proc is not None
            try:
                if p.paused:
                    p.proc.send_signal(signal.SIGCONT)
                    p.paused = False
                p.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for p in running:
            assert p.proc is not None
            try:
                p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.proc.send_signal(signal.SIGKILL)
                p.proc.wait(timeout=10)

    # -- health --------------------------------------------------------------

    async def ready(self, node_id: str) -> bool:
        assert self.api is not None
        p = self.node(node_id)
        if not p.alive() or p.paused:
            return False
        reply = await self.api.request("GET", p.url + "/readyz", timeout_s=1.0)
        return reply.status == 200

    async def health(self) -> dict[str, str]:
        """Each node: ready, not-ready, paused or down."""
        out: dict[str, str] = {}
        for p in self.nodes:
            if not p.alive():
                out[p.id] = "down"
            elif p.paused:
                out[p.id] = "paused"
            else:
                out[p.id] = "ready" if await self.ready(p.id) else "not-ready"
        return out

    async def wait_ready(self, timeout_s: float) -> float:
        """Poll until every node is ready; returns the seconds it took. Raises at the deadline."""
        start = time.monotonic()
        deadline = start + timeout_s
        pending = set(self.node_ids)
        while True:
            for node_id in sorted(pending):
                p = self.node(node_id)
                if p.proc is not None and p.proc.poll() is not None:
                    raise ClusterError(
                        f"node {node_id} exited with {p.proc.returncode}; "
                        f"last lines of {p.log_path}:\n{tail(p.log_path)}"
                    )
                if await self.ready(node_id):
                    pending.discard(node_id)
            if not pending:
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise ClusterError(f"nodes {sorted(pending)} not ready after {timeout_s}s")
            await asyncio.sleep(0.1)  # poll interval of a loop with its own deadline

    async def cluster_state(self, node_id: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
        assert self.api is not None
        reply = await self.api.request(
            "GET", self.node(node_id).url + "/admin/cluster", timeout_s=timeout_s
        )
        return reply.body if reply.ok and isinstance(reply.body, dict) else None


def tail(path: Path, lines: int = 20) -> str:
    try:
        data = path.read_bytes()[-20_000:]
    except OSError:
        return "(no log)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
