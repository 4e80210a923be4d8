"""The API's two middlewares: the one error seam, and the access log.

``errors`` is the only place where exceptions become HTTP responses:

* :class:`raftmem.errors.RaftmemError` → its status and ``to_body()``;
* aiohttp's ``HTTPException`` (no such route 404, 405, 413 …) → the same body
  shape, ``definite: true`` (the request was refused before doing anything);
* anything else → 500 ``internal``, ``definite: false``, logged with its
  traceback; the server keeps serving.

``access_log`` is outermost, so it records the status the client received.
Which requests it records is a node option (``ACCESS_LOG_MODES``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from raftmem import session
from raftmem.errors import RaftmemError
from raftmem.types import RESPONSE_META

log = structlog.get_logger("raftmem.api")

JSON = "application/json"
ERROR_CODE_KEY = web.RequestKey("raftmem_error_code", str)

_CODES_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    417: "expectation_failed",
}


def json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
        content_type=JSON,
        headers=headers,
    )


def error_body(code: str, message: str, definite: bool, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "definite": definite, **details}}


def error_response(
    request: web.BaseRequest,
    status: int,
    body: dict[str, Any],
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    request[ERROR_CODE_KEY] = body["error"]["code"]
    response = json_response(status, body, headers)
    if status == 413:
        # The rest of the body is still on the wire: aiohttp drains it (bounded by
        # its lingering time) without buffering, then closes the connection.
        response.force_close()
    return response


def http_error(exc: web.HTTPException) -> tuple[dict[str, Any], dict[str, str]]:
    """An aiohttp HTTPException's status as our error body, keeping the Allow header."""
    code = _CODES_BY_STATUS.get(exc.status, f"http_{exc.status}")
    message = exc.reason
    if exc.status == 404:
        message = "no such route"
    elif exc.status == 405:
        message = f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
    return error_body(code, message, True), headers


def meta_headers(meta: dict[str, Any]) -> dict[str, str]:
    """Response headers from what the node recorded while serving the request."""
    out: dict[str, str] = {}
    if meta.get("session"):
        out["Raftmem-Session"] = session.encode(meta["session"])
    if meta.get("tier"):
        out["Raftmem-Consistency"] = meta["tier"]
    if meta.get("replica"):
        out["Raftmem-Replica"] = meta["replica"]
        out["Raftmem-Applied-Index"] = orjson.dumps(meta.get("applied_index", {})).decode()
        out["Raftmem-Staleness-Ms"] = str(meta.get("staleness_ms", 0))
        out["Raftmem-Lag"] = str(meta.get("lag", 0))
    return out


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RaftmemError as exc:
        if exc.status >= 500:
            log.warning("request_failed", code=exc.code, message=exc.message,
                        definite=exc.definite, path=request.path, exc_info=exc.code == "internal")
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        # What the node learnt while serving (e.g. which replica answered an
        # eventual read that found nothing) is worth saying on errors too.
        headers.update(meta_headers(RESPONSE_META.get() or {}))
        try:
            return error_response(request, exc.status, exc.to_body(), headers)
        except TypeError:  # a detail orjson cannot encode: keep the error, drop the details
            log.exception("error_details_unserialisable", code=exc.code)
            body = error_body(exc.code, exc.message, exc.definite)
            return error_response(request, exc.status, body, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body, headers = http_error(exc)
        return error_response(request, exc.status, body, headers)
    except ConnectionError:
        if request.transport is None or request.transport.is_closing():
            raise  # the client went away mid-request; aiohttp drops the connection
        return _internal(request)
    except Exception:  # noqa: BLE001 - the seam's purpose: any bug becomes a logged 500
        return _internal(request)


def _internal(request: web.Request) -> web.Response:
    error_id = uuid.uuid4().hex[:16]
    log.exception("unhandled_error", error_id=error_id, method=request.method,
                  path=request.path)
    body = error_body("internal", f"internal error (logged as {error_id})", False,
                      error_id=error_id)
    return error_response(request, 500, body)


# What the access log records (``raftmem node --access-log``):
#   all     one ``http_request`` event (info) per request;
#   errors  only requests answered 5xx, dropped before an answer, or slower than
#           SLOW_REQUEST_MS (warning): the default, since an event per request
#           cost a node about a tenth of its read throughput (docs/benchmarks.md);
#   off     none.
ACCESS_LOG_MODES = ("all", "errors", "off")
SLOW_REQUEST_MS = 1000.0


def access_log(mode: str = "all", slow_ms: float = SLOW_REQUEST_MS) -> Any:
    """The access-log middleware for ``mode`` (see ACCESS_LOG_MODES); None for ``off``."""
    if mode not in ACCESS_LOG_MODES:
        raise ValueError(f"access log {mode!r}: expected one of {', '.join(ACCESS_LOG_MODES)}")
    if mode == "off":
        return None
    every = mode == "all"

    @web.middleware
    async def logged(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status: int | str = "disconnected"
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            ms = (time.perf_counter() - started) * 1000
            notable = not isinstance(status, int) or status >= 500 or ms >= slow_ms
            if every or notable:
                route = request.match_info.route.resource
                (log.warning if notable else log.info)(
                    "http_request",
                    method=request.method,
                    path=request.path,
                    route=route.canonical if route is not None else None,
                    status=status,
                    error_code=request.get(ERROR_CODE_KEY),
                    duration_ms=round(ms, 3),
                    remote=request.remote,
                )

    return logged
