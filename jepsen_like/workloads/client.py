"""The register client: read / write / cas of one key, through the memory API.

A key is a memory id in one namespace; its value is the integer in the
memory's ``text`` (``"null"`` or an absent memory is the value None). Each
operation takes effect at one instant at most, which is what lets the checker
treat it as one register operation:

* read    GET → the value (404 memory-not-found → None).
* write v PATCH text=v. If the memory does not exist yet (kv keys start absent)
          the PATCH is a definite 404 with no effect, and we create it with
          POST text=v instead; if that POST finds it created meanwhile (409)
          we PATCH once more. Only one of these steps can have an effect.
* cas a b GET (value, version). value != a → fail: nothing was written. Else a
          write that is conditional on that exact version (PATCH if_version),
          or on absence (POST: create-only), so it applies only if nothing
          changed since the GET; 409 → fail.

How a reply becomes ok / fail / info is decided in `api.outcome`.

Consistency tiers (docs/jepsen.md): reads carry ``?consistency=TIER``. A
client of the ``session`` tier shares one `Session` with the other clients of
its logical client (one per node it talks to): every request carries the
session's latest ``Raftmem-Session`` token, and every response that has one
replaces it. A read of the ``eventual`` tier records who served it and how
stale it was (``Raftmem-Replica``, ``Raftmem-Applied-Index``,
``Raftmem-Staleness-Ms``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from jepsen_like.harness.api import Api, Reply, outcome

SESSION_HEADER = "Raftmem-Session"
REPLICA_HEADER = "Raftmem-Replica"
APPLIED_INDEX_HEADER = "Raftmem-Applied-Index"
STALENESS_HEADER = "Raftmem-Staleness-Ms"

EMBEDDING = [0.25, 0.5, 0.75, 1.0]
NAMESPACE = "jepsen"
DIM = len(EMBEDDING)


@dataclass
class Session:
    """The token of one logical client in the session tier: opaque, latest response wins."""

    token: str | None = None
    updates: int = 0  # responses that carried a token

    def headers(self) -> dict[str, str]:
        return {SESSION_HEADER: self.token} if self.token else {}

    def observe(self, reply: Reply) -> None:
        token = reply.header(SESSION_HEADER)
        if token:
            self.token = token
            self.updates += 1


@dataclass(frozen=True, slots=True)
class Completion:
    type: str  # ok, fail, info
    value: Any = None  # read: the value read; write/cas: the invoked value
    error: str | None = None
    version: int | None = None
    meta: dict[str, Any] | None = None  # what an eventual read's headers said

    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.error is not None:
            out["error"] = self.error
        if self.version is not None:
            out["version"] = self.version
        if self.meta:
            out.update(self.meta)
        return out


def _int_or_json(text: str | None) -> Any:
    """A header value as an int if it is one, else as JSON, else as the text."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def read_meta(reply: Reply) -> dict[str, Any]:
    """What a read reply says about who served it and how stale it was (empty if nothing)."""
    out: dict[str, Any] = {}
    replica = reply.header(REPLICA_HEADER)
    if replica is not None:
        out["replica"] = replica
    applied = reply.header(APPLIED_INDEX_HEADER)
    if applied is not None:
        out["applied_index"] = _int_or_json(applied)
    staleness = _int_or_json(reply.header(STALENESS_HEADER))
    if isinstance(staleness, int):
        out["staleness_ms"] = staleness
    return out


def decode(text: Any) -> Any:
    """A memory's text as a register value."""
    if text is None or text == "null":
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        return text  # not ours; the checker will flag it if it matters


def encode(value: Any) -> str:
    return "null" if value is None else str(value)


def _missing_memory(reply: Reply) -> bool:
    """404 for the memory itself (not for the namespace or the route)."""
    return reply.status == 404 and reply.code not in ("namespace_not_found", "http_404")


