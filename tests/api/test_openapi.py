"""The OpenAPI document and the app agree: same routes, same schemas, real answers fit them."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from api import create_app, schemas
from api.routes import INTERNAL_OPERATIONS, OPERATIONS, document
from api.validation import REF_PREFIX, Validator
from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import item, seeded, send

HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def routed(app: web.Application) -> set[tuple[str, str]]:
    pairs = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path is not None
        pairs.add((route.method.lower(), path))
    return pairs


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item_ in doc["paths"].items()
        for method in item_
        if method in HTTP_METHODS
    }


def internal_routes() -> set[tuple[str, str]]:
    return {(op.method.lower(), op.path) for op in INTERNAL_OPERATIONS}


def test_every_route_is_documented_and_every_documented_path_is_routed() -> None:
    app = create_app(FakeMemoryService())
    # The node-to-node routes are excluded on purpose: they are no part of the agent
    # API (403 without the cluster's internal credential), so the public document
    # does not describe them.
    internal = internal_routes()
    assert internal and internal <= routed(app)
    assert routed(app) - internal == documented(document())


def test_internal_routes_are_not_in_the_public_document() -> None:
    doc = document()
    assert not internal_routes() & documented(doc)
    assert not any(path.startswith("/internal/") for path in doc["paths"])
    assert all(op.path.startswith("/internal/") for op in INTERNAL_OPERATIONS)


def test_the_served_document_is_the_built_one() -> None:
    assert document()["paths"].keys() == {op.path for op in OPERATIONS}


async def test_openapi_json_endpoint_matches(fake: FakeMemoryService) -> None:
    async with serve(fake) as client:
        status, body = await send(client, "GET", "/openapi.json")
    assert status == 200
    assert documented(body) == documented(document())


def test_document_structure() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]
    operation_ids = [
        op["operationId"] for path in doc["paths"].values() for op in path.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))
    for path, path_item in doc["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for method, op in path_item.items():
            params = op.get("parameters", [])
            in_path = {p["name"] for p in params if p["in"] == "path"}
            assert in_path == templated, (method, path)
            assert all(p["required"] for p in params if p["in"] == "path")
            assert len({(p["name"], p["in"]) for p in params}) == len(params)
            assert op["responses"], (method, path)
            assert "500" in op["responses"]
            if "requestBody" in op:
                assert "400" in op["responses"] and "413" in op["responses"]
            if path.startswith("/admin/"):
                assert op["security"] == [{"adminBearer": []}]
                assert "401" in op["responses"]


def test_every_ref_resolves_and_every_schema_is_one_the_validator_implements() -> None:
    doc = document()
    validator = Validator(doc["components"]["schemas"])  # checks every component
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    for target in refs:
        kind, _, name = target.removeprefix("#/components/").partition("/")
        assert name in doc["components"][kind], target
    for op in OPERATIONS:
        for param in op.params:
            validator.check_schema(param.schema)
        if op.body is not None:
            validator.check_schema(op.body)
        for response in op.responses.values():
            if response.schema is not None:
                validator.check_schema(response.schema)


def test_documented_limits_are_the_enforced_ones() -> None:
    """Spot checks that the published numbers are the brief's (the validator reads the same)."""
    c = schemas.COMPONENTS
    assert c["Tags"]["maxItems"] == 64 and c["Tag"]["maxLength"] == 128
    assert c["Text"]["x-maxUtf8Bytes"] == 64 * 1024
    assert c["Metadata"]["x-maxJsonBytes"] == 16 * 1024
    assert c["NamespaceDefinition"]["properties"]["dim"]["maximum"] == 4096
    assert c["BatchRequest"]["properties"]["memories"]["maxItems"] == 1000
    assert c["SearchRequest"]["properties"]["k"] == {
        "type": "integer", "minimum": 1, "maximum": 1000, "default": 10}
    assert c["NamespaceName"]["maxLength"] == 64 and c["MemoryId"]["maxLength"] == 128


async def test_answers_fit_the_documented_response_schemas(fake: FakeMemoryService) -> None:
    """Responses from the fake (built to the node's semantics) validate against the document."""
    await seeded(fake)
    validator = Validator(schemas.COMPONENTS)
    by_route = {(op.method, op.path): op for op in OPERATIONS}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/v1/namespaces", {}),
        ("PUT", "/v1/namespaces/new", {"json": {"dim": 3, "metric": "l2"}}),
        ("PUT", "/v1/namespaces/new", {"json": {"dim": 3, "metric": "l2"}}),
        ("PUT", "/v1/namespaces/new", {"json": {"dim": 4, "metric": "l2"}}),
        ("GET", "/v1/namespaces/ns1", {}),
        ("GET", "/v1/namespaces/zz", {}),
        ("POST", "/v1/namespaces/ns1/memories", {"json": item(ttl_s=5, tags=["q"])}),
        ("POST", "/v1/namespaces/ns1/memories/batch",
         {"json": {"memories": [item(id="b1"), item(id="a")]}}),
        ("GET", "/v1/namespaces/ns1/memories", {"params": {"limit": "1"}}),
        ("GET", "/v1/namespaces/ns1/memories/a", {"params": {"include_embedding": "true"}}),
        ("PATCH", "/v1/namespaces/ns1/memories/a", {"json": {"text": "t", "if_version": 9}}),
        ("PATCH", "/v1/namespaces/ns1/memories/a", {"json": {"text": "t"}}),
        ("DELETE", "/v1/namespaces/ns1/memories/b", {}),
        ("POST", "/v1/namespaces/ns1/search", {"json": {"embedding": [1, 1, 0]}}),
        ("POST", "/v1/namespaces/ns1/search", {"json": {"embedding": [1], "k": 2}}),
        ("GET", "/admin/cluster", {}),
        ("GET", "/admin/ranges", {}),
        ("POST", "/admin/rebalance", {"params": {"dry_run": "true"}}),
        ("POST", "/admin/rebalance", {}),
        ("GET", "/admin/operators", {}),
    ]
    async with serve(fake) as client:
        for method, path, kwargs in requests:
            status, body = await send(client, method, path, **kwargs)
            template = re.sub(r"/namespaces/[^/]+", "/namespaces/{ns}", path)
            template = re.sub(r"/memories/(?!batch)[^/]+", "/memories/{id}", template)
            op = by_route[(method, template)]
            if status in op.responses:
                schema = op.responses[status].schema
                assert schema is not None
            else:
                assert status >= 400, (method, path, status)
                schema = {"$ref": f"{REF_PREFIX}Error"}
            validator.validate(schema, body)
