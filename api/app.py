"""The aiohttp application: route table → handlers, behind one error middleware.

Each request goes through :func:`_dispatch` for its :class:`~api.operation.Operation`:

    admin token (401) → declared body size (413) → path, query, header parameters
    → body (read up to the limit, parsed, validated) → handler → JSON reply

so nothing reaches the service before all of its input has passed the schemas
that ``/openapi.json`` publishes.

The node-to-node operations (``routes.INTERNAL_OPERATIONS``) go through
:func:`_internal_call` instead:

    internal credential (403) → declared body size (413) → path, query parameters
    → body (read up to the limit, raw bytes) → handler → JSON reply
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDictProxy, MultiMapping

from api import middleware, schemas
from api.auth import check_admin
from api.handlers import SESSION_HEADER
from api.logging import configure_logging
from api.operation import Call, Operation, Param
from api.routes import INTERNAL_OPERATIONS, OPERATIONS
from api.validation import Validator, coerce_parameter, invalid, join, listing, parse_json
from raftmem.errors import PayloadTooLarge, RaftmemError
from raftmem.types import RESPONSE_META, MemoryService

Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Forbidden(RaftmemError):
    """403: an internal (node-to-node) route without the cluster's internal credential.

    Definite: nothing was done. Like ``api.auth.Unauthorized``, defined in the HTTP
    layer, which is the only one that authenticates.
    """

    status = 403
    code = "forbidden"
    definite = True


@dataclass(frozen=True)
class _Config:
    service: MemoryService
    validator: Validator
    max_body_bytes: int
    admin_token: str | None


def create_app(
    service: MemoryService,
    *,
    max_body_bytes: int = 8 * 1024 * 1024,
    admin_token: str | None = None,
    json_logs: bool = False,
    access_log: str = "errors",
) -> web.Application:
    """The REST API over ``service``. Configures structlog (see :mod:`api.logging`).
    ``access_log``: which requests are logged (``middleware.ACCESS_LOG_MODES``)."""
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    configure_logging(json=json_logs)
    config = _Config(service, Validator(schemas.COMPONENTS), max_body_bytes, admin_token)
    logged = middleware.access_log(access_log)
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[*([logged] if logged is not None else []), middleware.errors],
    )
    expect = _expect_handler(config)
    for op in OPERATIONS:
        for param in op.params:
            config.validator.check_schema(param.schema, f"{op.operation_id}.{param.name}")
        if op.body is not None:
            config.validator.check_schema(op.body, f"{op.operation_id}.body")
        app.router.add_route(
            op.method,
            op.path,
            _endpoint(op, config),
            name=op.operation_id,
            expect_handler=expect,
        )
    for op in INTERNAL_OPERATIONS:
        for param in op.params:
            config.validator.check_schema(param.schema, f"{op.operation_id}.{param.name}")
        app.router.add_route(
            op.method, op.path, _internal_endpoint(op, config), name=op.operation_id,
            expect_handler=expect,
        )
    return app


def _endpoint(op: Operation, config: _Config) -> Endpoint:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        meta: dict[str, Any] = {"session_in": request.headers.get(SESSION_HEADER)}
        RESPONSE_META.set(meta)
        reply = await op.handler(await _call(op, config, request))
        return middleware.json_response(
            reply.status, reply.body, {**reply.headers, **middleware.meta_headers(meta)}
        )

    endpoint.__name__ = op.operation_id
    return endpoint


def _internal_endpoint(op: Operation, config: _Config) -> Endpoint:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        # A fresh record: the forwarding node keeps the client's response metadata.
        RESPONSE_META.set({})
        reply = await op.handler(await _internal_call(op, config, request))
        return middleware.json_response(reply.status, reply.body, reply.headers)

    endpoint.__name__ = op.operation_id
    return endpoint


async def _internal_call(op: Operation, config: _Config, request: web.Request) -> Call:
    check = getattr(config.service, "check_internal", None)
    if check is None or not check(request.headers):
        raise Forbidden(
            f"{request.path} is an internal route, for raftmem nodes only: "
            "missing or wrong internal credential"
        )
    _check_declared_size(request, config.max_body_bytes)
    path = _path_params(op.params_in("path"), request.match_info, config.validator)
    query = _query_params(op.params_in("query"), request.query, config.validator)
    raw = await _read_body(request, True, config.max_body_bytes)
    return Call(config.service, path, query, {}, raw)


async def _call(op: Operation, config: _Config, request: web.Request) -> Call:
    if op.admin and config.admin_token is not None:
        check_admin(request, config.admin_token)
    if op.body is not None:
        _check_declared_size(request, config.max_body_bytes)
    path = _path_params(op.params_in("path"), request.match_info, config.validator)
    query = _query_params(op.params_in("query"), request.query, config.validator)
    headers = _header_params(op.params_in("header"), request.headers, config.validator)
    body = None
    if op.body is not None:
        raw = await _read_body(request, op.body_required, config.max_body_bytes)
        if raw is not None:
            body = config.validator.validate(op.body, parse_json(raw))
    return Call(config.service, path, query, headers, body)


def _check_declared_size(request: web.BaseRequest, limit: int) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"request body of {request.content_length} bytes exceeds the limit of {limit}",
            limit=limit,
        )


async def _read_body(request: web.Request, required: bool, limit: int) -> bytes | None:
    """The body, read up to ``limit`` bytes (aiohttp's ``client_max_size``), chunked or not.

    ``None`` when an optional body is absent or blank.
    """
    raw = b""
    if request.body_exists:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes", limit=limit
            ) from None
    if raw.strip():
        return raw
    if required:
        raise invalid("", "a JSON request body is required")
    return None


def _path_params(
    params: tuple[Param, ...], match_info: Mapping[str, str], validator: Validator
) -> dict[str, Any]:
    return {p.name: coerce_parameter(p.schema, match_info[p.name], p.name, validator)
            for p in params}


def _query_params(
    params: tuple[Param, ...], query: MultiMapping[str], validator: Validator
) -> dict[str, Any]:
    declared = {p.name: p for p in params}
    unknown = sorted({key for key in query if key not in declared})
    if unknown:
        noun = "parameter" if len(unknown) == 1 else "parameters"
        raise invalid(join("", unknown[0]), f"unknown query {noun}: {listing(unknown)}")
    values: dict[str, Any] = {}
    for name, param in declared.items():
        given = query.getall(name, [])
        if len(given) > 1:
            raise invalid(name, "given more than once")
        if given:
            values[name] = coerce_parameter(param.schema, given[0], name, validator)
        elif param.required:
            raise invalid(name, "is required")
        elif "default" in param.schema:
            values[name] = param.schema["default"]
        elif "default" in (resolved := validator.resolve(param.schema)):
            values[name] = resolved["default"]
    return values


def _header_params(
    params: tuple[Param, ...], headers: CIMultiDictProxy[str], validator: Validator
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for param in params:
        given = headers.getall(param.name, [])
        if len(given) > 1:
            raise invalid(param.name, "given more than once")
        if given:
            values[param.name] = coerce_parameter(param.schema, given[0], param.name, validator)
    return values


def _expect_handler(config: _Config) -> Callable[[web.Request], Awaitable[web.Response | None]]:
    """``Expect: 100-continue``: refuse an oversized body before the client sends it.

    aiohttp calls this before the middlewares, so it builds its JSON replies itself.
    """

    async def expect(request: web.Request) -> web.Response | None:
        expectation = request.headers.get(hdrs.EXPECT, "").lower()
        if expectation != "100-continue":
            body = middleware.error_body(
                "expectation_failed", f"unsupported Expect: {expectation[:64]}", True
            )
            return middleware.error_response(request, 417, body)
        length = request.content_length
        if length is not None and length > config.max_body_bytes:
            error = PayloadTooLarge(
                f"request body of {length} bytes exceeds the limit of {config.max_body_bytes}",
                limit=config.max_body_bytes,
            )
            return middleware.error_response(request, error.status, error.to_body())
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    return expect