class RegisterClient:
    def __init__(
        self,
        api: Api,
        base_url: str,
        run_id: str,
        namespace: str = NAMESPACE,
        consistency: str | None = None,
        session: Session | None = None,
        max_staleness_ms: int | None = None,
    ) -> None:
        self.api = api
        self.base = base_url.rstrip("/")
        self.ns = namespace
        self.consistency = consistency
        self.params: dict[str, str] | None = {"consistency": consistency} if consistency else None
        if self.params is not None and consistency == "eventual" and max_staleness_ms is not None:
            self.params["max_staleness_ms"] = str(max_staleness_ms)
        self.session = session
        self._rid = itertools.count()
        self._run_id = run_id

    async def _request(
        self,
        method: str,
        url: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """One request; in the session tier with the session's token, and its reply's kept."""
        headers = self.session.headers() if self.session is not None else None
        reply = await self.api.request(method, url, body, params=params, headers=headers)
        if self.session is not None:
            self.session.observe(reply)
        return reply

    def _url(self, key: str | None = None) -> str:
        root = f"{self.base}/v1/namespaces/{quote(self.ns, safe='')}/memories"
        return root if key is None else f"{root}/{quote(key, safe='')}"

    def _request_id(self) -> str:
        return f"{self._run_id}-{next(self._rid)}"

    async def _get(self, key: str, params: dict[str, str] | None) -> tuple[Reply, Any, int | None]:
        reply = await self._request("GET", self._url(key), params=params)
        if reply.ok and isinstance(reply.body, dict):
            return reply, decode(reply.body.get("text")), reply.body.get("version")
        return reply, None, None

    async def read(self, key: str, linearizable: bool = False) -> Completion:
        """A read with the client's tier (`linearizable`: with the server's default instead)."""
        reply, value, version = await self._get(key, None if linearizable else self.params)
        meta = read_meta(reply) if self.consistency == "eventual" and not linearizable else None
        if reply.ok:
            return Completion("ok", value, version=version, meta=meta)
        if _missing_memory(reply):
            return Completion("ok", None, meta=meta)
        # A read changes nothing: whatever went wrong, it is a fail.
        return Completion("fail", None, reply.describe(), meta=meta)

    async def _create(self, key: str, value: Any) -> Reply:
        body = {
            "id": key,
            "agent_id": "jepsen",
            "text": encode(value),
            "embedding": EMBEDDING,
            "request_id": self._request_id(),
        }
        return await self._request("POST", self._url(), body)

    async def _patch(self, key: str, value: Any, if_version: int | None = None) -> Reply:
        body: dict[str, Any] = {"text": encode(value), "request_id": self._request_id()}
        if if_version is not None:
            body["if_version"] = if_version
        return await self._request("PATCH", self._url(key), body)

    @staticmethod
    def _written(reply: Reply, value: Any) -> Completion:
        kind = outcome(reply)
        version = reply.body.get("version") if reply.ok and isinstance(reply.body, dict) else None
        return Completion(kind, value, None if kind == "ok" else reply.describe(), version)

    async def write(self, key: str, value: Any) -> Completion:
        reply = await self._patch(key, value)
        if _missing_memory(reply):
            reply = await self._create(key, value)
            if reply.status == 409:
                reply = await self._patch(key, value)
        return self._written(reply, value)

    async def cas(self, key: str, expected: Any, new: Any) -> Completion:
        pair = [expected, new]
        # The compare reads with the default (linearizable) tier: the version
        # condition below keeps the cas atomic whatever the read saw, and a
        # fresh read makes the cas succeed more often.
        reply, current, version = await self._get(key, None)
        if not reply.ok and not _missing_memory(reply):
            return Completion("fail", pair, f"compare: {reply.describe()}")
        if current != expected:
            return Completion("fail", pair, f"compare: value is {current!r}")
        if version is None:
            reply = await self._create(key, new)  # create-only: the cas of an absent key
        else:
            reply = await self._patch(key, new, if_version=version)
        return self._written(reply, pair)

    async def setup_key(self, key: str, value: Any) -> Reply:
        """Create `key` with `value` unless it exists (setup, not recorded)."""
        reply = await self._create(key, value)
        if reply.status == 409:
            return Reply(200, reply.body)
        return reply
