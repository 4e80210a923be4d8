"""Builds the OpenAPI 3.1 document from the route table and :mod:`api.schemas`. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api import schemas
from api.operation import Operation

# Statuses any operation may answer with an error body, and what each means here.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "invalid_request (or dimension_mismatch): nothing was changed."),
    401: ("Unauthorized", "unauthorized: missing or wrong admin bearer token."),
    404: ("NotFound", "not_found / namespace_not_found."),
    405: ("MethodNotAllowed", "method_not_allowed: the path exists, the method does not."),
    409: ("Conflict", "version_mismatch, already_exists or namespace_conflict."),
    413: ("PayloadTooLarge", "payload_too_large: the body exceeds the server's limit."),
    500: ("Internal", "internal: a bug (definite false); the node logged it."),
    501: ("NotImplemented", "not_implemented: the feature is not built yet; nothing was done."),
    503: ("Unavailable", "unavailable / epoch_mismatch: no leader, overloaded, too stale."),
    504: ("CommitTimeout", "commit_timeout (definite false): the write may have applied."),
}

DESCRIPTION = """\
A Raft-replicated, strongly consistent memory store for fleets of AI agents.

Every error has the body `{"error": {"code", "message", "definite", ...}}`.
`definite: true` means the request did not and will not take effect (retry
freely); `definite: false` means it may have (retry a write only with the same
`request_id`). Request bodies are JSON objects; unknown fields are refused,
NaN and Infinity are not JSON, and numbers must be finite.
"""


def _error_statuses(op: Operation) -> list[int]:
    statuses = set(op.errors) | {500}
    if op.params or op.body is not None:
        statuses.add(400)
    if op.body is not None:
        statuses.add(413)
    if op.admin:
        statuses.add(401)
    return sorted(statuses)


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        doc["description"] = op.description
    if op.params:
        doc["parameters"] = [
            {
                "name": p.name,
                "in": p.location,
                "required": p.required or p.location == "path",
                "schema": p.schema,
                **({"description": p.description} if p.description else {}),
            }
            for p in op.params
        ]
    if op.body is not None:
        doc["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": op.body}},
        }
    responses: dict[str, Any] = {}
    for status, response in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": response.description}
        if response.schema is not None:
            entry["content"] = {"application/json": {"schema": response.schema}}
        responses[str(status)] = entry
    for status in _error_statuses(op):
        responses.setdefault(
            str(status), {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
        )
    doc["responses"] = responses
    if op.admin:
        doc["security"] = [{"adminBearer": []}]
    return doc


def build(operations: Iterable[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "raftmem", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": schemas.COMPONENTS,
            "responses": {
                name: {
                    "description": description,
                    "content": {"application/json": {"schema": schemas.ref("Error")}},
                }
                for name, description in ERROR_RESPONSES.values()
            },
            "securitySchemes": {
                "adminBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on /admin/ routes when the node has an admin token.",
                }
            },
        },
    }
