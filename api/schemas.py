"""JSON Schemas of the REST API: the one source of request validation *and* ``/openapi.json``.

Request bodies, query parameters, headers and path parameters are checked by
:mod:`api.validation` against exactly these dicts, and :mod:`api.openapi`
publishes exactly these dicts, so the document cannot drift from the checks.

Only the subset of JSON Schema that :class:`api.validation.Validator`
implements may appear here (``Validator.check_schema`` rejects anything else at
start-up), plus three ``x-`` keywords for limits JSON Schema cannot state:

* ``x-maxUtf8Bytes``  a string's length in UTF-8 bytes (``maxLength`` counts code points);
* ``x-maxJsonBytes``  a value's size serialised as compact JSON;
* ``x-maxDepth``      a value's nesting depth (a scalar is depth 0).

Response schemas (``Memory``, ``Namespace``, ...) document what the service
returns; they are not enforced on responses, but ``tests/api`` checks the fake
service's answers against them.
"""

from __future__ import annotations

from typing import Any

from raftmem.types import CONSISTENCY_TIERS, METRICS

Schema = dict[str, Any]

# Embeddings are stored as float32 (sqlite-vec): anything larger overflows to inf.
FLOAT32_MAX = 3.4028234663852886e38
MAX_DIM = 4096
MAX_TEXT_BYTES = 64 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32
MAX_TAGS = 64
MAX_BATCH = 1000
MAX_K = 1000
MAX_LIMIT = 1000
# 100 years: keeps ``now + ttl`` far inside a 64-bit millisecond timestamp.
MAX_TTL_S = 100 * 365 * 24 * 3600
# The largest integer a JSON client in JavaScript can hold exactly.
MAX_SAFE_INT = 2**53 - 1


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# --------------------------------------------------------------------------- scalars

NAMESPACE_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": "^[A-Za-z0-9_-]+$",
    "description": "Namespace name: 1..64 characters of [A-Za-z0-9_-].",
}
MEMORY_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9._:-]+$",
    "description": "Memory id: 1..128 characters of [A-Za-z0-9._:-].",
}
AGENT_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "description": "The agent that owns the memory.",
}
TEXT: Schema = {
    "type": "string",
    "maxLength": MAX_TEXT_BYTES,
    "x-maxUtf8Bytes": MAX_TEXT_BYTES,
    "description": "The memory's text, at most 64 KiB of UTF-8.",
}
EMBEDDING: Schema = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_DIM,
    "items": {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX},
    "description": "Finite numbers (float32 range); length must equal the namespace's dim.",
}
METADATA: Schema = {
    "type": "object",
    "x-maxJsonBytes": MAX_METADATA_BYTES,
    "x-maxDepth": MAX_METADATA_DEPTH,
    "description": "Any JSON object, at most 16 KiB as compact JSON and 32 levels deep.",
}
TAG: Schema = {"type": "string", "minLength": 1, "maxLength": 128}
TAGS: Schema = {
    "type": "array",
    "maxItems": MAX_TAGS,
    "items": ref("Tag"),
    "description": "At most 64 tags.",
}
TTL_S: Schema = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": MAX_TTL_S,
    "description": "Time to live in seconds (positive, at most 100 years).",
}
REQUEST_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "description": "Idempotency key: a retried write with the same request_id applies once.",
}
VERSION: Schema = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
TIMESTAMP_MS: Schema = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_SAFE_INT,
    "description": "Epoch milliseconds.",
}

# --------------------------------------------------------------------------- request bodies

NAMESPACE_DEFINITION: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["dim", "metric"],
    "properties": {
        "dim": {"type": "integer", "minimum": 1, "maximum": MAX_DIM},
        "metric": {"type": "string", "enum": list(METRICS)},
    },
}

_NEW_MEMORY_PROPERTIES: dict[str, Schema] = {
    "agent_id": ref("AgentId"),
    "text": ref("Text"),
    "embedding": ref("Embedding"),
    "id": ref("MemoryId"),
    "metadata": ref("Metadata"),
    "tags": ref("Tags"),
    "ttl_s": ref("TtlSeconds"),
}

NEW_MEMORY: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["agent_id", "text", "embedding"],
    "properties": _NEW_MEMORY_PROPERTIES,
    "description": "A memory to store. Without an id, the node assigns one.",
}

