"""Composition root of one raftmem process: raft host + router + the service the API calls.

Write path: validate against the namespace (dimension), fix every
non-deterministic value (id, timestamps, expiry, request id), encode the
command, propose it to the owning group through the local replica, and retry
until the deadline. Retrying is always safe: definite failures never reached a
log, and indefinite ones are deduplicated by request id inside the state
machine, so a write applies at most once however often it is proposed.

Read path (linearizable): confirm with a ReadIndex — the leader's commit index,
confirmed by a quorum of heartbeat acks, shared by every read that arrived
before it started; a no-op entry through the group's log when it cannot be had
— then query the local replica once it has applied that index: its state now
includes every write acknowledged before the read began.

A node need not host a replica of every group. For a group it does not host,
it forwards the encoded command (``POST /internal/groups/{g}/propose``) or the
read, as data (a ``ReadSpec``, ``POST /internal/groups/{g}/read``), to a node
that does, which serves it exactly as above. Internal requests carry a
credential derived from the cluster secret (``INTERNAL_HEADER``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import apsw
import numpy as np
import orjson
import structlog

from raftmem import commands, rangemove, session
from raftmem.config import ClusterSpec, NodeOptions, NodeSpec, parse_addr
from raftmem.errors import (
    CommitTimeout,
    Conflict,
    CorruptionError,
    EpochMismatch,
    Internal,
    NotBuilt,
    NotFound,
    PayloadTooLarge,
    RaftmemError,
    RangeMoving,
    Unavailable,
    ValidationError,
    from_result_error,
)
from raftmem.keyspace import Ownership, covers_ring_once, format_point, parse_point
from raftmem.pd import PD_GROUP, PlacementDriver, pd_members
from raftmem.placement import pdstate
from raftmem.placement.pdstate import PDState
from raftmem.placement.routing import RoutingTable, initial_table, merge_ownership
from raftmem.readpolicy import Decision, ReplicaView, decide, effective_tier, strongest
from raftmem.shardgroups.host import HARDENING, GroupHost, HostConfig, ProposalFailed
from raftmem.statemachine import Reader, StateMachine, vecindex
from raftmem.statemachine.reader import ReadSpec, run_read
from raftmem.types import CONSISTENCY_TIERS, RESPONSE_META, Memory, ReadOptions, SearchFilter

log = structlog.get_logger("raftmem.node")

T = TypeVar("T")

CATALOG_GROUP = 0  # the group whose log decides namespace definitions

# How often one request refreshes the routing table and routes again after a
# group answered epoch_mismatch, before the client sees it (definite, 503).
EPOCH_RETRIES = 8

# Reads that go to every group (their parts' ownership records are checked).
SCATTER_OPS = frozenset({"list", "search"})

# Reads of one row by its key: served on the event loop itself, without the
# hand-off to a read thread and back (docs/benchmarks.md, "Point reads on the
# event loop"). The loop's connection never waits for a lock: a busy database
# (a snapshot being installed) sends the read to a read thread instead.
POINT_OPS = frozenset({"get"})

# How long a write waits for a move of its key's range (frozen: writes refused,
# definite) before the client sees range_moving (503, definite).
RANGE_MOVE_WAIT_S = 30.0

# Node-to-node requests (forwarding to a group this node does not host) carry
# this header: hex HMAC-SHA256 of the cluster secret over INTERNAL_CONTEXT.
INTERNAL_HEADER = "X-Raftmem-Internal"
INTERNAL_CONTEXT = b"raftmem-internal"
# A forwarded request's connection attempt; a node that does not accept within
# it is passed over for the next replica (nothing was sent: definite).
FORWARD_CONNECT_S = 1.0
# Connections this node keeps open to the others' APIs for forwarding, in all.
FORWARD_CONNECTIONS = 256
# Of a forwarded write's remaining time, what the hosting node is not given:
# room for its answer to arrive before this node's own deadline.
FORWARD_MARGIN_S = 0.25
# The time an ownership read of a remote group may take during a routing refresh.
OWNERSHIP_READ_S = 2.0
# Answers of other nodes whose status says "this node cannot serve internal
# requests" (wrong credential, no such route): try the next replica.
_NODE_REFUSALS = frozenset({403, 404, 405})
_ERROR_BY_STATUS: dict[int, type[RaftmemError]] = {
    400: ValidationError, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
    501: NotBuilt, 503: Unavailable, 504: CommitTimeout,
}


class NotHosted(Unavailable):
    """This node's replica of the group went away (moved by the placement driver)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="not_hosted")


def internal_credential(secret: bytes) -> str:
    """The value of INTERNAL_HEADER for a cluster secret (same on every node)."""
    return hmac.new(secret, INTERNAL_CONTEXT, hashlib.sha256).hexdigest()


def remote_error(status: int, body: bytes) -> RaftmemError:
    """The error another node answered with (status, JSON error body), as ours.

    Same class (so the same status and definiteness) and same code and details.
    """
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        err = None
    if not isinstance(err, dict):
        return Internal(f"HTTP {status} without an error body", code="internal")
    code = str(err.get("code", "internal"))
    message = str(err.get("message", code))
    details = {k: v for k, v in err.items() if k not in ("code", "message", "definite")}
    cls = {"epoch_mismatch": EpochMismatch, "range_moving": RangeMoving}.get(
        code, _ERROR_BY_STATUS.get(status, Internal))
    return cls(message, code=code, **details)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_memory_id(ts: int, request_key: str | None = None) -> str:
    """An id for a memory stored without one.

    Time-ordered (listing by id is listing by creation time). When the client
    gave a request id, the random part is derived from it: a retry of the same
    request must route to the same group to be recognised there, so it must
    get the same id even though its timestamp differs.
    """
    if request_key is not None:
        return "r" + hashlib.blake2b(request_key.encode(), digest_size=12).hexdigest()
    return f"{ts:012x}{uuid.uuid4().hex[:12]}"


def _meta() -> dict[str, Any]:
    """This request's response metadata (see ``raftmem.types.RESPONSE_META``)."""
    meta = RESPONSE_META.get()
    if meta is None:
        meta = {}
        RESPONSE_META.set(meta)
    return meta


@dataclass(frozen=True)
class _Served:
    """A read as a replica served it: the answer and what the response metadata needs."""

    result: Any
    applied: int  # the applied index of the state read
    replica: str  # the node whose replica served it
    staleness_ms: int
    lag: int  # commit index - applied, on that replica
    # The group's ownership record in the state read (None: it checks none).
    # A scatter read checks that its parts' records cover the ring once.
    ownership: Ownership | dict[str, Any] | None = None


class _Barrier:
    """Coalesces read barriers of one group: one in flight, the next one gathering."""

    __slots__ = ("current", "next")

    def __init__(self) -> None:
        self.current: asyncio.Future[None] | None = None
        self.next: asyncio.Future[None] | None = None


