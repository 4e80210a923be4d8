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

Spare slots (the placement nemeses): ``spares`` more slots after the cluster
file's nodes, with the next addresses and ports, not in the cluster file and
not started at setup. A slot is started later with ``raftmem node --join``
(`start_join`): a fresh data directory each time (``data``, ``data-2``, ...),
the node's id in raftmem's registry (`rid`) the slot's name, also for a node
of the cluster file started again after it was drained and removed (raftmem
lets it join again under its own id once the registry lists it removed). A
joined node restarts (kill nemesis) with ``--data-dir`` only. `stop` ends a
slot's process for good (SIGTERM, then SIGKILL).

Clients pick their node per operation (`target_for`) among the slots *in
service*: running, and not being taken out by a nemesis; `inflight` counts each
slot's requests in flight, so a nemesis can wait for them before stopping it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from jepsen_like.harness.api import Api, Reply
from jepsen_like.nemesis.iptables import DEFAULT_ADDRESS_BASE

REPO_ROOT = Path(__file__).resolve().parents[2]
# Node-to-node requests carry hex(HMAC-SHA256(cluster secret, INTERNAL_CONTEXT)) in
# INTERNAL_HEADER (raftmem/node.py `internal_credential`); the placement nemeses use
# it for leadership transfers and the PD's state.
INTERNAL_HEADER = "X-Raftmem-Internal"
INTERNAL_CONTEXT = b"raftmem-internal"


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
    in_cluster_file: bool = True
    wanted: bool = True  # the harness means it to run (False: spare, or stopped for good)
    in_service: bool = True  # clients send it requests
    rid: str = ""  # its id in raftmem's registry (the slot's name but for re-added nodes)
    joined: bool = False  # started with --join (restarts with --data-dir only)
    join_url: str | None = None
    incarnation: int = 1  # data dir "data", then "data-2", ... (a fresh one per join)
    history: list[dict[str, Any]] = field(default_factory=list)  # starts and stops

    def __post_init__(self) -> None:
        self.rid = self.rid or self.id

    @property
    def api(self) -> str:
        return f"{self.host}:{self.api_port}"

    @property
    def url(self) -> str:
        return f"http://{self.api}"

    @property
    def log_path(self) -> Path:
        return self.dir / "node.log"

    @property
    def raft(self) -> str:
        return f"{self.host}:{self.raft_port}"

    @property
    def data(self) -> Path:
        return self.dir / ("data" if self.incarnation == 1 else f"data-{self.incarnation}")

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
    spares: int = 0  # slots after the cluster file's nodes, started by a nemesis
    nodes: list[NodeProc] = field(init=False)
    cluster_file: Path = field(init=False)
    secret_file: Path = field(init=False)
    inflight_requests: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.nodes = node_layout(self.n + self.spares, self.root, self.address_base)
        for p in self.nodes[self.n :]:
            p.in_cluster_file = p.wanted = p.in_service = False
        self.cluster_file = self.root / "cluster.json"
        self.secret_file = self.root / "cluster.secret"

    # -- Control (what the nemeses use) -----------------------------------

    @property
    def node_ids(self) -> list[str]:
        """Every slot, spares included."""
        return [p.id for p in self.nodes]

    @property
    def active_ids(self) -> list[str]:
        """The slots the harness means to be running (recovery, final reads)."""
        return [p.id for p in self.nodes if p.wanted]

    def running(self, node_id: str) -> bool:
        """Meant to run: started and not stopped for good (a killed node still counts)."""
        return self.node(node_id).wanted

    def alive(self, node_id: str) -> bool:
        return self.node(node_id).alive()

    def has_run(self, node_id: str) -> bool:
        return self.node(node_id).starts > 0

    def rid(self, node_id: str) -> str:
        return self.node(node_id).rid

    def slot_of(self, rid: str) -> str | None:
        return next((p.id for p in self.nodes if p.rid == rid), None)

    def set_in_service(self, node_id: str, serving: bool) -> None:
        self.node(node_id).in_service = serving

    def inflight(self, node_id: str) -> int:
        return self.inflight_requests[node_id]

    def target_for(self, client: int, turn: int = 0) -> NodeProc:
        """The node client `client` sends its next request to: its own slot (client i
        mod slots) while that is in service, else one of the slots in service.
        `turn` rotates over the slots in service instead (session reads)."""
        serving = [p for p in self.nodes if p.in_service]
        home = self.nodes[client % len(self.nodes)]
        if not serving:
            return home
        if turn:
            return serving[(client + turn) % len(serving)]
        return home if home.in_service else serving[client % len(serving)]

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
        if p.alive() or not p.wanted:
            return
        self._spawn(p)

    def start_join(self, node_id: str, via: str) -> dict[str, Any]:
        """Start the slot's process with ``raftmem node --join`` through node `via`, on a
        fresh data directory (its old replicas were dropped when it was drained)."""
        p = self.node(node_id)
        if p.alive():
            raise ClusterError(f"{node_id} is running already (PID {p.proc and p.proc.pid})")
        if p.starts > 0:
            p.incarnation += 1  # under its own id: the registry lists it removed
        p.joined = True
        p.join_url = self.node(via).url
        p.wanted = True
        p.data.mkdir(parents=True, exist_ok=True)
        self._spawn(p)
        assert p.proc is not None
        return {"pid": p.proc.pid, "data_dir": p.data.name, "incarnation": p.incarnation}

    def stop(self, node_id: str, grace_s: float = 5.0) -> dict[str, Any]:
        """Stop the slot's process for good: SIGTERM by PID, SIGKILL after `grace_s`."""
        p = self.node(node_id)
        p.wanted = p.in_service = False
        out: dict[str, Any] = {"pid": p.proc.pid if p.proc else None}
        if p.proc is not None and p.proc.poll() is None:
            if p.paused:
                p.proc.send_signal(signal.SIGCONT)
            p.proc.send_signal(signal.SIGTERM)
            try:
                p.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                p.proc.send_signal(signal.SIGKILL)
                p.proc.wait(timeout=10)
                out["sigkill"] = True
        p.paused = False
        out["exit"] = p.proc.returncode if p.proc is not None else None
        p.history.append({"stop": round(time.time(), 3), **out})
        return out

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

    # -- the placement driver (what the placement nemeses use) -------------------

    def _answering(self) -> list[NodeProc]:
        """Nodes to ask: in service first, then any other running one."""
        live = [p for p in self.nodes if p.wanted and p.alive() and not p.paused]
        return sorted(live, key=lambda p: not p.in_service)

    async def _ask(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 5.0,
    ) -> Reply:
        """The first answer (any HTTP status) of a running node; the last failure if none."""
        assert self.api is not None
        last = Reply(None, error="no running node")
        for p in self._answering():
            reply = await self.api.request(
                method, p.url + path, body, timeout_s=timeout_s, headers=headers
            )
            if reply.status is not None and reply.status != 503:
                return reply
            last = reply
        return last

    def internal_headers(self) -> dict[str, str]:
        secret = self.secret_file.read_text().strip().encode()
        credential = hmac.new(secret, INTERNAL_CONTEXT, hashlib.sha256).hexdigest()
        return {INTERNAL_HEADER: credential}

    async def registry(self) -> dict[str, dict[str, Any]] | None:
        """``GET /admin/nodes``: id -> {state, api, raft, groups}; None if no node answers.

        Each node answers from the PD state it last received; an empty registry is
        no answer (the cluster file's nodes are always in it), the next node is asked.
        """
        assert self.api is not None
        for p in self._answering():
            reply = await self.api.request("GET", p.url + "/admin/nodes", timeout_s=5.0)
            body = reply.body if reply.ok and isinstance(reply.body, dict) else {}
            nodes = body.get("nodes")
            if isinstance(nodes, list) and nodes:
                return {str(n["id"]): n for n in nodes if isinstance(n, dict) and "id" in n}
        return None

    async def drain(self, node_id: str) -> Reply:
        return await self._ask("DELETE", f"/admin/nodes/{self.node(node_id).rid}")

    async def register(self, node_id: str) -> Reply:
        p = self.node(node_id)
        return await self._ask("POST", "/admin/nodes", {"id": p.rid, "api": p.api, "raft": p.raft})

    async def operators(self) -> dict[str, Any] | None:
        reply = await self._ask("GET", "/admin/operators")
        return reply.body if reply.ok and isinstance(reply.body, dict) else None

    async def pd_groups(self) -> dict[int, dict[str, Any]] | None:
        """The PD state's groups (voters, learners), from ``/internal/placement/state``."""
        reply = await self._ask(
            "POST", "/internal/placement/state", {}, headers=self.internal_headers()
        )
        state = reply.body.get("state") if reply.ok and isinstance(reply.body, dict) else None
        groups = state.get("groups") if isinstance(state, dict) else None
        if not isinstance(groups, dict):
            return None
        return {int(g): v for g, v in groups.items() if isinstance(v, dict)}

    async def ranges(self) -> list[dict[str, Any]] | None:
        """``GET /admin/ranges`` of a running node: its routing table's ranges."""
        reply = await self._ask("GET", "/admin/ranges")
        body = reply.body if reply.ok and isinstance(reply.body, dict) else None
        ranges = body.get("ranges") if body is not None else None
        return ranges if isinstance(ranges, list) else None

    async def move_range(self, start: str, end: str, to_group: int) -> Reply:
        """``POST /admin/ranges/move``: a range of the ring to another group."""
        return await self._ask("POST", "/admin/ranges/move",
                               {"start": start, "end": end, "to_group": to_group},
                               timeout_s=60.0)

    async def transfer(self, group: int, leader: str, target: str) -> Reply:
        """Ask `leader` (a registry id) to hand leadership of `group` to voter `target`."""
        assert self.api is not None
        slot = self.slot_of(leader)
        if slot is None:
            return Reply(None, error=f"no slot runs node {leader}", connected=False)
        return await self.api.request(
            "POST",
            self.node(slot).url + "/internal/placement/transfer",
            {"group": group, "target": target},
            timeout_s=5.0,
            headers=self.internal_headers(),
        )

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
                cluster_document(self.nodes[: self.n], self.groups, cluster_id),
                option=orjson.OPT_INDENT_2,
            )
        )
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        for p in self.nodes:
            p.dir.mkdir(parents=True, exist_ok=True)

    def command(self, p: NodeProc) -> list[str]:
        base = [self.python, "-m", "raftmem", "node"]
        tail = ["--data-dir", str(p.data), "--json-logs", *self.node_args]
        if not p.joined:
            return [*base, "--cluster", str(self.cluster_file), "--id", p.id, *tail]
        secret = ["--secret-file", str(self.secret_file)]
        if (p.data / "join.json").exists():
            return [*base, *secret, *tail]  # a joined node restarts from its data dir
        assert p.join_url is not None
        join = ["--join", p.join_url, "--id", p.rid, "--api", p.api, "--raft", p.raft]
        return [*base, *join, *secret, *tail]

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
        p.history.append(
            {
                "start": round(time.time(), 3),
                "pid": p.proc.pid,
                "id": p.rid,
                "data_dir": p.data.name,
                "join": p.joined,
            }
        )
        # For a human cleaning up after a harness that was itself killed -9.
        (p.dir / "pid").write_text(f"{p.proc.pid}\n")

    def start_all(self) -> None:
        """Start the cluster file's nodes (spare slots wait for a nemesis)."""
        for p in self.nodes:
            if p.wanted:
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
        """Each node: ready, not-ready, paused, down, or out (a spare, or stopped for good)."""
        out: dict[str, str] = {}
        for p in self.nodes:
            if not p.wanted:
                out[p.id] = "out"
            elif not p.alive():
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
        pending = set(self.active_ids)
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