PUT_MEMORY_REQUEST: Schema = {
    **NEW_MEMORY,
    "properties": {**_NEW_MEMORY_PROPERTIES, "request_id": ref("RequestId")},
}

BATCH_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["memories"],
    "properties": {
        "memories": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH,
            "items": ref("NewMemory"),
        },
        "request_id": ref("RequestId"),
    },
    "description": "1..1000 memories; the request_id covers the whole batch.",
}

PATCHABLE_FIELDS = ("text", "embedding", "metadata", "tags", "agent_id", "ttl_s")

PATCH_MEMORY_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "text": ref("Text"),
        "embedding": ref("Embedding"),
        "metadata": ref("Metadata"),
        "tags": ref("Tags"),
        "agent_id": ref("AgentId"),
        "ttl_s": {**TTL_S, "type": ["number", "null"],
                  "description": "New time to live from now, in seconds; null removes the expiry."},
        "if_version": ref("Version"),
        "request_id": ref("RequestId"),
    },
    "anyOf": [{"required": [name]} for name in PATCHABLE_FIELDS],
    "description": "Fields to replace (metadata and tags are replaced whole, not merged).",
}

DELETE_MEMORY_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"if_version": ref("Version"), "request_id": ref("RequestId")},
}

SEARCH_FILTER: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "agent_id": ref("AgentId"),
        "tags_any": ref("Tags"),
        "tags_all": ref("Tags"),
        "metadata": {
            **ref("Metadata"),
            "description": "Equality on top-level metadata keys.",
        },
        "created_after": ref("TimestampMs"),
        "created_before": ref("TimestampMs"),
    },
}

SEARCH_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["embedding"],
    "properties": {
        "embedding": ref("Embedding"),
        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
        "filter": {**ref("SearchFilter"), "default": {}},
        "include_embedding": {"type": "boolean", "default": False},
    },
}

# --------------------------------------------------------------------------- responses

MEMORY: Schema = {
    "type": "object",
    "required": [
        "id", "namespace", "agent_id", "text", "metadata", "tags",
        "version", "created_at", "updated_at", "expires_at",
    ],
    "properties": {
        "id": ref("MemoryId"),
        "namespace": ref("NamespaceName"),
        "agent_id": {"type": "string"},
        "text": {"type": "string"},
        "metadata": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "version": {"type": "integer"},
        "created_at": {"type": "integer"},
        "updated_at": {"type": "integer"},
        "expires_at": {"type": ["integer", "null"]},
        "embedding": {
            "type": "array",
            "items": {"type": "number"},
            "description": "Only when include_embedding=true was asked for.",
        },
    },
}

NAMESPACE: Schema = {
    "type": "object",
    "required": ["dim", "metric"],
    "properties": {
        "dim": {"type": "integer"},
        "metric": {"type": "string", "enum": list(METRICS)},
    },
    "description": "A namespace's definition (the node may add fields).",
}

SEARCH_RESULT: Schema = {
    "type": "object",
    "required": ["memory", "score", "distance"],
    "properties": {
        "memory": ref("Memory"),
        "score": {"type": ["number", "null"]},
        "distance": {"type": ["number", "null"]},
    },
}

ERROR_DETAIL: Schema = {
    "type": "object",
    "required": ["code", "message", "definite"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "definite": {
            "type": "boolean",
            "description": "true: did not and will not take effect; retry freely. "
            "false: may have taken effect; retry a write only with the same request_id.",
        },
        "field": {
            "type": ["string", "null"],
            "description": "For invalid_request: the offending field, e.g. memories[3].embedding.",
        },
    },
}

BATCH_RESULT: Schema = {
    "type": "object",
    "required": ["ok"],
    "properties": {
        "ok": {"type": "boolean"},
        "memory": ref("Memory"),
        "error": ref("ErrorDetail"),
    },
}

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": ref("ErrorDetail")},
}

# --------------------------------------------------------------------------- placement (admin)

