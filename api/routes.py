"""The route table: every operation of the REST API, as data.

``api.app`` registers exactly these, and ``/openapi.json`` is built from exactly
``OPERATIONS``; ``tests/api/test_openapi.py`` checks the router and the document
agree. ``INTERNAL_OPERATIONS`` (node-to-node, below) are registered too but are
no part of the agent API and left out of the document on purpose.
"""

from __future__ import annotations

import functools
from typing import Any

from api import handlers, openapi
from api import schemas as s
from api.operation import Call, Operation, Param, Reply, Response

NS = Param("ns", "path", s.ref("NamespaceName"), required=True, description="Namespace name.")
MEMORY_ID = Param("id", "path", s.ref("MemoryId"), required=True, description="Memory id.")

CONSISTENCY_PARAMS = (
    Param(
        "consistency",
        "query",
        s.CONSISTENCY,
        description="Read tier (default linearizable). Same as the Raftmem-Consistency header.",
    ),
    Param(
        "max_staleness_ms",
        "query",
        s.MAX_STALENESS_MS,
        description="With consistency=eventual: the oldest state the client accepts.",
    ),
    Param(handlers.CONSISTENCY_HEADER, "header", s.CONSISTENCY, description="Read tier."),
    Param(
        handlers.SESSION_HEADER,
        "header",
        s.SESSION_TOKEN,
        description="Session token, for consistency=session (read-your-writes).",
    ),
)

INCLUDE_EMBEDDING = Param(
    "include_embedding", "query", s.BOOLEAN_FALSE, description="Return the embedding too."
)

MEMORY = Response("The memory.", s.ref("Memory"))


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": required or list(properties), "properties": properties}


@functools.cache
def document() -> dict[str, Any]:
    return openapi.build(OPERATIONS)


async def _openapi(call: Call) -> Reply:
    return Reply(200, document())


