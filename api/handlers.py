"""Thin handlers: a validated :class:`Call` in, one service call, a :class:`Reply` out.

Nothing here validates or catches: the dispatcher in :mod:`api.app` has
already checked every input against :mod:`api.schemas`, and the error
middleware turns whatever the service raises into the HTTP error body. (The
internal routes get raw bytes; the placement one parses its JSON object here.)
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from api.operation import Call, Reply
from api.validation import invalid, parse_json
from raftmem.errors import ValidationError
from raftmem.types import Memory, ReadOptions, SearchFilter

CONSISTENCY_HEADER = "Raftmem-Consistency"
SESSION_HEADER = "Raftmem-Session"


def read_options(call: Call) -> ReadOptions:
    """The read tier: query ``consistency`` or header ``Raftmem-Consistency`` (not two different
    values), the ``Raftmem-Session`` token, and ``max_staleness_ms`` (only with ``eventual``)."""
    from_query = call.query.get("consistency")
    from_header = call.headers.get(CONSISTENCY_HEADER)
    if from_query is not None and from_header is not None and from_query != from_header:
        raise ValidationError(
            f"consistency={from_query} contradicts {CONSISTENCY_HEADER}: {from_header}",
            field="consistency",
        )
    tier = from_query or from_header
    staleness = call.query.get("max_staleness_ms")
    if staleness is not None and tier != "eventual":
        raise ValidationError(
            "max_staleness_ms applies only to consistency=eventual", field="max_staleness_ms"
        )
    session = call.headers.get(SESSION_HEADER)
    if tier is None:
        return ReadOptions(session=session)
    return ReadOptions(consistency=tier, session=session, max_staleness_ms=staleness)


def public(memory: Memory, include_embedding: bool = False) -> Memory:
    """A memory as the API shows it: the embedding only when it was asked for."""
    if include_embedding or "embedding" not in memory:
        return memory
    return {key: value for key, value in memory.items() if key != "embedding"}


def _floats(embedding: list[float]) -> list[float]:
    return [float(x) for x in embedding]


def _new_memory(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "embedding": _floats(item["embedding"])}


def _memory_url(ns: str, memory: Memory) -> dict[str, str]:
    memory_id = memory.get("id")
    return {"Location": f"/v1/namespaces/{ns}/memories/{memory_id}"} if memory_id else {}


def _same(name: str, first: Any, second: Any) -> Any:
    if first is not None and second is not None and first != second:
        raise ValidationError(f"{name} given in the query and the body with different values",
                              field=name)
    return first if first is not None else second


# --------------------------------------------------------------------------- probes and docs


async def healthz(call: Call) -> Reply:
    return Reply(200, call.service.health())


async def readyz(call: Call) -> Reply:
    ready, detail = call.service.readiness()
    return Reply(200 if ready else 503, {"ready": ready, "detail": detail})


# --------------------------------------------------------------------------- namespaces


async def put_namespace(call: Call) -> Reply:
    ns = call.path["ns"]
    namespace, created = await call.service.create_namespace(
        ns, call.body["dim"], call.body["metric"]
    )
    if created:
        return Reply(201, namespace, {"Location": f"/v1/namespaces/{ns}"})
    return Reply(200, namespace)


async def get_namespace(call: Call) -> Reply:
    return Reply(200, await call.service.get_namespace(call.path["ns"]))


async def list_namespaces(call: Call) -> Reply:
    return Reply(200, {"namespaces": await call.service.list_namespaces()})


# --------------------------------------------------------------------------- memories


async def put_memory(call: Call) -> Reply:
    ns = call.path["ns"]
    item = dict(call.body)
    request_id = item.pop("request_id", None)
    memory = await call.service.put_memory(ns, _new_memory(item), request_id)
    return Reply(201, public(memory), _memory_url(ns, memory))


async def put_batch(call: Call) -> Reply:
    items = [_new_memory(item) for item in call.body["memories"]]
    results = await call.service.put_batch(call.path["ns"], items, call.body.get("request_id"))
    shown = [
        {**result, "memory": public(result["memory"])} if "memory" in result else result
        for result in results
    ]
    return Reply(200, {"results": shown})


async def get_memory(call: Call) -> Reply:
    memory = await call.service.get_memory(
        call.path["ns"],
        call.path["id"],
        read_options(call),
        include_embedding=call.query["include_embedding"],
    )
    return Reply(200, public(memory, call.query["include_embedding"]))


async def patch_memory(call: Call) -> Reply:
    fields = dict(call.body)
    if_version = fields.pop("if_version", None)
    request_id = fields.pop("request_id", None)
    if "embedding" in fields:
        fields["embedding"] = _floats(fields["embedding"])
    memory = await call.service.patch_memory(
        call.path["ns"], call.path["id"], fields, if_version, request_id
    )
    return Reply(200, public(memory))


async def delete_memory(call: Call) -> Reply:
    body = call.body or {}
    if_version = _same("if_version", call.query.get("if_version"), body.get("if_version"))
    request_id = _same("request_id", call.query.get("request_id"), body.get("request_id"))
    ns, memory_id = call.path["ns"], call.path["id"]
    await call.service.delete_memory(ns, memory_id, if_version, request_id)
    return Reply(200, {"deleted": True, "namespace": ns, "id": memory_id})


async def list_memories(call: Call) -> Reply:
    memories, next_cursor = await call.service.list_memories(
        call.path["ns"],
        call.query.get("agent_id"),
        call.query.get("tag"),
        call.query["limit"],
        call.query.get("cursor"),
        read_options(call),
    )
    return Reply(200, {"memories": [public(m) for m in memories], "next_cursor": next_cursor})


async def search(call: Call) -> Reply:
    body = call.body
    where = body["filter"]
    flt = SearchFilter(
        agent_id=where.get("agent_id"),
        tags_any=tuple(where.get("tags_any", ())),
        tags_all=tuple(where.get("tags_all", ())),
        metadata=where.get("metadata", {}),
        created_after=where.get("created_after"),
        created_before=where.get("created_before"),
    )
    results = await call.service.search(
        call.path["ns"], _floats(body["embedding"]), body["k"], flt, read_options(call)
    )
    include = body["include_embedding"]
    return Reply(
        200, {"results": [{**r, "memory": public(r["memory"], include)} for r in results]}
    )


# --------------------------------------------------------------------------- admin


async def cluster_state(call: Call) -> Reply:
    return Reply(200, await call.service.cluster_state())


async def isolate_peers(call: Call) -> Reply:
    call.service.isolate(list(call.body["peers"]))
    return Reply(200, {"isolated": sorted(call.body["peers"])})


async def heal_peers(call: Call) -> Reply:
    call.service.heal()
    return Reply(200, {"isolated": []})


async def group_digests(call: Call) -> Reply:
    return Reply(200, await call.service.digests())


async def list_ranges(call: Call) -> Reply:
    return Reply(200, await call.service.ranges())


class RangeService(Protocol):
    async def move_range(self, start: str, end: str, to_group: int,
                         stop_after: str | None = None) -> dict[str, Any]:
        ...


async def move_range(call: Call) -> Reply:
    body = call.body
    service = cast(RangeService, call.service)
    return Reply(200, await service.move_range(body["start"], body["end"], body["to_group"],
                                               body.get("stop_after")))


class PlacementService(Protocol):
    """What the placement admin routes need from the service (``raftmem.node.Node``);
    every call is answered by the placement driver's leader."""

    async def rebalance(self, dry_run: bool) -> dict[str, Any]:
        ...

    async def operators(self) -> dict[str, Any]:
        ...

    async def add_node(self, node_id: str, api: str, raft: str) -> dict[str, Any]:
        ...

    async def remove_node(self, node_id: str) -> dict[str, Any]:
        ...

    async def describe(self) -> dict[str, Any]:
        ...