RING_POINT: Schema = {
    "type": "string",
    "pattern": "^([0-9a-f]{16}|end)$",
    "description": "A point of the 64-bit hash ring as 16 hex digits; 'end' is 2**64.",
}
EPOCH: Schema = {
    "type": "object",
    "required": ["version", "conf_ver"],
    "properties": {
        "version": {"type": "integer", "minimum": 0,
                    "description": "Bumped by a range move or split."},
        "conf_ver": {"type": "integer", "minimum": 0,
                     "description": "Bumped by a replica change."},
    },
}
RANGE_INFO: Schema = {
    "type": "object",
    "required": ["start", "end", "group", "replicas", "leader", "range_version", "group_epoch",
                 "confirmed"],
    "properties": {
        "start": ref("RingPoint"),
        "end": ref("RingPoint"),
        "group": {"type": "integer", "minimum": 0},
        "replicas": {"type": "array", "items": {"type": "string"}},
        "leader": {"type": ["string", "null"]},
        "range_version": {
            "type": ["integer", "null"],
            "description": "The version at which the group's own record says it received the "
            "range (null: this node's replica of the group does not record owning it).",
        },
        "group_epoch": {"anyOf": [ref("Epoch"), {"type": "null"}]},
        "confirmed": {
            "type": "boolean",
            "description": "The group's record (as this node's replica applied it) owns the "
            "whole range.",
        },
        "frozen": {
            "type": "boolean",
            "description": "The range is moving to another group: writes to it wait.",
        },
    },
}
RANGES: Schema = {
    "type": "object",
    "required": ["node", "epoch", "ranges", "routing_refreshes"],
    "properties": {
        "pd_table": {
            "description": "The range table the placement driver last recorded from the "
            "groups' records (the whole ring at one version; the records decide requests).",
        },
        "node": {"type": "string"},
        "epoch": ref("Epoch"),
        "ranges": {"type": "array", "items": ref("RangeInfo")},
        "routing_refreshes": {
            "type": "integer", "minimum": 0,
            "description": "Times this node rebuilt its table after an epoch_mismatch.",
        },
    },
}
OPERATOR: Schema = {
    "type": "object",
    "required": ["kind", "group", "node", "target", "conf_ver", "reason", "description"],
    "properties": {
        "kind": {"type": "string", "enum": ["add_learner", "promote_learner", "remove_replica",
                                            "transfer_leader"]},
        "group": {"type": "integer", "minimum": 0},
        "node": {"type": "string"},
        "target": {"type": ["string", "null"], "description": "transfer_leader: the new leader."},
        "conf_ver": {"type": "integer", "minimum": 0,
                     "description": "The group's conf_ver the operator was planned against."},
        "reason": {"type": "string"},
        "description": {"type": "string"},
    },
}
REBALANCE_PLAN: Schema = {
    "type": "object",
    "required": ["dry_run", "node", "view", "operators"],
    "properties": {
        "dry_run": {"type": "boolean", "enum": [True]},
        "node": {"type": "string"},
        "view": {
            "type": "object",
            "required": ["nodes", "groups", "replicas", "sources"],
            "description": "The cluster as the planner saw it from this node.",
            "properties": {
                "nodes": {"type": "array", "items": {
                    "type": "object", "required": ["id", "state"],
                    "properties": {"id": {"type": "string"}, "state": {"type": "string"}}}},
                "groups": {"type": "array", "items": {
                    "type": "object",
                    "required": ["group", "voters", "learners", "leader", "conf_ver"],
                    "properties": {
                        "group": {"type": "integer"},
                        "voters": {"type": "array", "items": {"type": "string"}},
                        "learners": {"type": "array", "items": {"type": "string"}},
                        "leader": {"type": ["string", "null"]},
                        "conf_ver": {"type": "integer"},
                    }}},
                "replicas": {"type": "integer", "minimum": 1},
                "sources": {"type": "object",
                            "description": "Where each fact of the view came from."},
            },
        },
        "operators": {"type": "array", "items": ref("Operator"),
                      "description": "In the order the planner proposes them, each with why."},
    },
}
OPERATOR_RUN: Schema = {
    "type": "object",
    "required": ["id", "kind", "group", "node", "target", "reason", "conf_ver", "status",
                 "step", "step_index", "steps", "started_at", "elapsed", "error",
                 "last_error", "attempts"],
    "description": "An operator the executor started, with where it is.",
    "properties": {
        "id": {"type": "integer", "minimum": 0,
               "description": "Unique within one placement driver leader's executor."},
        "kind": OPERATOR["properties"]["kind"],
        "group": {"type": "integer", "minimum": 0},
        "node": {"type": "string"},
        "target": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "conf_ver": {"type": "integer", "minimum": 0},
        "status": {"type": "string", "enum": ["running", "done", "failed", "cancelled"]},
        "step": {"type": "string",
                 "description": "The step whose completion is awaited (or the final status)."},
        "step_index": {"type": "integer", "minimum": 1,
                       "description": "1-based number of the step awaited (of steps); "
                       "steps once done."},
        "steps": {"type": "integer", "minimum": 0},
        "started_at": {"type": "integer", "description": "Milliseconds since the epoch."},
        "elapsed": {"type": "number", "minimum": 0, "description": "Seconds."},
        "error": {"type": ["string", "null"], "description": "Why it failed or was cancelled."},
        "last_error": {"type": ["string", "null"],
                       "description": "The latest action's error (the step is retried)."},
        "attempts": {"type": "integer", "minimum": 0},
    },
}
OPERATOR_RUNS: Schema = {"type": "array", "items": ref("OperatorRun")}
OPERATOR_LIST: Schema = {
    "type": "object",
    "required": ["executor", "balanced", "passes", "counts", "running", "finished", "failed",
                 "cancelled"],
    "description": "The placement driver leader's executor: running operators and a bounded "
    "history of finished ones.",
    "properties": {
        "executor": {"type": "string"},
        "balanced": {"type": "boolean",
                     "description": "The latest pass found nothing to do and nothing running."},
        "passes": {"type": "integer", "minimum": 0},
        "counts": {
            "type": "object",
            "required": ["running", "started", "done", "failed", "cancelled"],
            "description": "running now; the others since the executor started (on this "
            "placement driver leader).",
            "properties": {k: {"type": "integer", "minimum": 0}
                           for k in ("running", "started", "done", "failed", "cancelled")},
        },
        "running": OPERATOR_RUNS,
        "finished": OPERATOR_RUNS,
        "failed": OPERATOR_RUNS,
        "cancelled": OPERATOR_RUNS,
        "auto_rebalance": {"type": "boolean",
                           "description": "The leader runs a pass by itself twice a second."},
        "pd_leader": {"type": "string", "description": "The node that answered (PD leader)."},
        "load": {
            "type": "object",
            "description": "Per registered node: replicas (the PD's record), leaderships, and "
            "bytes of its data-group databases (its latest heartbeat; null when none is "
            "fresh).",
            "additionalProperties": {"type": "object", "properties": {
                "replicas": {"type": "integer"}, "leaders": {"type": "integer"},
                "data_bytes": {"type": ["integer", "null"]}}},
        },
        "live": {"type": "array", "items": {"type": "string"},
                 "description": "Nodes with a recent heartbeat."},
    },
}
REBALANCE_PASS: Schema = {
    "type": "object",
    "required": ["dry_run", "node", "started", "balanced", "progress"],
    "properties": {
        "dry_run": {"type": "boolean", "enum": [False]},
        "node": {"type": "string", "description": "The placement driver leader that ran it."},
        "started": {"type": "array", "items": ref("OperatorRun"),
                    "description": "Operators this pass started."},
        "balanced": {"type": "boolean", "description": "The pass found nothing to do."},
        "progress": ref("OperatorList"),
    },
}
NODE_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": "^[A-Za-z0-9_.-]+$",
    "description": "Node id: 1..64 characters of [A-Za-z0-9_.-].",
}
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
ADDRESS: Schema = {
    "type": "string",
    "minLength": 3,
    "maxLength": 261,
    "pattern": f"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:{_PORT}$",
    "description": "host:port (a host name or IPv4 address, a port 1..65535).",
}
ADD_NODE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "api", "raft"],
    "properties": {
        "id": ref("NodeId"),
        "api": {**ref("Address"), "description": "The node's HTTP API address."},
        "raft": {**ref("Address"), "description": "The node's Raft address."},
    },
}
PLACEMENT_SETTINGS: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groups_per_node"],
    "properties": {
        "groups_per_node": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000,
                            "description": "Data groups per node to aim for; null: none."},
    },
}
MOVE_RANGE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["start", "end", "to_group"],
    "properties": {
        "start": ref("RingPoint"),
        "end": ref("RingPoint"),
        "to_group": {"type": "integer", "minimum": 0,
                     "description": "The group that is to own the range."},
        "stop_after": {"type": "string", "enum": ["freeze", "stage", "release"],
                       "description": "Fault injection: end the move after this step, as "
                       "a crash of the driving node there would (asking again finishes it)."},
    },
}
MOVE_RANGE_REPORT: Schema = {
    "type": "object",
    "required": ["move", "start", "end", "target", "source", "steps"],
    "properties": {
        "move": {"type": "string", "description": "The move's id (range and target)."},
        "start": ref("RingPoint"),
        "end": ref("RingPoint"),
        "target": {"type": "integer"},
        "source": {"type": ["integer", "null"],
                   "description": "The group that owned the range (null: released already, "
                   "or the target owned it)."},
        "version": {"type": "integer", "description": "The new table version of the range."},
        "seconds": {"type": "number"},
        "steps": {"type": "array", "items": {"type": "object"}},
    },
}
REGISTERED_NODE: Schema = {
    "type": "object",
    "required": ["id", "api", "raft", "state"],
    "properties": {
        "id": ref("NodeId"),
        "api": {"type": "string"},
        "raft": {"type": "string"},
        "state": {"type": "string", "enum": ["up", "draining", "removed"]},
        "joined_at": {"type": ["integer", "null"], "description": "Milliseconds since the epoch."},
        "groups": {"type": "array", "items": {"type": "integer", "minimum": 0},
                   "description": "GET /admin/nodes: the groups that name it as a voter or "
                   "learner (65000 is the placement driver's own)."},
    },
}
NODE_CHANGE: Schema = {
    "type": "object",
    "required": ["ok", "changed", "node"],
    "properties": {
        "ok": {"type": "boolean", "enum": [True]},
        "changed": {"type": "boolean",
                    "description": "false: it already was so (the request is idempotent)."},
        "node": ref("RegisteredNode"),
    },
}