OPERATIONS: tuple[Operation, ...] = (
    # ------------------------------------------------------------------ probes and docs
    Operation(
        "GET", "/healthz", "healthz", "Liveness: the process answers.",
        handlers.healthz, tag="probes",
        responses={200: Response("Health details from the node.", {"type": "object"})},
    ),
    Operation(
        "GET", "/readyz", "readyz", "Readiness: the node can serve requests.",
        handlers.readyz, tag="probes",
        responses={
            200: Response("Ready.", _object({"ready": {"type": "boolean"},
                                             "detail": {"type": "object"}})),
            503: Response("Not ready.", _object({"ready": {"type": "boolean"},
                                                 "detail": {"type": "object"}})),
        },
    ),
    Operation(
        "GET", "/openapi.json", "openapi", "This document.", _openapi, tag="probes",
        responses={200: Response("The OpenAPI 3.1 document.", {"type": "object"})},
    ),
    # ------------------------------------------------------------------ namespaces
    Operation(
        "GET", "/v1/namespaces", "listNamespaces", "List namespaces.",
        handlers.list_namespaces, tag="namespaces",
        responses={200: Response("All namespaces.", _object(
            {"namespaces": {"type": "array", "items": s.ref("Namespace")}}))},
        errors=(503,),
    ),
    Operation(
        "PUT", "/v1/namespaces/{ns}", "putNamespace",
        "Create a namespace with a fixed dimension and metric (idempotent).",
        handlers.put_namespace, tag="namespaces",
        params=(NS,), body=s.ref("NamespaceDefinition"),
        responses={
            201: Response("Created.", s.ref("Namespace")),
            200: Response("Already existed with the same definition.", s.ref("Namespace")),
        },
        errors=(409, 503, 504),
        description="409 conflict if the namespace exists with another dim or metric.",
    ),
    Operation(
        "GET", "/v1/namespaces/{ns}", "getNamespace", "Get a namespace's definition.",
        handlers.get_namespace, tag="namespaces",
        params=(NS,),
        responses={200: Response("The namespace.", s.ref("Namespace"))},
        errors=(404, 503),
    ),
    # ------------------------------------------------------------------ memories
    Operation(
        "GET", "/v1/namespaces/{ns}/memories", "listMemories",
        "List memories ordered by id, optionally by agent or tag, a page at a time.",
        handlers.list_memories, tag="memories",
        params=(
            NS,
            Param("agent_id", "query", s.ref("AgentId"), description="Only this agent's."),
            Param("tag", "query", s.ref("Tag"), description="Only memories with this tag."),
            Param("limit", "query", s.LIMIT, description="Page size, 1..1000."),
            Param("cursor", "query", s.CURSOR, description="next_cursor of the previous page."),
            *CONSISTENCY_PARAMS,
        ),
        responses={200: Response("A page of memories (without embeddings).", _object({
            "memories": {"type": "array", "items": s.ref("Memory")},
            "next_cursor": {"type": ["string", "null"]},
        }))},
        errors=(404, 503),
    ),
    Operation(
        "POST", "/v1/namespaces/{ns}/memories", "putMemory", "Store a memory.",
        handlers.put_memory, tag="memories",
        params=(NS,), body=s.ref("PutMemoryRequest"),
        responses={201: Response("Stored (without the embedding).", s.ref("Memory"))},
        errors=(404, 409, 503, 504),
        description="400 dimension_mismatch when the embedding's length is not the "
        "namespace's dim; 409 when the id exists.",
    ),
    Operation(
        "POST", "/v1/namespaces/{ns}/memories/batch", "putBatch",
        "Store up to 1000 memories; one result per item, in order.",
        handlers.put_batch, tag="memories",
        params=(NS,), body=s.ref("BatchRequest"),
        responses={200: Response("Per-item results.", _object(
            {"results": {"type": "array", "items": s.ref("BatchResult")}}))},
        errors=(404, 503, 504),
        description="Every item is validated first; one malformed item fails the whole "
        "request with 400 (field names the item index) and nothing is written.",
    ),
    Operation(
        "GET", "/v1/namespaces/{ns}/memories/{id}", "getMemory", "Read a memory.",
        handlers.get_memory, tag="memories",
        params=(NS, MEMORY_ID, INCLUDE_EMBEDDING, *CONSISTENCY_PARAMS),
        responses={200: MEMORY},
        errors=(404, 503),
    ),
    Operation(
        "PATCH", "/v1/namespaces/{ns}/memories/{id}", "patchMemory",
        "Replace some fields of a memory, optionally only at a given version.",
        handlers.patch_memory, tag="memories",
        params=(NS, MEMORY_ID), body=s.ref("PatchMemoryRequest"),
        responses={200: Response("The updated memory (without the embedding).",
                                 s.ref("Memory"))},
        errors=(404, 409, 503, 504),
        description="409 version_mismatch when if_version is not the current version.",
    ),
    Operation(
        "DELETE", "/v1/namespaces/{ns}/memories/{id}", "deleteMemory",
        "Delete a memory, optionally only at a given version.",
        handlers.delete_memory, tag="memories",
        params=(
            NS,
            MEMORY_ID,
            Param("if_version", "query", s.ref("Version"),
                  description="Delete only at this version (or in the body)."),
            Param("request_id", "query", s.ref("RequestId"),
                  description="Idempotency key (or in the body)."),
        ),
        body=s.ref("DeleteMemoryRequest"), body_required=False,
        responses={200: Response("Deleted.", _object({
            "deleted": {"type": "boolean", "enum": [True]},
            "namespace": s.ref("NamespaceName"),
            "id": s.ref("MemoryId"),
        }))},
        errors=(404, 409, 503, 504),
    ),
    Operation(
        "POST", "/v1/namespaces/{ns}/search", "search",
        "Exact top-k nearest memories to an embedding, with filters.",
        handlers.search, tag="memories",
        params=(NS, *CONSISTENCY_PARAMS), body=s.ref("SearchRequest"),
        responses={200: Response("Best first.", _object(
            {"results": {"type": "array", "items": s.ref("SearchResult")}}))},
        errors=(404, 503),
    ),
    # ------------------------------------------------------------------ admin
    Operation(
        "GET", "/admin/cluster", "clusterState", "Cluster state: nodes, groups, ranges.",
        handlers.cluster_state, tag="admin",
        responses={200: Response("The cluster state.", {"type": "object"})},
        errors=(503,),
    ),
    Operation(
        "GET", "/admin/digests", "groupDigests",
        "A content digest and the applied index of each group replica on this node.",
        handlers.group_digests, tag="admin",
        responses={200: Response("Digests per local group replica.", {"type": "object"})},
        description="Replicas of a group that have applied the same index hold the same "
        "digest; jepsen_like uses it to check that every replica converges after faults.",
    ),
    Operation(
        "GET", "/admin/ranges", "listRanges",
        "Every range of this node's routing table: owning group, replicas, leader, epochs.",
        handlers.list_ranges, tag="admin",
        responses={200: Response("The ranges, in ring order.", s.ref("Ranges"))},
        errors=(503,),
        description="epoch is this node's routing table's; range_version and group_epoch come "
        "from the owning group's own record as this node's replica has applied it.",
    ),
    Operation(
        "POST", "/admin/ranges/move", "moveRange",
        "Move a range of the ring to another group (or finish such a move).",
        handlers.move_range, tag="admin",
        body=s.ref("MoveRangeRequest"),
        responses={200: Response("What the move did, step by step.", s.ref("MoveRangeReport"))},
        errors=(400, 409, 503, 504),
        description="The range must lie within one range of its owning group. Writes to it "
        "wait while it is frozen and copied; between the old group's release and the new "
        "group's activation (two commits) no group serves it, and requests are routed "
        "again. Every step is idempotent: after a failure, the same request finishes the "
        "move. One move at a time.",
    ),
    Operation(
        "PUT", "/admin/placement", "setPlacement",
        "Set the placement driver's data groups per node target (null: none).",
        handlers.set_placement, tag="admin",
        body=s.ref("PlacementSettings"),
        responses={200: Response("The target now in force.", s.ref("PlacementSettings"))},
        errors=(400, 503),
        description="With a target, the placement driver creates data groups (on the "
        "least-loaded nodes) until there are ceil(target x nodes / replicas), and moves "
        "ranges of the ring to a group that owns less than half its share (half of the "
        "widest range of the group that owns the most, one move at a time). Without one, "
        "groups are those the cluster was created with and ranges move only when asked "
        "(POST /admin/ranges/move).",
    ),
    Operation(
        "POST", "/admin/rebalance", "rebalance",
        "Run one placement pass now (operators started), or with dry_run only show the plan.",
        handlers.rebalance, tag="admin",
        params=(Param("dry_run", "query", s.BOOLEAN_FALSE,
                      description="true: only show the plan and why; nothing changes."),),
        responses={200: Response(
            "dry_run=true: the plan (RebalancePlan); otherwise the pass (RebalancePass).",
            {"anyOf": [s.ref("RebalancePlan"), s.ref("RebalancePass")]})},
        errors=(503,),
        description="Answered by the placement driver's leader (forwarded there). Without "
        "dry_run one executor pass runs: running operators advance by a step and new ones "
        "start for idle groups; the answer lists those started and the executor's progress. "
        "The operators then advance by later passes (twice a second while automatic "
        "rebalancing is on); follow them with GET /admin/operators.",
    ),
    Operation(
        "GET", "/admin/operators", "listOperators",
        "The placement executor's operators: running ones, and recently finished, failed "
        "or cancelled ones with their errors.",
        handlers.list_operators, tag="admin",
        responses={200: Response("The executor's progress.", s.ref("OperatorList"))},
        errors=(503,),
        description="Answered by the placement driver's leader (forwarded there). Each "
        "operator shows its current step (step_index of steps) and elapsed time.",
    ),
    Operation(
        "GET", "/admin/nodes", "listNodes",
        "The placement driver's node registry: every node with its addresses and state.",
        handlers.list_nodes, tag="admin",
        responses={200: Response("The registry, by id.", _object({
            "nodes": {"type": "array", "items": s.ref("RegisteredNode")}}))},
        description="As the answering node last received it from the placement driver "
        "(within about a second). A node being removed is draining until it holds no "
        "replica, then removed.",
    ),
    Operation(
        "POST", "/admin/nodes", "addNode",
        "Register a node; the placement driver then gives it replicas.",
        handlers.add_node, tag="admin",
        body=s.ref("AddNodeRequest"),
        responses={200: Response("Registered (changed: false when it already was, with "
                                 "these addresses).", s.ref("NodeChange"))},
        errors=(503, 504),
        description="The node process itself is started with raftmem node --join, which "
        "registers it too. 400 conflict: the id is registered with other addresses, or "
        "another node uses one of these addresses.",
    ),
    Operation(
        "DELETE", "/admin/nodes/{id}", "removeNode",
        "Drain a node: its replicas move elsewhere, then it leaves the registry.",
        handlers.remove_node, tag="admin",
        params=(Param("id", "path", s.ref("NodeId"), required=True, description="Node id."),),
        responses={200: Response("Now draining (changed: false when it already was).",
                                 s.ref("NodeChange"))},
        errors=(503, 504),
        description="Answers at once; the executor then moves the node's replicas (leadership "
        "first) and removes it from the registry once it holds none (GET /admin/nodes shows "
        "its state). 400 not_found: no such node.",
    ),
    Operation(
        "POST", "/admin/faults/isolate", "isolatePeers",
        "Fault injection: behave as if the Raft links to these nodes were cut.",
        handlers.isolate_peers, tag="admin",
        body={"type": "object", "additionalProperties": False, "required": ["peers"],
              "properties": {"peers": {"type": "array", "maxItems": 64,
                                       "items": {"type": "string", "minLength": 1,
                                                 "maxLength": 64}}}},
        responses={200: Response("The faults now in force.", {"type": "object"})},
        description="For fault-injection tests (jepsen_like's partition nemesis when iptables "
        "is not available). Only this node's side is cut; isolate both sides for a symmetric "
        "partition. Undone by /admin/faults/heal.",
    ),
    Operation(
        "POST", "/admin/faults/heal", "healPeers", "Undo every /admin/faults/isolate.",
        handlers.heal_peers, tag="admin", body_required=False,
        responses={200: Response("The faults now in force (none).", {"type": "object"})},
    ),
)


