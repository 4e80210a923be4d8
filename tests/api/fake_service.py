"""An in-memory :class:`raftmem.types.MemoryService` with the node's semantics, for API tests.

Semantics it shares with the real node (the API tests rely on them):

* a namespace has a fixed ``dim`` and ``metric``; re-creating it identically is
  ``created=False``, differently is ``Conflict(code="namespace_conflict")``;
* an unknown namespace is ``NotFound(code="namespace_not_found")``, an unknown
  (or expired) memory ``NotFound(code="not_found")``;
* an embedding whose length is not the namespace's dim is
  ``ValidationError(code="dimension_mismatch")`` (in a batch: the whole batch,
  ``field="memories[i].embedding"``); a zero cosine query vector is a ValidationError;
* ``if_version`` that is not the current version is ``Conflict(code="version_mismatch")``;
  putting an id that exists is ``Conflict(code="already_exists")``;
* a write retried with the same ``request_id`` returns the first result and
  applies once;
* memories carry ``embedding`` only when asked for; versions start at 1;
  ``list_memories`` orders by id with an opaque cursor.

Placement (answered by the PD leader in the node): ``rebalance``, ``operators``
(a scripted executor, ``FakeExecutor``), ``add_node`` / ``remove_node`` /
``describe`` over an in-memory node registry, ``pd.handle`` for the internal
placement route, and ``check_internal`` with the node's rule for ``FAKE_SECRET``.

Every call is recorded in ``calls`` (name, args) so tests can assert that bad
input never reached the service; ``fail_with`` makes the next call raise.
"""

from __future__ import annotations

import copy
import hmac
import math
from typing import Any

from raftmem.errors import Conflict, NotFound, RaftmemError, Unavailable, ValidationError
from raftmem.node import INTERNAL_HEADER, internal_credential
from raftmem.pd import PD_GROUP
from raftmem.placement import planner
from raftmem.placement.executor import STEPS
from raftmem.types import Memory, ReadOptions, SearchFilter

START_MS = 1_700_000_000_000
# The fake cluster's secret: internal routes need internal_credential(FAKE_SECRET).
FAKE_SECRET = b"fake-cluster-secret"
FAKE_SPEC: dict[str, Any] = {
    "cluster_id": "fake", "groups": 2, "replicas": 1,
    "nodes": [{"id": "fake-1", "api": "127.0.0.1:7000", "raft": "127.0.0.1:7100"}],
    "consistency": {"default": "linearizable", "tag_floors": {}, "namespaces": {}},
}