def _placement(call: Call) -> PlacementService:
    return cast(PlacementService, call.service)


async def set_placement(call: Call) -> Reply:
    service = cast(Any, call.service)
    return Reply(200, await service.set_groups_per_node(call.body["groups_per_node"]))


async def rebalance(call: Call) -> Reply:
    return Reply(200, await _placement(call).rebalance(call.query["dry_run"]))


async def list_operators(call: Call) -> Reply:
    return Reply(200, await _placement(call).operators())


async def list_nodes(call: Call) -> Reply:
    state = (await _placement(call).describe()).get("state") or {}
    nodes = state.get("nodes") or {}
    holding: dict[str, list[int]] = {}
    for gid, g in sorted((state.get("groups") or {}).items(), key=lambda kv: int(kv[0])):
        for n in (*g.get("voters", ()), *g.get("learners", ())):
            holding.setdefault(n, []).append(int(gid))
    return Reply(200, {"nodes": [{**nodes[k], "groups": holding.get(k, [])}
                                 for k in sorted(nodes)]})


async def add_node(call: Call) -> Reply:
    body = call.body
    return Reply(200, await _placement(call).add_node(body["id"], body["api"], body["raft"]))


async def remove_node(call: Call) -> Reply:
    return Reply(200, await _placement(call).remove_node(call.path["id"]))


# --------------------------------------------------------------------------- internal


class InternalService(Protocol):
    """What the node-to-node endpoints need from the service (``raftmem.node.Node``)."""

    def check_internal(self, headers: Any) -> bool:
        ...

    async def internal_propose(self, group: int, payload: bytes,
                               timeout_ms: int | None) -> dict[str, Any]:
        ...

    async def internal_read(self, group: int, body: bytes) -> dict[str, Any]:
        ...

    @property
    def pd(self) -> PlacementActions:
        ...


class PlacementActions(Protocol):
    """The node's placement driver (``raftmem.pd.PlacementDriver``)."""

    async def handle(self, action: str, body: dict[str, Any]) -> Any:
        ...


async def internal_propose(call: Call) -> Reply:
    service = cast(InternalService, call.service)
    return Reply(200, await service.internal_propose(
        call.path["group"], call.body, call.query.get("timeout_ms")))


async def internal_read(call: Call) -> Reply:
    service = cast(InternalService, call.service)
    return Reply(200, await service.internal_read(call.path["group"], call.body))


async def internal_placement(call: Call) -> Reply:
    body = parse_json(call.body)
    if not isinstance(body, dict):
        raise invalid("", "the body must be a JSON object")
    service = cast(InternalService, call.service)
    return Reply(200, await service.pd.handle(call.path["action"], body))
