"""The HTTP client of the memory API, and the one place where outcomes are classified.

Every request ends as a `Reply`; nothing here raises except cancellation.
`outcome` then sorts a reply into Jepsen's three completions, once, for every
workload:

    2xx                                   ok
    error body with "definite": true      fail   (rejected before it could apply)
    4xx without a body                    fail   (the HTTP layer refused it)
    error body with "definite": false     info   (e.g. 504 commit timeout)
    5xx without a body                    info
    connection refused (never connected)  fail   (the server never saw the request)
    timeout, reset, dropped mid-request   info   (it may have been applied)

A read changes nothing, so a read that does not end ok is always `fail`
(history-format.md); the callers decide that, not this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
import orjson


@dataclass(frozen=True, slots=True)
class Reply:
    status: int | None  # None: no HTTP response at all
    body: Any = None
    error: str | None = None  # transport problem, when status is None
    connected: bool = True  # False: the connection was refused, the request never left
    headers: Mapping[str, str] = field(default_factory=dict)  # response headers, case-insensitive

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def code(self) -> str | None:
        """The API's error code, or a transport description."""
        if self.status is None:
            return self.error
        err = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(err, dict):
            return str(err.get("code"))
        return None if self.ok else f"http_{self.status}"

    def describe(self) -> str:
        if self.status is None:
            return f"{self.error}"
        return f"{self.status} {self.code}"


def outcome(reply: Reply) -> str:
    """ok, fail or info for a reply to a request that may change state."""
    if reply.ok:
        return "ok"
    if reply.status is None:
        return "fail" if not reply.connected else "info"
    err = reply.body.get("error") if isinstance(reply.body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("definite"), bool):
        return "fail" if err["definite"] else "info"
    return "fail" if 400 <= reply.status < 500 else "info"


class Api:
    """One aiohttp session for all nodes; requests leave from 127.0.0.1.

    Binding the client side to 127.0.0.1 keeps client traffic out of the
    partition rules, which only match node-to-node address pairs.
    """

    def __init__(self, timeout_s: float, limit: int = 256) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._limit = limit

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            local_addr=("127.0.0.1", 0),
            force_close=False,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        assert self._session is not None, "use Api inside 'async with'"
        kwargs: dict[str, Any] = {}
        sent = dict(headers or {})
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            sent["Content-Type"] = "application/json"
        if sent:
            kwargs["headers"] = sent
        if params:
            kwargs["params"] = params
        if timeout_s is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._session.request(method, url, **kwargs) as resp:
                raw = await resp.read()
                try:
                    parsed = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    parsed = None
                return Reply(resp.status, parsed, headers=resp.headers)
        except aiohttp.ClientConnectorError as exc:
            # Refused or unreachable before any byte of the request was sent.
            return Reply(None, error=f"connect: {exc.os_error or exc}", connected=False)
        except TimeoutError:
            return Reply(None, error="timeout")
        except aiohttp.ServerDisconnectedError:
            return Reply(None, error="server disconnected")
        except (aiohttp.ClientError, OSError) as exc:
            return Reply(None, error=f"{type(exc).__name__}: {exc}")