class Node:
    def __init__(
        self,
        spec: ClusterSpec,
        node_id: str,
        data_dir: str,
        secret: bytes,
        options: NodeOptions | None = None,
        joining: NodeSpec | None = None,
    ) -> None:
        """``joining``: this node is not in the cluster description (``spec``, as the
        cluster was created); it joined later (``raftmem node --join``) with these
        addresses, and hosts only what the placement driver gives it."""
        self.spec = spec
        self.node_id = node_id
        self.me = joining if joining is not None else spec.node(node_id)
        self.data_dir = data_dir
        self.opts = options or NodeOptions()
        # The table the cluster was created with: genesis ownership and the
        # first placement. The placement driver's state takes over from it.
        self.initial_table: RoutingTable = initial_table(
            [n.id for n in spec.nodes], spec.groups, spec.replicas
        )
        self.table: RoutingTable = self.initial_table
        first = {g: list(m) for g, m in self.table.replicas.items()}
        first[PD_GROUP] = pd_members([n.id for n in spec.nodes])
        peers = {n.id: parse_addr(n.raft) for n in spec.nodes}
        peers[self.me.id] = parse_addr(self.me.raft)
        self.host = GroupHost(
            HostConfig(
                node_id=node_id,
                raft_bind=parse_addr(self.me.raft),
                peers=peers,
                groups={} if joining is not None else first,
                data_dir=data_dir,
                secret=secret,
                durable=self.opts.durable,
                hardening=HARDENING - {"prevote"} if self.opts.unsafe_lease_without_stickiness
                else HARDENING,
                unsafe_lease=self.opts.unsafe_lease_without_stickiness,
                sm_factory=self._state_machine,
            )
        )
        self._executor = ThreadPoolExecutor(self.opts.read_workers, thread_name_prefix="read")
        self._local = threading.local()
        # Per local group, created when first needed (groups become local at runtime).
        self._barriers: dict[int, _Barrier] = {}
        self._internal_credential = internal_credential(secret)
        self._http: aiohttp.ClientSession | None = None
        # group -> the node a forwarded request last succeeded at (tried first).
        self._forward_to: dict[int, str] = {}
        self._namespaces: dict[str, dict[str, Any]] = {}
        self._refresh_lock = asyncio.Lock()
        self.routing_refreshes = 0
        self.scatter_retries = 0  # scatter reads done again: a range was moving
        self._move_lock = asyncio.Lock()  # one range move driven from this node at a time
        self._tasks: list[asyncio.Task[None]] = []
        self._started = time.monotonic()
        self.read_index_fallbacks = 0
        self.point_reads_deferred = 0  # point reads sent to a read thread: database busy
        self.pd = PlacementDriver(self, auto_rebalance=self.opts.auto_rebalance)

    def _state_machine(self, path: str) -> Any:
        """A group replica's state machine, created with the group's genesis ownership:
        its ranges in the initial routing table, the same on every replica (a
        function of the cluster description); written only into a database that
        has no ownership record yet (raftmem/statemachine/ownership.py). The
        placement driver's group has its own state machine (pdstate.py)."""
        if os.path.normpath(path) == os.path.normpath(self._db_path(PD_GROUP)):
            return PDState(path)
        name = os.path.basename(os.path.dirname(os.path.normpath(path)))
        if name[:1] == "g" and name[1:].isdigit() \
                and os.path.normpath(path) == os.path.normpath(self._db_path(int(name[1:]))):
            # A group created later (placement rule 5) owns nothing at first.
            return StateMachine(path, genesis=self.initial_table.ownership(int(name[1:])))
        raise ValueError(f"{path} is no group's database")

    def data_bytes(self) -> int:
        """Bytes of this node's data-group databases (files and their WALs)."""
        total = 0
        for g in self._local_groups():
            for suffix in ("", "-wal"):
                try:
                    total += os.path.getsize(self._db_path(g) + suffix)
                except OSError:
                    pass
        return total

    def _db_path(self, group: int) -> str:
        return os.path.join(self.data_dir, "groups", f"g{group}", "state.db")

    # -- where groups live (the placement driver will re-wire these) --------

    def replica_nodes(self, group: int) -> list[str]:
        """The nodes that host a replica of ``group`` (voters, then learners), as the
        placement driver's state last seen here says."""
        g = self.pd.state.get("groups", {}).get(str(group))
        if g is not None:
            return [*g["voters"], *g["learners"]]
        if group == PD_GROUP:
            return pd_members([n.id for n in self.spec.nodes])
        return list(self.table.replicas[group])

    def api_address(self, node_id: str) -> str:
        """``host:port`` of a node's HTTP API (where its internal endpoints are)."""
        if node_id == self.me.id:
            return self.me.api
        known = self.pd.api_address(node_id)
        if known is not None:
            return known
        return self.spec.node(node_id).api

    def hosts(self, group: int) -> bool:
        """Whether this node has a replica of ``group`` that serves right now: a learner
        (still catching up, not yet a voter) or a removed replica does not."""
        r = self.host.replicas.get(group)
        if r is None or r.learner or r.removed:
            return False
        # A removed voter never hears of its removal (the leader stops sending
        # to it at once): until it is dropped, the PD's record says it is out.
        # Its reads would time out waiting for a leader that ignores it (found
        # by jepsen_like's rebalance nemesis: final reads timed out on it).
        g = self.pd.state.get("groups", {}).get(str(group))
        return g is None or self.node_id in g["voters"]

    def _local_groups(self) -> list[int]:
        """The data groups this node hosts a replica of (not the PD's)."""
        return sorted(g for g in self.host.replicas if g != PD_GROUP)

    def apply_placement(self, state: dict[str, Any]) -> None:
        """The routing table's replica lists follow the placement driver's groups,
        and it learns the data groups created since (they own no range until one
        is moved to them, so routing is unchanged; scatter reads include them)."""
        groups = state.get("groups") or {}
        replicas = dict(self.table.replicas)
        for key, g in groups.items():
            gid = int(key)
            if gid != PD_GROUP and g.get("voters"):
                replicas[gid] = tuple(g["voters"])
        if replicas != dict(self.table.replicas):
            self.table = dataclasses.replace(self.table, replicas=replicas)

    async def post_internal(self, api: str | None, path: str, body: dict[str, Any],
                            timeout: float = 10.0, node_id: str | None = None) -> Any:
        """POST JSON to another node's internal endpoint; its JSON answer, or its error raised."""
        if self._http is None:
            raise Unavailable(f"node {self.node_id} is not started", code="unavailable")
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, FORWARD_CONNECT_S))
        url = f"http://{api}{path}"
        try:
            async with self._http.post(url, data=orjson.dumps(body), timeout=limits,
                                       headers={"Content-Type": "application/json"}) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Unavailable(f"{api} did not answer {path}: {e!r}", code="unavailable") from e
        if status != 200:
            raise remote_error(status, raw)
        return orjson.loads(raw)

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            headers={INTERNAL_HEADER: self._internal_credential},
            # Kept-alive connections to the other nodes, bounded (a request past
            # the bound waits for one, within its own deadline).
            connector=aiohttp.TCPConnector(limit=FORWARD_CONNECTIONS, keepalive_timeout=30.0),
            # Every request sets its own total from its deadline.
            timeout=aiohttp.ClientTimeout(total=60.0, sock_connect=FORWARD_CONNECT_S),
        )
        self.host.start()
        self._tasks.append(asyncio.create_task(self._purge_loop()))
        self._tasks.append(asyncio.create_task(self.pd.run()))
        log.info("node_started", node=self.node_id, raft=self.me.raft, api=self.me.api,
                 groups=sorted(self.host.replicas))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._executor.shutdown(wait=True, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self.host.stop)
        log.info("node_stopped", node=self.node_id)

    # -- proposals --------------------------------------------------------

    async def _propose(self, group: int, cmd: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Propose ``cmd`` to ``group`` and retry until the deadline; the state machine's result.

        Through the local replica when this node hosts one, else forwarded to a
        node that does. Raises Unavailable (definite: nothing was written) or
        CommitTimeout (it may have been applied).
        """
        return await self.propose_payload(group, commands.encode(cmd), timeout)

    async def propose_payload(
        self, group: int, payload: bytes, timeout: float | None = None
    ) -> dict[str, Any]:
        """``_propose`` of an already encoded payload (what forwarding sends)."""
        budget = timeout or self.opts.write_timeout_s
        if self.hosts(group):
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                return await self._propose_local(group, payload, budget)
            except NotHosted:
                # The replica was dropped (moved elsewhere) meanwhile, perhaps
                # with this proposal in flight: the same payload again where the
                # group is now. Data commands carry a request id, so one that
                # did apply is answered from its record, not applied twice.
                budget = max(0.1, budget - (loop.time() - start))
        return await self._propose_remote(group, payload, budget)

    async def _propose_local(self, group: int, payload: bytes, budget: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        maybe_applied = False
        last = "no attempt"
        backoff = 0.005
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                # A lost callback must not eat the whole deadline: re-propose
                # after a while (same payload, same request id: applied once).
                return await asyncio.wait_for(self.host.propose(group, payload), min(remaining, 1.0))
            except ProposalFailed as e:
                if e.reason == "not_hosted":
                    raise NotHosted(f"group {group} is not hosted here") from None
                last = e.reason
                maybe_applied = maybe_applied or not e.definite
            except TimeoutError:
                last = "no outcome within attempt deadline"
                maybe_applied = True
            await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
            backoff = min(backoff * 2, 0.1)
        if maybe_applied:
            raise CommitTimeout(f"group {group}: no commit within {budget}s ({last})", group=group)
        raise Unavailable(f"group {group}: {last}", code="no_leader" if "leader" in last else "unavailable",
                          group=group)

    # -- forwarding to nodes that host a group ----------------------------

    def _forward_order(self, group: int) -> list[str]:
        """The group's replica nodes to try, the one last answered first."""
        nodes = [n for n in self.replica_nodes(group) if n != self.node_id]
        pref = self._forward_to.get(group)
        if pref in nodes:
            nodes.remove(pref)
            nodes.insert(0, pref)
        return nodes

    async def _post_internal(
        self, node_id: str, path: str, data: bytes, timeout: float
    ) -> tuple[int, bytes]:
        """POST to another node's internal endpoint; (status, body). Raises aiohttp's errors."""
        if self._http is None:
            raise Unavailable(f"node {self.node_id} is not started", code="unavailable")
        url = f"http://{self.api_address(node_id)}{path}"
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, FORWARD_CONNECT_S))
        async with self._http.post(url, data=data, timeout=limits) as resp:
            return resp.status, await resp.read()

    async def _propose_remote(self, group: int, payload: bytes, budget: float) -> dict[str, Any]:
        """Forward a proposal to the group's replica nodes in turn until one answers a result.

        A node that cannot be reached (nothing sent), or that answers 503
        (its own ``_propose`` gave up, definite), is passed over for the next.
        A request that got no answer, or an answered commit_timeout, may have
        been applied: the final error is then CommitTimeout, else Unavailable.
        Any other error the node answered is re-raised as is.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        maybe_applied = False
        last, last_code = "no replica node to forward to", "unavailable"
        backoff = 0.005
        while True:
            for node_id in self._forward_order(group):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                theirs = remaining - min(FORWARD_MARGIN_S, remaining / 4)
                path = f"/internal/groups/{group}/propose?timeout_ms={max(1, int(theirs * 1000))}"
                try:
                    status, body = await self._post_internal(node_id, path, payload, remaining)
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                    last, last_code = f"node {node_id} unreachable ({e})", "unavailable"
                    continue
                except (aiohttp.ClientError, TimeoutError) as e:
                    maybe_applied = True
                    last = f"no answer from node {node_id} ({type(e).__name__})"
                    continue
                if status == 200:
                    res = orjson.loads(body)
                    if not isinstance(res, dict):
                        raise Internal(f"node {node_id} answered a proposal with {type(res).__name__}")
                    self._forward_to[group] = node_id
                    return res
                err = remote_error(status, body)
                if status in _NODE_REFUSALS:
                    last, last_code = f"node {node_id} refused: {err.message}", "unavailable"
                    continue
                if isinstance(err, Unavailable) and not isinstance(err, EpochMismatch):
                    last, last_code = f"node {node_id}: {err.message}", err.code
                    continue
                if isinstance(err, CommitTimeout):
                    maybe_applied = True
                    last = f"node {node_id}: {err.message}"
                    continue
                raise err
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, 0.1)
        if maybe_applied:
            raise CommitTimeout(f"group {group}: no commit within {budget}s (forwarded; {last})",
                                group=group)
        raise Unavailable(f"group {group}: {last}", code=last_code, group=group)

    async def _read_remote(
        self, group: int, tier: str, need: int, max_staleness_ms: int | None, spec: ReadSpec,
        budget: float | None = None,
    ) -> _Served:
        """Have a node that hosts ``group`` serve ``spec`` at ``tier`` (its ``_serve_read``).

        Reads change nothing, so any failure is definite: an unreachable node,
        or one that answers 503 (no leader, too stale, not hosting), is passed
        over for the next. When every replica node answered such an error, the
        last one is raised; while some could not be reached, they are tried
        again until the deadline. Other errors (epoch_mismatch …) are raised as is.
        """
        loop = asyncio.get_running_loop()
        if budget is None:
            # The hosting node may wait for the session, try a ReadIndex and
            # fall back to a barrier through the log (read_timeout_s).
            budget = (self.opts.read_timeout_s + self.opts.session_wait_ms / 1000
                      + self.host.cfg.timing.read_index_timeout + 1.0)
        deadline = loop.time() + budget
        body = orjson.dumps({"spec": spec.to_dict(), "tier": tier, "need": need,
                             "max_staleness_ms": max_staleness_ms})
        answered: RaftmemError | None = None
        last = "no replica node to forward to"
        backoff = 0.005
        while True:
            unreached = False
            for node_id in self._forward_order(group):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    status, raw = await self._post_internal(
                        node_id, f"/internal/groups/{group}/read", body, remaining)
                except (aiohttp.ClientError, TimeoutError) as e:
                    unreached = True
                    last = f"node {node_id} unreachable ({type(e).__name__}: {e})"
                    continue
                if status == 200:
                    ans = orjson.loads(raw)
                    self._forward_to[group] = node_id
                    return _Served(ans["result"], int(ans["applied_index"]), str(ans["replica"]),
                                   int(ans["staleness_ms"]), int(ans["lag"]),
                                   ans.get("ownership"))
                err = remote_error(status, raw)
                if status in _NODE_REFUSALS:
                    unreached = True
                    last = f"node {node_id} refused: {err.message}"
                    continue
                if isinstance(err, Unavailable) and not isinstance(err, EpochMismatch):
                    answered = err
                    continue
                raise err
            remaining = deadline - loop.time()
            if (answered is not None and not unreached) or remaining <= 0:
                break
            await asyncio.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, 0.1)
        if answered is not None:
            raise answered
        raise Unavailable(f"group {group}: {last}", code="unavailable", group=group)

    # -- internal endpoints (served for other nodes) -----------------------

    def check_internal(self, headers: Mapping[str, str]) -> bool:
        """Whether a request carries this cluster's internal credential."""
        given = headers.get(INTERNAL_HEADER)
        return given is not None and hmac.compare_digest(
            given.encode(), self._internal_credential.encode())

    def _refuse_unhosted(self, group: int) -> None:
        if not self.hosts(group):
            # Never forwarded again from here: a request goes at most one hop.
            raise Unavailable(f"node {self.node_id} hosts no replica of group {group}",
                              code="not_hosted", group=group, node=self.node_id)

    async def internal_propose(self, group: int, payload: bytes, timeout_ms: int | None) -> dict[str, Any]:
        """``POST /internal/groups/{group}/propose``: an encoded command, proposed here."""
        self._refuse_unhosted(group)
        try:
            (pdstate.decode if group == PD_GROUP else commands.decode)(payload)
        except CorruptionError as e:
            raise ValidationError(f"not a command payload: {e}") from None
        budget = self.opts.write_timeout_s if timeout_ms is None else timeout_ms / 1000
        return await self._propose_local(group, payload, budget)

    async def internal_read(self, group: int, body: bytes) -> dict[str, Any]:
        """``POST /internal/groups/{group}/read``: a ReadSpec served by this node's replica."""
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ValidationError(f"malformed JSON: {e}") from None
        if not isinstance(req, dict) or set(req) != {"spec", "tier", "need", "max_staleness_ms"}:
            raise ValidationError("a read request has exactly spec, tier, need, max_staleness_ms")
        spec = ReadSpec.from_dict(req["spec"])
        tier, need, staleness = req["tier"], req["need"], req["max_staleness_ms"]
        if tier not in CONSISTENCY_TIERS:
            raise ValidationError(f"unknown tier {tier!r}", field="tier")
        if not isinstance(need, int) or isinstance(need, bool) or need < 0:
            raise ValidationError("need must be a non-negative integer", field="need")
        if staleness is not None and (not isinstance(staleness, int) or isinstance(staleness, bool)):
            raise ValidationError("max_staleness_ms must be an integer or null",
                                  field="max_staleness_ms")
        self._refuse_unhosted(group)
        served = await self._serve_read(group, tier, need, staleness, spec)
        return {"result": served.result, "applied_index": served.applied,
                "replica": served.replica, "staleness_ms": served.staleness_ms,
                "lag": served.lag, "tier": tier,
                "ownership": served.ownership.to_dict()
                if isinstance(served.ownership, Ownership) else served.ownership}

    async def _write(self, group: int, cmd: dict[str, Any]) -> dict[str, Any]:
        meta = _meta()
        # A malformed token is refused before anything is proposed.
        seen = meta.get("session") or session.decode(meta.get("session_in"))
        res = await self._propose(group, cmd)
        index = res.get("raft_index")
        if index is not None:
            meta["session"] = session.merge(seen, {group: index})
        if not res.get("ok", False):
            raise from_result_error(res.get("error", {}))
        return res

    # -- reads ------------------------------------------------------------

    async def _read_barrier(self, group: int) -> None:
        if self.opts.unsafe_local_reads:
            return
        b = self._barriers.setdefault(group, _Barrier())
        if b.next is None:
            b.next = asyncio.get_running_loop().create_future()
            if b.current is None:
                self._launch_barrier(group)
        fut = b.next if b.next is not None else b.current
        assert fut is not None
        await asyncio.shield(fut)

    def _launch_barrier(self, group: int) -> None:
        b = self._barriers[group]
        b.current, b.next = b.next, None
        assert b.current is not None
        asyncio.get_running_loop().create_task(self._run_barrier(group, b.current))

    async def _run_barrier(self, group: int, fut: asyncio.Future[None]) -> None:
        try:
            if self.opts.read_barrier == "read-index" and await self._read_index(group):
                fut.set_result(None)
                return
            # Through this node's own replica only: the read that follows is
            # served from it, so the barrier must be applied by it (forwarded
            # elsewhere, it would prove nothing about this replica).
            await self._propose_local(group, commands.encode(commands.barrier()),
                                      self.opts.read_timeout_s)
            fut.set_result(None)
        except RaftmemError as e:
            if isinstance(e, CommitTimeout):
                # A read that could not confirm leadership took no effect.
                e = Unavailable(f"group {group}: read barrier timed out", code="read_timeout",
                                group=group)
            fut.set_exception(e)
        finally:
            b = self._barriers[group]
            b.current = None
            if b.next is not None:
                self._launch_barrier(group)

    async def _read_index(self, group: int) -> bool:
        """Confirm a linearizable read with a ReadIndex and wait until the local replica
        has applied its index (docs/consistency.md). False when it cannot be had: the
        caller falls back to the barrier through the log."""
        try:
            # The raft thread fails a ReadIndex after read_index_timeout; the
            # margin only covers a raft thread that answers nothing at all.
            await asyncio.wait_for(self.host.read_index(group),
                                   self.host.cfg.timing.read_index_timeout + 0.5)
        except (ProposalFailed, TimeoutError):
            self.read_index_fallbacks += 1
            return False
        return True

    def _reader(self, group: int, wait: bool = True) -> Reader:
        """This thread's reader of the local replica of ``group``; ``wait=False``: one
        that raises apsw.BusyError at once instead of waiting for a lock."""
        readers: dict[tuple[int, int, bool], Reader] | None = getattr(self._local, "readers", None)
        if readers is None:
            readers = self._local.readers = {}
        # A replica dropped and created again here is a new database: readers
        # of the earlier one's files are not reused.
        key = (group, self.host.generation.get(group, 0), wait)
        r = readers.get(key)
        if r is None:
            for old in [k for k in readers if k[0] == group and k[1] != key[1]]:
                readers.pop(old).close()
            path = os.path.join(self.data_dir, "groups", f"g{group}", "state.db")
            r = readers[key] = Reader(path, busy_timeout_ms=5000 if wait else 0)
        return r

    def _view(self, group: int) -> ReplicaView:
        st = self.host.status().get(group)
        r = self.host.replicas.get(group)
        if st is None or r is None or not self.hosts(group):
            raise NotHosted(f"group {group} is not hosted here")
        now = time.monotonic()
        leader = st["role"] == "leader"
        return ReplicaView(
            role=st["role"],
            applied_index=r.visible_applied,  # committed to the database
            lease_valid=self.host.lease_valid(group),
            noop_applied=st["noop_applied"],
            staleness_ms=0 if leader else int(max(0.0, now - st["leader_contact"]) * 1000)
            if st["leader_contact"] != float("-inf") else 10**9,
        )

    async def _query(
        self, group: int, opts: ReadOptions, spec: ReadSpec, tier: str | None = None
    ) -> Any:
        """Serve ``spec`` on a replica of ``group`` (:meth:`_query_served`); its result."""
        tier = tier or opts.consistency or self.spec.consistency["default"]
        token = session.decode(_meta().get("session_in") or opts.session)
        return self._served(group, tier, token, await self._query_served(group, opts, spec, tier))

    async def _query_served(
        self, group: int, opts: ReadOptions, spec: ReadSpec, tier: str
    ) -> _Served:
        """Serve ``spec`` on a replica of ``group`` as the tier demands (readpolicy):
        this node's replica when it hosts one, else a node that does (the same
        rules, there). :meth:`_served` then records in the response metadata
        (session token, tier, and for eventual reads replica, applied index,
        staleness, lag) what was read.
        """
        token = session.decode(_meta().get("session_in") or opts.session)
        need = token.get(group, 0)
        if self.opts.unsafe_session_ignore_token and tier == "session":
            need = 0
        served = None
        if self.hosts(group):
            try:
                served = await self._serve_read(group, tier, need, opts.max_staleness_ms, spec)
            except NotHosted:
                pass  # moved away meanwhile: read where it is now
        if served is None:
            served = await self._read_remote(group, tier, need, opts.max_staleness_ms, spec)
        return served

    def _served(self, group: int, tier: str, token: dict[int, int], served: _Served) -> Any:
        """Record a served read in the response metadata; its result."""
        meta = _meta()
        meta["session"] = session.merge(meta.get("session", token), {group: served.applied})
        meta["tier"] = tier
        if tier == "eventual":
            # A scatter read may be served by several nodes: name them all.
            replicas = {r for r in str(meta.get("replica") or "").split(",") if r}
            meta["replica"] = ",".join(sorted(replicas | {served.replica}))
            meta.setdefault("applied_index", {})[str(group)] = served.applied
            meta["staleness_ms"] = max(meta.get("staleness_ms", 0), served.staleness_ms)
            meta["lag"] = max(meta.get("lag", 0), served.lag)
        return served.result

    async def _serve_read(
        self, group: int, tier: str, need: int, max_staleness_ms: int | None, spec: ReadSpec
    ) -> _Served:
        """Run ``spec`` on this node's replica of ``group`` once ``tier`` allows it."""
        view = await self._await_tier(group, tier, need, max_staleness_ms)
        got = None
        if spec.op in POINT_OPS:
            try:
                got = self._read_now(group, spec, wait=False)
            except apsw.BusyError:
                self.point_reads_deferred += 1
        if got is None:
            loop = asyncio.get_running_loop()
            got = await loop.run_in_executor(self._executor, self._read_now, group, spec)
        return self._local_served(group, view, *got)

    def _read_now(self, group: int, spec: ReadSpec,
                  wait: bool = True) -> tuple[Any, int, Ownership | None]:
        """On a read thread (or, ``wait=False``, the event loop: apsw.BusyError rather
        than waiting for a lock): ``spec`` on the local replica, and the applied index of the
        very snapshot it read (a token taken before the read could be one entry short
        of what it returned, and the session's next read elsewhere could see less —
        found by jepsen_like's session checker: monotonic reads broke)."""
        if not self.hosts(group):
            raise NotHosted(f"group {group} is not hosted here")
        r = self._reader(group, wait)
        with r.transaction():
            # Scatter reads check their parts' records (coverage of the ring);
            # single-key reads check ownership inside run_read, and skip this.
            own = r.ownership() if spec.op in SCATTER_OPS else None
            return run_read(r, spec, now_ms), r.applied_index(), own

    def _local_served(self, group: int, view: ReplicaView, result: Any, applied: int,
                      ownership: Ownership | None = None) -> _Served:
        st = self.host.status().get(group) or {"commit_index": applied}
        return _Served(result, applied, self.node_id, view.staleness_ms,
                       max(0, st["commit_index"] - applied), ownership)

    async def _await_tier(
        self, group: int, tier: str, need: int, max_staleness_ms: int | None
    ) -> ReplicaView:
        """Wait until this node's replica of ``group`` may serve a read at ``tier``
        (a session token's index applied, a read barrier passed...): its view then."""
        waited = 0
        while True:
            view = self._view(group)
            if self.opts.unsafe_local_reads and tier == "linearizable":
                d = Decision.SERVE
            else:
                d = decide(tier, view, session_index=need, waited_ms=waited,
                           max_wait_ms=self.opts.session_wait_ms,
                           max_staleness_ms=max_staleness_ms)
            if d is Decision.SERVE:
                break
            if d is Decision.WAIT:
                await asyncio.sleep(0.002)
                waited += 2
                continue
            if d is Decision.REJECT:
                raise Unavailable(
                    f"replica {self.node_id} of group {group} is {view.staleness_ms} ms stale "
                    f"(max_staleness_ms={max_staleness_ms})", code="too_stale",
                    replica=self.node_id, staleness_ms=view.staleness_ms)
            await self._read_barrier(group)
            break
        return view

    def _floor(self, memories: list[Memory]) -> str | None:
        floors = self.spec.consistency["tag_floors"]
        found = [floors[t] for m in memories for t in m.get("tags", ()) if t in floors]
        return strongest(*found) if found else None

    def _tier(self, ns: str, opts: ReadOptions) -> str:
        c = self.spec.consistency
        return opts.consistency or c["namespaces"].get(ns) or c["default"]

    async def _read(
        self, ns: str, opts: ReadOptions, run: Callable[[str], Awaitable[T]],
        memories_of: Callable[[T], list[Memory]], confirm_miss: bool = False,
    ) -> T:
        """Run a read at the request's tier; if what it returned carries a tag whose
        floor is stronger, run it again at the floor (a floor is never undercut).

        ``confirm_miss`` (a single-key read): a miss at a weak tier says nothing
        about the tags of a memory the replica has not seen yet, so it is
        confirmed at the strongest floor configured."""
        tier = self._tier(ns, opts)
        result = await run(tier)
        memories = memories_of(result)
        floors = self.spec.consistency["tag_floors"]
        if confirm_miss and not memories and floors:
            floor: str | None = strongest(*floors.values())
        else:
            floor = self._floor(memories)
        if floor is not None and effective_tier(tier, floor) != tier:
            result = await run(effective_tier(tier, floor))
        return result

    async def _scatter(self, opts: ReadOptions, spec: ReadSpec, tier: str | None = None) -> list[Any]:
        """``spec`` on every group, once the parts read cover the ring exactly once.

        While a range moves between groups it is, for a moment, owned by none
        (after its old group released it, before its new one activated it); a
        scatter read that met that moment, or one that read the old group
        before and the new one after, would miss or repeat its memories. The
        ownership records of the states read tell: such a read is done again
        (docs/placement.md, "Range moves")."""
        tier = tier or opts.consistency or self.spec.consistency["default"]
        token = session.decode(_meta().get("session_in") or opts.session)
        deadline = time.monotonic() + RANGE_MOVE_WAIT_S
        attempt = 0
        while True:
            # The groups that own some range by this node's table: a group that
            # owns none (one being created) has nothing to read. Should the table
            # be stale, the coverage check below notices and refreshes it.
            groups = sorted({r.group for r in self.table.ranges})
            parts = await self._scatter_served(opts, spec, tier, groups)
            if covers_ring_once([p.ownership for p in parts]) or time.monotonic() > deadline:
                break
            attempt += 1
            self.scatter_retries += 1
            await self._refresh_table(self.table, [
                p.ownership.to_dict() if isinstance(p.ownership, Ownership) else p.ownership
                for p in parts], attempt)
        return [self._served(g, tier, token, p) for g, p in zip(groups, parts, strict=True)]

    async def _scatter_served(self, opts: ReadOptions, spec: ReadSpec, tier: str,
                              groups: list[int]) -> list[_Served]:
        """``spec`` on each of ``groups``. The groups this node hosts wait for their
        tier together and are then read in one job on one read thread (one hand-off
        instead of one per group); the others are read where they are."""
        local = [g for g in groups if self.hosts(g)]
        if len(local) < 2:
            return list(await asyncio.gather(
                *(self._query_served(g, opts, spec, tier) for g in groups)))
        token = session.decode(_meta().get("session_in") or opts.session)
        ignore = self.opts.unsafe_session_ignore_token and tier == "session"

        async def ready(g: int) -> ReplicaView | None:
            try:
                return await self._await_tier(g, tier, 0 if ignore else token.get(g, 0),
                                              opts.max_staleness_ms)
            except NotHosted:
                return None  # moved away meanwhile: read where it is now

        remote = [g for g in groups if g not in local]
        remote_parts = asyncio.gather(*(self._query_served(g, opts, spec, tier) for g in remote))
        views = await asyncio.gather(*(ready(g) for g in local))
        ready_groups = [(g, v) for g, v in zip(local, views, strict=True) if v is not None]

        def read_all() -> list[tuple[Any, int, Ownership | None] | None]:
            out: list[tuple[Any, int, Ownership | None] | None] = []
            for g, _ in ready_groups:
                try:
                    out.append(self._read_now(g, spec))
                except NotHosted:
                    out.append(None)
            return out

        loop = asyncio.get_running_loop()
        read = await loop.run_in_executor(self._executor, read_all)
        results: dict[int, _Served] = {}
        for (g, view), got in zip(ready_groups, read, strict=True):
            if got is not None:
                results[g] = self._local_served(g, view, *got)
        late = [g for g in local if g not in results]
        for g, res in zip(remote + late, [*await remote_parts, *await asyncio.gather(
                *(self._query_served(g, opts, spec, tier) for g in late))], strict=True):
            results[g] = res
        return [results[g] for g in groups]

    # -- namespaces -------------------------------------------------------

    async def create_namespace(self, ns: str, dim: int, metric: str) -> tuple[dict[str, Any], bool]:
        ts = now_ms()
        res = await self._write(CATALOG_GROUP, commands.create_namespace(ns, dim, metric, ts, None))
        definition = res["namespace"]
        created = bool(res.get("created", False))
        # The catalog group decided the definition; install exactly it on every
        # other group that owns a range (idempotent, so a retried PUT finishes a
        # partial one). A group that owns none yet (being created) gets it with
        # its first range (staged with the move) or its first write.
        owning = {r.group for r in self.table.ranges}
        await asyncio.gather(*(
            self._install_namespace(g, definition) for g in sorted(owning) if g != CATALOG_GROUP
        ))
        self._namespaces[ns] = definition
        return definition, created

    async def _install_namespace(self, group: int, definition: dict[str, Any]) -> None:
        await self._write(group, commands.create_namespace(
            definition["name"], definition["dim"], definition["metric"], definition["created_at"], None
        ))

    async def _namespace(self, ns: str) -> dict[str, Any]:
        """The namespace's definition; cached because a definition never changes."""
        d = self._namespaces.get(ns)
        if d is not None:
            return d
        d = await self._query(CATALOG_GROUP, ReadOptions(), ReadSpec("get_namespace", {"ns": ns}),
                              "linearizable")
        if d is None:
            raise NotFound(f"namespace {ns!r} does not exist", code="namespace_not_found")
        self._namespaces[ns] = d
        return d

    async def get_namespace(self, ns: str) -> dict[str, Any]:
        return await self._namespace(ns)

    async def list_namespaces(self) -> list[dict[str, Any]]:
        return list(await self._query(CATALOG_GROUP, ReadOptions(), ReadSpec("list_namespaces"),
                                      "linearizable"))

    @staticmethod
    def _check_dim(d: dict[str, Any], embedding: Any, where: str = "embedding") -> None:
        n = len(embedding)
        if n != d["dim"]:
            raise ValidationError(
                f"{where} has {n} dimensions; namespace {d['name']!r} has {d['dim']}",
                code="dimension_mismatch", field=where,
            )

    async def _write_ns(self, ns: str, group: int, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Write to ``group``; if the group lacks a namespace the catalog has, install it and
        retry; while the key's range is moving (frozen), wait for the move and retry."""
        deadline = time.monotonic() + RANGE_MOVE_WAIT_S
        attempt = 0
        while True:
            try:
                try:
                    return await self._write(group, build())
                except NotFound as e:
                    if e.code != "namespace_not_found":
                        raise
                    d = await self._namespace(ns)
                    await self._install_namespace(group, d)
                    return await self._write(group, build())
            except RangeMoving:
                # Nothing was written (nor recorded under the request id). The
                # move ends with the range released here (epoch_mismatch: the
                # caller routes again) or thawed.
                attempt += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(min(0.01 * 2**attempt, 0.25))

    # -- routing: epoch mismatches refresh the table -----------------------

    async def _write_routed(
        self, ns: str, memory_id: str, build: Callable[[list[int]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Write ``build(epoch)`` to the group that owns ``ns/memory_id`` by the routing table.

        A group that does not own the key at that epoch answers a definite
        ``epoch_mismatch`` (nothing was written, nothing recorded under the
        request id): refresh the table and route again, up to EPOCH_RETRIES times.
        """
        attempt = 0
        while True:
            table = self.table
            group = table.group_for(ns, memory_id)
            try:
                return await self._write_ns(ns, group, functools.partial(build, list(table.epoch)))
            except EpochMismatch as e:
                attempt += 1
                if attempt > EPOCH_RETRIES:
                    raise
                await self._refresh_table(table, [e.details.get("ownership")], attempt)

    def _local_ownership(self) -> list[Ownership]:
        """The ownership records of this node's replicas (on a read thread)."""
        out = []
        for g in self._local_groups():
            try:
                own = self._reader(g).ownership()
            except apsw.Error:
                continue  # dropped (moved elsewhere) just now
            if own is not None:
                out.append(own)
        return out

    async def _ownerships(self) -> list[Ownership]:
        """The groups' ownership records: this node's replicas', and for the groups it
        does not host, as a hosting node's replica has applied them (eventual, like the
        local ones). A group whose record cannot be had now is left out (its ranges keep
        their group in ``merge_ownership``)."""
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._executor, self._local_ownership)
        remote = [g for g in self.table.groups if not self.hosts(g)]
        answers = await asyncio.gather(*(
            self._read_remote(g, "eventual", 0, None, ReadSpec("ownership"), OWNERSHIP_READ_S)
            for g in remote
        ), return_exceptions=True)
        for g, a in zip(remote, answers, strict=True):
            if isinstance(a, BaseException):
                if not isinstance(a, RaftmemError):
                    raise a
                log.info("ownership_unavailable", group=g, reason=a.message)
            elif a.result is not None:
                try:
                    out.append(Ownership.from_dict(a.result))
                except ValueError:
                    log.warning("ownership_malformed", group=g)
        return out

    async def _refresh_table(self, seen: RoutingTable, hints: list[Any], attempt: int) -> None:
        """Rebuild the routing table after a group refused a request routed with ``seen``.

        The groups' own records are the truth: this node's replicas' records,
        plus the ones carried by the refusals (``hints``), merged into the table
        (``routing.merge_ownership``). One refresh at a time; a request whose
        table was already replaced routes again at once. When nothing new was
        learnt (this node's replicas lag the group that refused), back off a
        little before the next attempt.
        """
        async with self._refresh_lock:
            if self.table is not seen:
                return
            owned = await self._ownerships()
            for h in hints:
                try:
                    owned.append(Ownership.from_dict(h))
                except ValueError:
                    pass
            new = merge_ownership(self.table, owned)
            if new != self.table:
                log.info("routing_refreshed", epoch=list(new.epoch), was=list(seen.epoch))
                self.table = new
                self.routing_refreshes += 1
                return
        await asyncio.sleep(min(0.005 * 2**attempt, 0.2))

    # -- memories ---------------------------------------------------------

    def _memory_for_put(self, m: dict[str, Any], ts: int, request_key: str | None) -> dict[str, Any]:
        ttl = m.get("ttl_s")
        return {
            "id": m.get("id") or new_memory_id(ts, request_key),
            "agent_id": m["agent_id"],
            "text": m["text"],
            "embedding": m["embedding"],
            "metadata": m.get("metadata") or {},
            "tags": list(m.get("tags") or []),
            "expires_at": None if ttl is None else ts + int(float(ttl) * 1000),
        }

    async def put_memory(self, ns: str, memory: dict[str, Any], request_id: str | None) -> Memory:
        d = await self._namespace(ns)
        self._check_dim(d, memory["embedding"])
        ts = now_ms()
        m = self._memory_for_put(memory, ts, None if request_id is None else f"{ns}/{request_id}")
        rid = request_id or uuid.uuid4().hex
        res = await self._write_routed(
            ns, m["id"], lambda epoch: commands.put(ns, m, ts, rid, epoch)
        )
        return res["memory"]

    async def put_batch(
        self, ns: str, memories: list[dict[str, Any]], request_id: str | None
    ) -> list[dict[str, Any]]:
        d = await self._namespace(ns)
        for i, m in enumerate(memories):
            self._check_dim(d, m["embedding"], where=f"memories[{i}].embedding")
        ts = now_ms()
        rid = request_id or uuid.uuid4().hex
        pending = [
            (i, self._memory_for_put(m, ts, None if request_id is None else f"{ns}/{rid}/{i}"))
            for i, m in enumerate(memories)
        ]

        async def one(
            group: int, items: list[tuple[int, dict[str, Any]]], epoch: list[int]
        ) -> list[tuple[int, Any]]:
            ms = [m for _, m in items]
            # The part's request id names exactly its items: a retry of the same
            # items deduplicates, and items re-split after an epoch mismatch
            # never meet another part's recorded result.
            part = hashlib.blake2b("\n".join(m["id"] for m in ms).encode(),
                                   digest_size=8).hexdigest()
            res = await self._write_ns(
                ns, group, lambda: commands.put_batch(ns, ms, ts, f"{rid}/{part}", epoch),
            )
            return [(i, r) for (i, _), r in zip(items, res["results"], strict=True)]

        out: list[Any] = [None] * len(memories)
        attempt = 0
        while pending:
            table = self.table
            by_group: dict[int, list[tuple[int, dict[str, Any]]]] = {}
            for i, pm in pending:
                by_group.setdefault(table.group_for(ns, pm["id"]), []).append((i, pm))
            parts = list(by_group.items())
            done = await asyncio.gather(
                *(one(g, items, list(table.epoch)) for g, items in parts), return_exceptions=True
            )
            pending, hints, refusal = [], [], None
            failure: BaseException | None = None
            for (_, items), res in zip(parts, done, strict=True):
                if isinstance(res, EpochMismatch):
                    # Nothing of this part was written: route its items again.
                    pending.extend(items)
                    hints.append(res.details.get("ownership"))
                    refusal = res
                elif isinstance(res, BaseException):
                    failure = failure or res
                else:
                    for i, r in res:
                        out[i] = r
            if failure is not None:
                raise failure
            if refusal is not None:
                attempt += 1
                if attempt > EPOCH_RETRIES:
                    raise refusal
                await self._refresh_table(table, hints, attempt)
        return out

    async def get_memory(
        self, ns: str, memory_id: str, opts: ReadOptions, include_embedding: bool = False
    ) -> Memory:
        # now_ms None: the serving node's clock when it reads (refuse_unowned first).
        get = ReadSpec("get", {"ns": ns, "id": memory_id, "now_ms": None,
                               "include_embedding": include_embedding})

        async def at(group: int, tier: str) -> Memory | None:
            m: Memory | None = await self._query(group, opts, get, tier)
            return m

        attempt = 0
        while True:
            table = self.table
            try:
                m = await self._read(ns, opts, functools.partial(at, table.group_for(ns, memory_id)),
                                     lambda m: [m] if m else [], confirm_miss=True)
                break
            except EpochMismatch as e:
                attempt += 1
                if attempt > EPOCH_RETRIES:
                    raise
                await self._refresh_table(table, [e.details.get("ownership")], attempt)
        if m is None:
            await self._namespace(ns)
            raise NotFound(f"memory {memory_id!r} not found in namespace {ns!r}")
        return m

    async def patch_memory(
        self, ns: str, memory_id: str, fields: dict[str, Any], if_version: int | None,
        request_id: str | None,
    ) -> Memory:
        d = await self._namespace(ns)
        if "embedding" in fields:
            self._check_dim(d, fields["embedding"])
        ts = now_ms()
        f = {k: v for k, v in fields.items() if k != "ttl_s"}
        if "ttl_s" in fields:
            ttl = fields["ttl_s"]
            f["expires_at"] = None if ttl is None else ts + int(float(ttl) * 1000)
        rid = request_id or uuid.uuid4().hex
        res = await self._write_routed(
            ns, memory_id,
            lambda epoch: commands.patch(ns, memory_id, f, if_version, ts, rid, epoch),
        )
        return res["memory"]

    async def delete_memory(
        self, ns: str, memory_id: str, if_version: int | None, request_id: str | None
    ) -> None:
        await self._namespace(ns)
        ts = now_ms()
        rid = request_id or uuid.uuid4().hex
        await self._write_routed(
            ns, memory_id,
            lambda epoch: commands.delete(ns, memory_id, if_version, ts, rid, epoch),
        )

    async def list_memories(
        self, ns: str, agent_id: str | None, tag: str | None, limit: int, cursor: str | None,
        opts: ReadOptions,
    ) -> tuple[list[Memory], str | None]:
        await self._namespace(ns)
        t = now_ms()
        # One more than asked from each group tells whether a next page exists.
        spec = ReadSpec("list", {"ns": ns, "agent_id": agent_id, "tag": tag, "limit": limit + 1,
                                 "after_id": cursor, "now_ms": t})
        parts = await self._read(
            ns, opts, lambda tier: self._scatter(opts, spec, tier),
            lambda ps: [m for p in ps for m in p],
        )
        merged = sorted((m for p in parts for m in p), key=lambda m: m["id"])
        page = merged[:limit]
        next_cursor = page[-1]["id"] if len(merged) > limit else None
        return page, next_cursor

    async def search(
        self, ns: str, embedding: list[float], k: int, flt: SearchFilter, opts: ReadOptions
    ) -> list[dict[str, Any]]:
        d = await self._namespace(ns)
        self._check_dim(d, embedding)
        # float32 values: exact through JSON when a node that hosts a group runs it.
        vec = np.asarray(embedding, dtype=np.float32).tolist()
        spec = ReadSpec("search", {"ns": ns, "vector": vec, "k": k, "filter": flt.to_dict(),
                                   "now_ms": now_ms()})
        parts = await self._read(
            ns, opts, lambda tier: self._scatter(opts, spec, tier),
            lambda ps: [h["memory"] for p in ps for h in p],
        )
        merged = sorted(
            (hit for p in parts for hit in p), key=lambda h: (h["distance"], h["memory"]["id"])
        )
        return merged[:k]

    # -- maintenance ------------------------------------------------------

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.purge_interval_s)
            t = now_ms()
            for gid, st in self.host.status().items():
                if st["role"] != "leader" or gid == PD_GROUP:
                    continue
                try:
                    await self._propose(gid, commands.purge(t, t - int(self.opts.dedup_window_s * 1000)))
                except RaftmemError as e:
                    log.info("purge_skipped", group=gid, reason=e.message)

    async def digests(self) -> dict[str, Any]:
        """Digest and applied index of each group replica on this node (only those:
        a replica elsewhere reports its own on its node)."""
        loop = asyncio.get_running_loop()

        def one(g: int) -> dict[str, Any]:
            r = self._reader(g)
            with r.transaction():
                return {"applied_index": r.applied_index(), "digest": run_read(r, ReadSpec("digest"))}

        groups = {}
        for g in self._local_groups():
            groups[str(g)] = await loop.run_in_executor(self._executor, one, g)
        return {"node": self.node_id, "groups": groups, "scope": "local replicas",
                "not_hosted": [g for g in self.table.groups if not self.hosts(g)]}

    # -- placement (admin) ------------------------------------------------

    async def ranges(self) -> dict[str, Any]:
        """Every range of the routing table: owning group, replicas, leader, epochs."""
        records = {o.group: o for o in await self._ownerships()}
        status = self.host.status()
        table = self.table
        out = []
        for r in table.ranges:
            own = records.get(r.group)
            claim = own.range_for(r.start) if own is not None else None
            out.append({
                "start": format_point(r.start),
                "end": format_point(r.end),
                "group": r.group,
                "replicas": self.replica_nodes(r.group),
                "leader": status.get(r.group, {}).get("leader"),
                # The group's own record, as this node's replica has applied it
                # (for a group hosted elsewhere: as a hosting node's replica has).
                "range_version": None if claim is None else claim.version,
                "group_epoch": None if own is None
                else {"version": own.version, "conf_ver": own.conf_ver},
                "confirmed": claim is not None and claim.end >= r.end,
                "frozen": claim is not None and claim.frozen,
            })
        return {
            "node": self.node_id,
            "epoch": {"version": table.version, "conf_ver": table.conf_ver},
            "ranges": out,
            "routing_refreshes": self.routing_refreshes,
            # The range table the placement driver last recorded (a settled ring).
            "pd_table": (self.pd.local_state() if self.pd.hosts_pd() else self.pd.state)
            .get("ranges"),
        }

    async def move_range(self, start: str, end: str, to_group: int,
                         stop_after: str | None = None) -> dict[str, Any]:
        """``POST /admin/ranges/move`` (raftmem/rangemove.py); ``stop_after``: fault
        injection, the move ends after that step as a crash there would end it."""
        try:
            a, b = parse_point(start), parse_point(end)
        except ValueError as e:
            raise ValidationError(str(e), field="start") from None
        async with self._move_lock:
            return await rangemove.move_range(self, a, b, to_group, stop_after=stop_after)

    async def _at_pd_leader(self, action: str, body: dict[str, Any]) -> Any:
        """Run a placement action on the PD's leader (here, or forwarded there)."""
        st = self.host.status().get(PD_GROUP)
        if st is not None and st["role"] == "leader":
            return await self.pd.handle(action, body)
        leader = st["leader"] if st is not None else None
        candidates = [leader] if leader else []
        candidates += [n for n in self.pd.pd_nodes() if n not in candidates and n != self.node_id]
        last: RaftmemError | None = None
        for n in candidates:
            try:
                return await self.post_internal(self.api_address(n),
                                                f"/internal/placement/{action}", body)
            except Unavailable as e:
                last = e  # not the leader (any more), or unreachable: the next one
        raise last or Unavailable("the placement driver has no reachable leader",
                                  code="no_leader")

    async def rebalance(self, dry_run: bool) -> dict[str, Any]:
        """The placement driver's plan (``dry_run``) or one executor pass, on its leader."""
        return dict(await self._at_pd_leader("rebalance", {"dry_run": dry_run}))

    async def operators(self) -> dict[str, Any]:
        """The executor's operators: running, and a bounded history (on the PD leader)."""
        return dict(await self._at_pd_leader("operators", {}))

    async def add_node(self, node_id: str, api: str, raft: str) -> dict[str, Any]:
        """``POST /admin/nodes``: register a node; the placement driver then gives it replicas."""
        return dict(await self._at_pd_leader("register",
                                             {"id": node_id, "api": api, "raft": raft}))

    async def remove_node(self, node_id: str) -> dict[str, Any]:
        """``DELETE /admin/nodes/{id}``: drain the node (its replicas move elsewhere,
        leadership first); once it holds nothing it is removed from the registry."""
        return dict(await self._at_pd_leader("drain", {"id": node_id}))

    async def set_groups_per_node(self, groups_per_node: int | None) -> dict[str, Any]:
        """``PUT /admin/placement``: the data groups per node the placement driver aims
        for (it then creates groups and moves ranges to them); None: no target."""
        res = await self._at_pd_leader("groups_per_node", {"groups_per_node": groups_per_node})
        return {"groups_per_node": res.get("groups_per_node")}

    async def describe(self) -> dict[str, Any]:
        """What a joining node needs: the cluster description and the PD's state."""
        return {"spec": self.spec.to_dict(), "state": self.pd.state}

    # -- fault injection (the transport seam) ------------------------------

    def isolate(self, peers: list[str]) -> None:
        unknown = [p for p in peers if p not in {n.id for n in self.spec.nodes}]
        if unknown:
            raise ValidationError(f"unknown node ids {unknown}", field="peers")
        self.host.isolate([p for p in peers if p != self.node_id])

    def heal(self) -> None:
        self.host.heal()

    # -- health and state -------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "node": self.node_id, "uptime_s": round(time.monotonic() - self._started, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        groups = self.host.status()
        problems = {}
        for gid, st in groups.items():
            if st["failed"]:
                problems[gid] = st["failed"]
            elif st["leader"] is None:
                problems[gid] = "no leader"
            elif st["role"] != "leader" and time.monotonic() - st["leader_contact"] > 2.0:
                problems[gid] = "no word from the leader for over 2 s"
            elif st["raft_applied_index"] < st["commit_index"]:
                problems[gid] = f"applying backlog ({st['raft_applied_index']}/{st['commit_index']})"
        # Readiness of this node's replicas; groups hosted elsewhere are theirs to report.
        ready = not problems and set(groups) == set(self.host.replicas)
        return ready, {"ready": ready, "node": self.node_id,
                       "problems": {str(k): v for k, v in problems.items()},
                       "hosted_groups": self._local_groups()}

    async def cluster_state(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        owned = {o.group: o for o in await loop.run_in_executor(
            self._executor, self._local_ownership)}
        groups = {}
        for g, st in sorted(self.host.status().items()):
            own = owned.get(g)
            groups[str(g)] = {
                **st,
                # entries committed but not applied here yet
                "lag": max(0, st["commit_index"] - st["raft_applied_index"]),
                "epoch": None if own is None
                else {"version": own.version, "conf_ver": own.conf_ver},
                # The ranges the group's record owns, as this node's replica has it.
                "ranges": None if own is None else own.to_dict()["ranges"],
            }
        pd_state = self.pd.local_state() if self.pd.hosts_pd() else self.pd.state
        return {
            "node": self.node_id,
            "cluster_id": self.spec.cluster_id,
            # the cluster description (as created); the live registry is "registry"
            "nodes": [n.to_dict() for n in self.spec.nodes],
            "registry": pd_state.get("nodes", {}),
            "placement": {
                "pd_group": PD_GROUP,
                "pd_applied_index": pd_state.get("applied_index"),
                "groups": pd_state.get("groups", {}),
                "auto_rebalance": self.pd.auto_rebalance,
                "last_error": self.pd.last_error,
            },
            "routing": self.table.to_dict(),
            # this node's replicas only; the routing table says where the others are
            "groups": groups,
            "hosted_groups": self._local_groups(),
            "transport": {
                "frames_in": self.host.mux.frames_in,
                "frames_out": self.host.mux.frames_out,
                "auth_failures": self.host.mux.auth_failures,
                "isolated": sorted(self.host.mux.isolated),
            },
            "durable": self.opts.durable,
            # each group replica's in-memory search index (rows, bytes): vecindex.py
            "search_index": {str(g): vecindex.stats_for(self._db_path(g))
                             for g in self._local_groups()},
            "reads": {"barrier": self.opts.read_barrier,
                      "read_index_fallbacks": self.read_index_fallbacks,
                      "point_reads_deferred": self.point_reads_deferred},
        }