COMPONENTS: dict[str, Schema] = {
    "NamespaceName": NAMESPACE_NAME,
    "MemoryId": MEMORY_ID,
    "AgentId": AGENT_ID,
    "Text": TEXT,
    "Embedding": EMBEDDING,
    "Metadata": METADATA,
    "Tag": TAG,
    "Tags": TAGS,
    "TtlSeconds": TTL_S,
    "RequestId": REQUEST_ID,
    "Version": VERSION,
    "TimestampMs": TIMESTAMP_MS,
    "NamespaceDefinition": NAMESPACE_DEFINITION,
    "NewMemory": NEW_MEMORY,
    "PutMemoryRequest": PUT_MEMORY_REQUEST,
    "BatchRequest": BATCH_REQUEST,
    "PatchMemoryRequest": PATCH_MEMORY_REQUEST,
    "DeleteMemoryRequest": DELETE_MEMORY_REQUEST,
    "SearchFilter": SEARCH_FILTER,
    "SearchRequest": SEARCH_REQUEST,
    "Memory": MEMORY,
    "Namespace": NAMESPACE,
    "SearchResult": SEARCH_RESULT,
    "BatchResult": BATCH_RESULT,
    "ErrorDetail": ERROR_DETAIL,
    "Error": ERROR,
    "RingPoint": RING_POINT,
    "Epoch": EPOCH,
    "RangeInfo": RANGE_INFO,
    "Ranges": RANGES,
    "Operator": OPERATOR,
    "RebalancePlan": REBALANCE_PLAN,
    "OperatorRun": OPERATOR_RUN,
    "OperatorList": OPERATOR_LIST,
    "RebalancePass": REBALANCE_PASS,
    "NodeId": NODE_ID,
    "Address": ADDRESS,
    "AddNodeRequest": ADD_NODE_REQUEST,
    "MoveRangeRequest": MOVE_RANGE_REQUEST,
    "PlacementSettings": PLACEMENT_SETTINGS,
    "MoveRangeReport": MOVE_RANGE_REPORT,
    "RegisteredNode": REGISTERED_NODE,
    "NodeChange": NODE_CHANGE,
}

# --------------------------------------------------------------------------- parameters

CONSISTENCY: Schema = {"type": "string", "enum": list(CONSISTENCY_TIERS)}
SESSION_TOKEN: Schema = {"type": "string", "minLength": 1, "maxLength": 4096}
MAX_STALENESS_MS: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INT}
LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}
CURSOR: Schema = {"type": "string", "minLength": 1, "maxLength": 1024}
BOOLEAN_FALSE: Schema = {"type": "boolean", "default": False}