# ---------------------------------------------------------------------------- internal
# Node-to-node only: a node forwards requests for a shard group it does not host
# to a node that does (raftmem.node), and the placement driver's actions reach
# the nodes concerned (raftmem.pd). Not the agent API, so not in /openapi.json.
# api.app registers them with their own dispatcher: refused with 403 forbidden
# unless the request carries the cluster's internal credential (the service
# checks it: Node.check_internal), body bounded by the same size limit, passed
# to the handler as raw bytes (the service parses it).

GROUP = Param("group", "path", {"type": "integer", "minimum": 0, "maximum": 1_000_000},
              required=True, description="Shard group id.")

PLACEMENT_ACTION = Param("action", "path", {"type": "string", "minLength": 1, "maxLength": 32,
                                             "pattern": "^[a-z_]+$"},
                         required=True, description="The placement action.")

INTERNAL_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", "/internal/placement/{action}", "internalPlacement",
        "A placement action (heartbeat, state, describe, register, drain, create_replica, ...).",
        handlers.internal_placement, tag="internal",
        params=(PLACEMENT_ACTION,),
        responses={200: Response("The placement driver's answer.", {"type": "object"})},
        errors=(503,),
        description="Body: a JSON object, the action's arguments; passed to the node's "
        "placement driver (raftmem.pd.PlacementDriver.handle). 403 without the internal "
        "credential; 400 when the body is not a JSON object; 503 not_leader for an action "
        "only the placement driver's leader answers.",
    ),
    Operation(
        "POST", "/internal/groups/{group}/propose", "internalPropose",
        "Propose an encoded command (raftmem.commands.encode) through this node's replica.",
        handlers.internal_propose, tag="internal",
        params=(GROUP, Param("timeout_ms", "query",
                             {"type": "integer", "minimum": 1, "maximum": 600_000},
                             description="How long to keep trying (default: write timeout).")),
        responses={200: Response("The state machine's result.", {"type": "object"})},
        errors=(503, 504),
        description="The body is the command payload's bytes. 403 without the internal "
        "credential; 503 (definite) when this node hosts no replica of the group or no commit "
        "could be had; 504 when it may have applied.",
    ),
    Operation(
        "POST", "/internal/groups/{group}/read", "internalRead",
        "Serve a read spec on this node's replica at a consistency tier.",
        handlers.internal_read, tag="internal",
        params=(GROUP,),
        responses={200: Response("The result and the read's metadata.", {"type": "object"})},
        errors=(503,),
        description="Body: JSON {spec, tier, need, max_staleness_ms}; answer: {result, "
        "applied_index, replica, staleness_ms, lag, tier}. 403 without the internal credential.",
    ),
)