class FakeExecutor:
    """The placement executor's bookkeeping, scripted: every pass advances each running
    operator by one step (not those of ``stuck_groups``); an operator whose group is in
    ``fail_groups`` fails at its second step. Operators are started only by a pass that
    is given them while nothing runs, as the real one does not plan busy groups."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.passes = 0
        self.balanced = False
        self.stuck_groups: set[int] = set()
        self.fail_groups: set[int] = set()
        self._next_id = 0

    def _dict(self, run: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(run)

    def run_pass(self, ops: list[Any]) -> list[dict[str, Any]]:
        self.passes += 1
        running = [r for r in self.runs if r["status"] == "running"]
        busy = bool(running)
        for r in running:
            if r["group"] in self.stuck_groups:
                r["last_error"] = "catch_up: learner behind by 1200 entries"
                continue
            r["elapsed"] = round(r["elapsed"] + 0.5, 3)
            r["attempts"] += 1
            if r["group"] in self.fail_groups and r["step_index"] == 2:
                r["status"] = "failed"
                r["error"] = f"{r['step']}: timed out after 30s"
            elif r["step_index"] == r["steps"]:
                r["status"], r["step"] = "done", "done"
            else:
                r["step_index"] += 1  # 1-based: the step now awaited
                r["step"] = STEPS[r["kind"]][r["step_index"] - 1]
        started = []
        if not busy and not any(r["status"] == "running" for r in self.runs):
            for op in ops:
                if any(r["group"] == op.group for r in self.runs):
                    continue  # planned once already: the drawn cluster does not change
                self._next_id += 1
                run = {"id": self._next_id, "kind": op.kind, "group": op.group,
                       "node": op.node, "target": op.target, "reason": op.reason,
                       "conf_ver": op.conf_ver, "status": "running",
                       "step": STEPS[op.kind][0], "step_index": 1,
                       "steps": len(STEPS[op.kind]), "started_at": START_MS,
                       "elapsed": 0.0, "error": None, "last_error": None, "attempts": 0}
                self.runs.append(run)
                started.append(self._dict(run))
        self.balanced = not busy and not started
        return started

    def progress(self) -> dict[str, Any]:
        def having(status: str) -> list[dict[str, Any]]:
            return [self._dict(r) for r in self.runs if r["status"] == status]

        return {
            "executor": "running", "balanced": self.balanced, "passes": self.passes,
            "counts": {"running": len(having("running")), "started": len(self.runs),
                       "done": len(having("done")), "failed": len(having("failed")),
                       "cancelled": len(having("cancelled"))},
            "running": having("running"), "finished": having("done"),
            "failed": having("failed"), "cancelled": having("cancelled"),
        }


class FakePlacementDriver:
    """``Node.pd``: the internal placement actions the fake answers (describe, state,
    register, drain); ``unavailable`` makes that many calls answer 503 not_leader
    first, as a node that does not lead the placement driver does."""

    def __init__(self, service: FakeMemoryService) -> None:
        self.service = service
        self.unavailable = 0

    async def handle(self, action: str, body: dict[str, Any]) -> Any:
        self.service._enter("pd.handle", action, copy.deepcopy(body))
        if action == "describe":
            return await self.service.describe()
        if action == "state":
            return {"state": (await self.service.describe())["state"]}
        if action in ("register", "drain"):
            if self.unavailable > 0:
                self.unavailable -= 1
                raise Unavailable("this node does not lead the placement driver",
                                  code="not_leader")
            if action == "drain":
                return await self.service.remove_node(str(body.get("id")))
            return await self.service.add_node(str(body.get("id")), str(body.get("api")),
                                               str(body.get("raft")))
        raise ValidationError(f"unknown placement action {action!r}", field="action")


class FakeMemoryService:
    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.memories: dict[str, dict[str, Memory]] = {}
        self.applied: dict[str, Any] = {}  # request_id -> the first result
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.now_ms = START_MS
        self.ready = True
        self.fail_with: BaseException | None = None
        self._next_id = 0
        # Placement: the PD's node registry, the groups each node holds, the executor.
        self.spec = copy.deepcopy(FAKE_SPEC)
        self.registry: dict[str, dict[str, Any]] = {
            "fake-1": {"id": "fake-1", "api": "127.0.0.1:7000", "raft": "127.0.0.1:7100",
                       "state": "up", "joined_at": START_MS}}
        self.holding: dict[str, list[int]] = {"fake-1": [0, 1]}
        self.executor = FakeExecutor()
        self.auto_rebalance = True
        self.drain_stuck = False  # a draining node's replicas never move
        self.pd = FakePlacementDriver(self)

    # ------------------------------------------------------------------ test helpers

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """A deep copy of everything stored, to compare before and after a request."""
        return copy.deepcopy(self.namespaces), copy.deepcopy(self.memories)

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error

    def _tick(self) -> int:
        self.now_ms += 1
        return self.now_ms

    def _namespace(self, ns: str) -> dict[str, Any]:
        if ns not in self.namespaces:
            raise NotFound(f"namespace {ns!r} does not exist", code="namespace_not_found")
        return self.namespaces[ns]

    def _memory(self, ns: str, memory_id: str) -> Memory:
        self._namespace(ns)
        memory = self.memories[ns].get(memory_id)
        if memory is None or (
            memory["expires_at"] is not None and memory["expires_at"] <= self.now_ms
        ):
            raise NotFound(f"memory {memory_id!r} does not exist in {ns!r}")
        return memory

    def _check_dim(self, ns: str, embedding: list[float], where: str = "embedding") -> None:
        dim = self._namespace(ns)["dim"]
        if len(embedding) != dim:
            raise ValidationError(
                f"{where} has {len(embedding)} dimensions; namespace {ns!r} has {dim}",
                code="dimension_mismatch",
                field=where,
            )

    @staticmethod
    def _show(memory: Memory, include_embedding: bool) -> Memory:
        shown = copy.deepcopy(memory)
        if not include_embedding:
            shown.pop("embedding")
        return shown

    def _expiry(self, now: int, ttl_s: float | None) -> int | None:
        return None if ttl_s is None else now + int(ttl_s * 1000)

    def _once(self, request_id: str | None, key: tuple[Any, ...]) -> Any:
        if request_id is None:
            return None
        return self.applied.get(repr((request_id, key)))

    def _remember(self, request_id: str | None, key: tuple[Any, ...], result: Any) -> Any:
        if request_id is not None:
            self.applied[repr((request_id, key))] = copy.deepcopy(result)
        return result

    # ------------------------------------------------------------------ namespaces

    async def create_namespace(self, ns: str, dim: int, metric: str) -> tuple[dict[str, Any], bool]:
        self._enter("create_namespace", ns, dim, metric)
        existing = self.namespaces.get(ns)
        if existing is not None:
            if (existing["dim"], existing["metric"]) != (dim, metric):
                raise Conflict(
                    f"namespace {ns!r} exists with dim={existing['dim']} "
                    f"metric={existing['metric']}",
                    code="namespace_conflict",
                )
            return dict(existing), False
        self.namespaces[ns] = {"name": ns, "dim": dim, "metric": metric,
                               "created_at": self._tick()}
        self.memories[ns] = {}
        return dict(self.namespaces[ns]), True

    async def get_namespace(self, ns: str) -> dict[str, Any]:
        self._enter("get_namespace", ns)
        return dict(self._namespace(ns))

    async def list_namespaces(self) -> list[dict[str, Any]]:
        self._enter("list_namespaces")
        return [dict(self.namespaces[name]) for name in sorted(self.namespaces)]

    # ------------------------------------------------------------------ writes

    def _insert(self, ns: str, item: dict[str, Any]) -> Memory:
        self._check_dim(ns, item["embedding"])
        if "id" in item:
            memory_id = item["id"]
        else:
            self._next_id += 1
            memory_id = f"m-{self._next_id:06d}"
        if memory_id in self.memories[ns]:
            raise Conflict(f"memory {memory_id!r} already exists", code="already_exists")
        now = self._tick()
        memory: Memory = {
            "id": memory_id,
            "namespace": ns,
            "agent_id": item["agent_id"],
            "text": item["text"],
            "metadata": copy.deepcopy(item.get("metadata", {})),
            "tags": list(item.get("tags", [])),
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "expires_at": self._expiry(now, item.get("ttl_s")),
            "embedding": [float(x) for x in item["embedding"]],
        }
        self.memories[ns][memory_id] = memory
        return self._show(memory, False)

    async def put_memory(self, ns: str, memory: dict[str, Any], request_id: str | None) -> Memory:
        self._enter("put_memory", ns, copy.deepcopy(memory), request_id)
        key = ("put", ns)
        if (done := self._once(request_id, key)) is not None:
            return copy.deepcopy(done)
        self._namespace(ns)
        return self._remember(request_id, key, self._insert(ns, memory))

    async def put_batch(
        self, ns: str, memories: list[dict[str, Any]], request_id: str | None
    ) -> list[dict[str, Any]]:
        self._enter("put_batch", ns, copy.deepcopy(memories), request_id)
        key = ("batch", ns)
        if (done := self._once(request_id, key)) is not None:
            return copy.deepcopy(done)
        # As the node: a wrong dimension anywhere refuses the whole batch; other
        # failures (an existing id) are per-item results.
        for i, item in enumerate(memories):
            self._check_dim(ns, item["embedding"], where=f"memories[{i}].embedding")
        results: list[dict[str, Any]] = []
        for item in memories:
            try:
                results.append({"ok": True, "memory": self._insert(ns, item)})
            except RaftmemError as exc:
                results.append({"ok": False, "error": exc.to_body()["error"]})
        return self._remember(request_id, key, results)

    async def patch_memory(
        self,
        ns: str,
        memory_id: str,
        fields: dict[str, Any],
        if_version: int | None,
        request_id: str | None,
    ) -> Memory:
        self._enter("patch_memory", ns, memory_id, copy.deepcopy(fields), if_version, request_id)
        key = ("patch", ns, memory_id)
        if (done := self._once(request_id, key)) is not None:
            return copy.deepcopy(done)
        memory = self._memory(ns, memory_id)
        if if_version is not None and if_version != memory["version"]:
            raise Conflict(
                f"memory {memory_id!r} is at version {memory['version']}, not {if_version}",
                code="version_mismatch",
                current_version=memory["version"],
            )
        if "embedding" in fields:
            self._check_dim(ns, fields["embedding"])
        now = self._tick()
        for name in ("text", "agent_id"):
            if name in fields:
                memory[name] = fields[name]
        if "metadata" in fields:
            memory["metadata"] = copy.deepcopy(fields["metadata"])
        if "tags" in fields:
            memory["tags"] = list(fields["tags"])
        if "embedding" in fields:
            memory["embedding"] = [float(x) for x in fields["embedding"]]
        if "ttl_s" in fields:
            memory["expires_at"] = self._expiry(now, fields["ttl_s"])
        memory["version"] += 1
        memory["updated_at"] = now
        return self._remember(request_id, key, self._show(memory, False))

    async def delete_memory(
        self, ns: str, memory_id: str, if_version: int | None, request_id: str | None
    ) -> None:
        self._enter("delete_memory", ns, memory_id, if_version, request_id)
        key = ("delete", ns, memory_id)
        if self._once(request_id, key) is not None:
            return
        memory = self._memory(ns, memory_id)
        if if_version is not None and if_version != memory["version"]:
            raise Conflict(
                f"memory {memory_id!r} is at version {memory['version']}, not {if_version}",
                code="version_mismatch",
                current_version=memory["version"],
            )
        del self.memories[ns][memory_id]
        self._remember(request_id, key, True)

    # ------------------------------------------------------------------ reads

    def _live(self, ns: str) -> list[Memory]:
        self._namespace(ns)
        return [
            m for _, m in sorted(self.memories[ns].items())
            if m["expires_at"] is None or m["expires_at"] > self.now_ms
        ]

    async def get_memory(
        self, ns: str, memory_id: str, opts: ReadOptions, include_embedding: bool = False
    ) -> Memory:
        self._enter("get_memory", ns, memory_id, opts, include_embedding)
        return self._show(self._memory(ns, memory_id), include_embedding)

    async def list_memories(
        self,
        ns: str,
        agent_id: str | None,
        tag: str | None,
        limit: int,
        cursor: str | None,
        opts: ReadOptions,
    ) -> tuple[list[Memory], str | None]:
        self._enter("list_memories", ns, agent_id, tag, limit, cursor, opts)
        after = ""
        if cursor is not None:
            if not cursor.startswith("after:"):
                raise ValidationError("malformed cursor", field="cursor")
            after = cursor[len("after:"):]
        matching = [
            m for m in self._live(ns)
            if m["id"] > after
            and (agent_id is None or m["agent_id"] == agent_id)
            and (tag is None or tag in m["tags"])
        ]
        page = matching[:limit]
        next_cursor = f"after:{page[-1]['id']}" if len(matching) > limit else None
        return [self._show(m, False) for m in page], next_cursor

    async def search(
        self, ns: str, embedding: list[float], k: int, flt: SearchFilter, opts: ReadOptions
    ) -> list[dict[str, Any]]:
        self._enter("search", ns, list(embedding), k, flt, opts)
        self._check_dim(ns, embedding)
        metric = self._namespace(ns)["metric"]
        if metric == "cosine" and not any(embedding):
            raise ValidationError("a zero query vector has no cosine distance", field="embedding")
        scored = []
        for memory in self._live(ns):
            if not _matches(memory, flt):
                continue
            distance, score = _distance(metric, embedding, memory["embedding"])
            scored.append((distance, memory["id"], score, memory))
        scored.sort(key=lambda row: (row[0], row[1]))
        return [
            {"memory": self._show(memory, True), "score": score, "distance": distance}
            for distance, _, score, memory in scored[:k]
        ]

    # ------------------------------------------------------------------ probes and admin

    def health(self) -> dict[str, Any]:
        self._enter("health")
        return {"status": "ok", "node_id": "fake-1"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        self._enter("readiness")
        return self.ready, {"groups": {"g1": "leader" if self.ready else "no_leader"}}

    async def cluster_state(self) -> dict[str, Any]:
        self._enter("cluster_state")
        # The node's shape, trimmed (raftmem.node.Node.cluster_state).
        return {
            "node": "fake-1", "cluster_id": "fake",
            "nodes": [{"id": "fake-1", "api": "127.0.0.1:7000", "raft": "127.0.0.1:7100"}],
            "routing": {"epoch": {"version": 1, "conf_ver": 1},
                        "ranges": [{"start": "0000000000000000", "end": "end", "group": 0}],
                        "groups": {"0": ["fake-1"]}},
            "groups": {"0": {"role": "leader", "leader": "fake-1", "term": 1,
                             "commit_index": 3, "applied_index": 3}},
        }

    async def digests(self) -> dict[str, Any]:
        return {"node": "fake-1", "groups": {"0": {"applied_index": 0,
                                                   "digest": "0" * 64}}}

    async def ranges(self) -> dict[str, Any]:
        self._enter("ranges")
        return {
            "node": "fake-1",
            "epoch": {"version": 1, "conf_ver": 1},
            "ranges": [{"start": "0000000000000000", "end": "end", "group": 0,
                        "replicas": ["fake-1"], "leader": "fake-1", "range_version": 1,
                        "group_epoch": {"version": 1, "conf_ver": 1}, "confirmed": True}],
            "routing_refreshes": 0,
        }

    async def move_range(self, start: str, end: str, to_group: int,
                         stop_after: str | None = None) -> dict[str, Any]:
        self._enter("move_range", start, end, to_group)
        steps = [{"step": "freeze", "seconds": 0.01, "group": 0},
                 {"step": "stage", "seconds": 0.02, "group": to_group, "memories": 3},
                 {"step": "release", "seconds": 0.03, "group": 0, "version": 2, "deleted": 3},
                 {"step": "activate", "seconds": 0.04, "group": to_group, "version": 2,
                  "activated": 3},
                 {"step": "done", "seconds": 0.05}]
        return {"move": f"{start}-{end}-to-{to_group}", "start": start, "end": end,
                "target": to_group, "source": 0, "version": 2, "seconds": 0.05, "steps": steps}

    # The drawn cluster the fake's planner answers for.
    VIEW = """
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1
        1     | n1 n2 n3 |          | n1
    """

    async def rebalance(self, dry_run: bool) -> dict[str, Any]:
        """Like the node: the planner's answer for a drawn cluster (dry run), or one
        executor pass (``FakeExecutor``): the plan's operators start the first time."""
        self._enter("rebalance", dry_run)
        view = planner.parse_view(self.VIEW)
        ops = planner.plan(view)
        if not dry_run:
            started = self.executor.run_pass(ops)
            return {"dry_run": False, "node": "fake-1", "started": started,
                    "balanced": self.executor.balanced, "progress": self._progress()}
        return {
            "dry_run": True, "node": "fake-1",
            "view": {"nodes": [{"id": n.id, "state": n.state} for n in view.nodes],
                     "groups": [{"group": g.id, "voters": list(g.voters),
                                 "learners": list(g.learners), "leader": g.leader,
                                 "conf_ver": g.conf_ver} for g in view.groups],
                     "replicas": view.replicas, "sources": {}},
            "operators": [{"kind": op.kind, "group": op.group, "node": op.node,
                           "target": op.target, "conf_ver": op.conf_ver, "reason": op.reason,
                           "description": op.describe()} for op in ops],
        }

    def _progress(self) -> dict[str, Any]:
        return {**self.executor.progress(), "auto_rebalance": self.auto_rebalance,
                "pd_leader": "fake-1", "live": sorted(self.registry),
                "load": {n: {"replicas": len(self.holding.get(n, [])), "leaders": 1,
                             "data_bytes": 3 * 2**20} for n in sorted(self.registry)}}

    async def operators(self) -> dict[str, Any]:
        """The executor's progress. With ``auto_rebalance`` (the node's default) every
        call stands for one pass of the PD leader's own loop: running operators advance."""
        self._enter("operators")
        if self.auto_rebalance:
            self.executor.run_pass([])
        return self._progress()

    async def add_node(self, node_id: str, api: str, raft: str) -> dict[str, Any]:
        """Like the PD's register: idempotent for the same addresses, refused otherwise."""
        self._enter("add_node", node_id, api, raft)
        known = self.registry.get(node_id)
        if known is not None and known["state"] != "removed":
            if (known["api"], known["raft"]) != (api, raft):
                raise ValidationError(f"node {node_id} is registered with other addresses",
                                      code="conflict")
            return {"ok": True, "changed": False, "node": dict(known)}
        users = [n for n in self.registry.values() if n["state"] != "removed"
                 and n["id"] != node_id and {api, raft} & {n["api"], n["raft"]}]
        if users:
            raise ValidationError(f"node {users[0]['id']} already uses one of these addresses",
                                  code="conflict")
        self.registry[node_id] = {"id": node_id, "api": api, "raft": raft, "state": "up",
                                  "joined_at": self._tick()}
        self.holding[node_id] = [0, 1]  # the PD gives it replicas
        return {"ok": True, "changed": True, "node": dict(self.registry[node_id])}

    async def remove_node(self, node_id: str) -> dict[str, Any]:
        """Like the PD's drain: the node is ``draining``; every later ``describe()``
        moves one of its replicas away (unless ``drain_stuck``), and once it holds
        none it is ``removed``."""
        self._enter("remove_node", node_id)
        known = self.registry.get(node_id)
        if known is None:
            raise ValidationError(f"node {node_id} is not registered", code="not_found")
        if known["state"] == "removed":
            raise ValidationError(f"node {node_id} was removed; register it again",
                                  code="node_removed")
        changed = known["state"] != "draining"
        known["state"] = "draining"
        return {"ok": True, "changed": changed, "node": dict(known)}

    async def describe(self) -> dict[str, Any]:
        self._enter("describe")
        groups: dict[str, dict[str, Any]] = {}
        for nid, held in sorted(self.holding.items()):
            for g in held:
                groups.setdefault(str(g), {"id": g, "voters": [], "learners": [],
                                           "conf_ver": 1})["voters"].append(nid)
        groups[str(PD_GROUP)] = {"id": PD_GROUP, "voters": ["fake-1"], "learners": [],
                                 "conf_ver": 1}
        answer = {"spec": copy.deepcopy(self.spec),
                  "state": {"applied_index": self.now_ms, "bootstrapped": True,
                            "settings": {"replicas": 1, "groups_per_node": None},
                            "nodes": copy.deepcopy(self.registry), "groups": groups}}
        # Then the executor moves on: a draining node loses a replica, or is removed.
        for nid, n in self.registry.items():
            if n["state"] == "draining" and not self.drain_stuck:
                held = self.holding.get(nid, [])
                if held:
                    held.pop()
                else:
                    n["state"] = "removed"
        return answer

    def check_internal(self, headers: Any) -> bool:
        """The node's rule: the internal header must carry the cluster secret's credential."""
        given = headers.get(INTERNAL_HEADER)
        return given is not None and hmac.compare_digest(
            str(given).encode(), internal_credential(FAKE_SECRET).encode())

    def isolate(self, peers: list[str]) -> None:
        self.isolated = sorted(set(getattr(self, "isolated", [])) | set(peers))

    def heal(self) -> None:
        self.isolated = []


def _matches(memory: Memory, flt: SearchFilter) -> bool:
    tags = set(memory["tags"])
    return (
        (flt.agent_id is None or memory["agent_id"] == flt.agent_id)
        and (not flt.tags_any or bool(tags & set(flt.tags_any)))
        and set(flt.tags_all) <= tags
        and all(memory["metadata"].get(k) == v for k, v in flt.metadata.items())
        and (flt.created_after is None or memory["created_at"] > flt.created_after)
        and (flt.created_before is None or memory["created_at"] < flt.created_before)
    )


def _distance(metric: str, a: list[float], b: list[float]) -> tuple[float, float]:
    """(distance, score): cosine distance and similarity, or L2 distance and 1/(1+d)."""
    if metric == "l2":
        distance = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
        return distance, 1.0 / (1.0 + distance)
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    similarity = sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0
    return 1.0 - similarity, similarity
